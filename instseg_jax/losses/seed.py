"""Seed loss: each pixel learns how near its embedding lies to its instance's centre.

The seed head of SpatialEmbeddings (Neven et al., 2019) in the discriminative loss's embedding
space. An instance pixel's target is exp(-d^2 / (2 sigma^2)), d the distance of its embedding from
its instance's mean embedding; background pixels have target 0. Both the embeddings and the means
are constants here (stop_gradient): the seed map reads the embedding space, it does not shape it.
At prediction the pixel of the highest seed is an instance's centre (cluster method "seeds"),
which finds a small instance whose embeddings mean shift merges into a large neighbour's mode.
"""

import jax
import jax.numpy as jnp

from instseg_jax.losses import _slots


def seed_targets(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    sigma: float,
    max_instances: int,
    ignore_label: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """(targets, valid) (B, H, W): each pixel's seed target and whether it takes part.

  Args:
    embeddings: (B, H, W, D) pixel embeddings (no gradient flows into them).
    labels: (B, H, W) int instance ids, 0 = background.
    sigma: the distance from its mean at which a pixel's target is exp(-1/2).
    max_instances: slots per image; surplus instances (largest ids) are left out, as in the
      discriminative loss.
    ignore_label: pixels with this label are left out.
  """
  batch, height, width, dim = embeddings.shape
  x = jax.lax.stop_gradient(embeddings).reshape(batch, -1, dim).astype(jnp.float32)
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
  member = (slots.reshape(-1) > 0) & (slots.reshape(-1) <= max_instances)
  targets = jnp.where(member, jnp.exp(-d2 / (2.0 * sigma**2)), 0.0)
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
) -> jax.Array:
  """Binary cross-entropy of sigmoid(seed_logits) against `seed_targets`, over the valid pixels.

  Cross-entropy, not the squared error of SpatialEmbeddings: its gradient in the logit is
  sigmoid - target, which does not fade where the sigmoid saturates.

  Returns:
    Scalar float32, the mean; 0 when no pixel is valid. Its minimum is the entropy of the
    targets, not 0.
  """
  targets, valid = seed_targets(
      embeddings, labels, sigma=sigma, max_instances=max_instances, ignore_label=ignore_label
  )
  logits = seed_logits.astype(jnp.float32)
  error = jax.nn.softplus(logits) - targets * logits
  weight = valid.astype(jnp.float32)
  return jnp.sum(error * weight) / jnp.maximum(jnp.sum(weight), 1.0)
