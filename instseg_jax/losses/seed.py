"""Seed loss: each pixel learns how near it lies to its instance's centre.

The seed head of SpatialEmbeddings (Neven et al., 2019). An instance pixel's target is
exp(-d^2 / (2 sigma^2)); background pixels have target 0. Two centres (SEED_TARGETS):

* "embedding": d is the distance of the pixel's embedding from its instance's mean embedding,
  sigma in embedding units. The map reads the embedding space; it does not shape it (the
  embeddings are constants here, stop_gradient).
* "centroid": d is the pixel's distance in the image from its instance's centroid, over the
  instance's radius sqrt(area / pi), so every instance, small or large, tight or spread in
  embedding space, peaks at 1 in its middle; sigma is a fraction of that radius.

At prediction the pixel of the highest seed is an instance's centre (cluster method "seeds"),
which finds a small instance whose embeddings mean shift merges into a large neighbour's mode.
"""

import jax
import jax.numpy as jnp

from instseg_jax.losses import _slots

SEED_TARGETS = ("embedding", "centroid")


def _pixel_coordinates(batch: int, height: int, width: int) -> jax.Array:
  """(B, H * W, 2) float32 (row, column) of every pixel."""
  rows, cols = jnp.meshgrid(
      jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
  )
  return jnp.broadcast_to(jnp.stack([rows, cols], -1).reshape(1, -1, 2), (batch, height * width, 2))


def seed_targets(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    sigma: float,
    max_instances: int,
    ignore_label: int | None = None,
    target: str = "embedding",
) -> tuple[jax.Array, jax.Array]:
  """(targets, valid) (B, H, W): each pixel's seed target and whether it takes part.

  Args:
    embeddings: (B, H, W, D) pixel embeddings (no gradient flows into them).
    labels: (B, H, W) int instance ids, 0 = background.
    sigma: where a pixel's target is exp(-1/2): the embedding distance from its instance's mean
      ("embedding"), or the image distance from its centroid as a fraction of the instance's
      radius ("centroid").
    max_instances: slots per image; surplus instances (largest ids) are left out, as in the
      discriminative loss.
    ignore_label: pixels with this label are left out.
    target: a SEED_TARGETS entry, the centre a pixel's nearness is measured to.
  """
  if target not in SEED_TARGETS:
    raise ValueError(f"seed target {target!r} is not one of {SEED_TARGETS}")
  batch, height, width, dim = embeddings.shape
  if target == "embedding":
    x = jax.lax.stop_gradient(embeddings).reshape(batch, -1, dim).astype(jnp.float32)
  else:
    x = _pixel_coordinates(batch, height, width)
    dim = 2
  ids = labels.reshape(batch, -1).astype(jnp.int32)
  spec = _slots.SlotSpec(
      max_instances=int(max_instances),
      max_label_id=None,
      ignore_label=ignore_label,
      background_as_instance=False,
      num_classes=None,
  )
  slots, _ = _slots.assign_slots(ids, None, spec)
  num_slots = int(max_instances) + 2  # background slot 0, instances, the excluded pixels
  flat = _slots.global_slots(slots, num_slots).reshape(-1)
  sums = jax.ops.segment_sum(x.reshape(-1, dim), flat, batch * num_slots)
  counts = jax.ops.segment_sum(jnp.ones_like(flat, jnp.float32), flat, batch * num_slots)
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  d2 = jnp.sum(jnp.square(x.reshape(-1, dim) - means[flat]), axis=-1)
  scale2 = sigma**2
  if target == "centroid":
    scale2 = scale2 * jnp.maximum(counts[flat], 1.0) / jnp.pi  # sigma * radius, squared
  member = (slots.reshape(-1) > 0) & (slots.reshape(-1) <= max_instances)
  targets = jnp.where(member, jnp.exp(-d2 / (2.0 * scale2)), 0.0)
  background = ids.reshape(-1) == 0
  if ignore_label is not None:
    background &= ids.reshape(-1) != ignore_label
  valid = member | background
  shape = (batch, height, width)
  return targets.reshape(shape), valid.reshape(shape)


def seed_loss(
    seed_logits: jax.Array,
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    sigma: float,
    max_instances: int,
    ignore_label: int | None = None,
    target: str = "embedding",
) -> jax.Array:
  """Binary cross-entropy of sigmoid(seed_logits) against `seed_targets`, over the valid pixels.

  Cross-entropy, not the squared error of SpatialEmbeddings: its gradient in the logit is
  sigmoid - target, which does not fade where the sigmoid saturates.

  Returns:
    Scalar float32, the mean; 0 when no pixel is valid. Its minimum is the entropy of the
    targets, not 0.
  """
  targets, valid = seed_targets(
      embeddings,
      labels,
      sigma=sigma,
      max_instances=max_instances,
      ignore_label=ignore_label,
      target=target,
  )
  logits = seed_logits.astype(jnp.float32)
  error = jax.nn.softplus(logits) - targets * logits
  weight = valid.astype(jnp.float32)
  return jnp.sum(error * weight) / jnp.maximum(jnp.sum(weight), 1.0)
