"""Clustering from a seed map: instance centres where the seed head is surest, on device.

The seed head (config.model.seed_head, losses.seed_loss) scores each pixel by how near its
embedding lies to its instance's centre. Mean shift finds centres from the density of the
embeddings alone, and where a small instance's pixels spread towards a large neighbour the two
share one mode. Here the centres come from the image instead: the foreground pixel of highest seed
starts an instance, its centre the mean of the foreground embeddings within half the bandwidth of
its own; every pixel within the bandwidth of that centre stops being a candidate; the next highest
seed starts the next instance, until no candidate reaches `seed_threshold`. Every foreground pixel
then takes its nearest centre.
"""

import functools

import jax
import jax.numpy as jnp

from instseg_jax.cluster import meanshift


def _centres(
    flat: jax.Array,
    fg: jax.Array,
    seed: jax.Array,
    bandwidth: jax.Array,
    seed_threshold: jax.Array,
    max_instances: int,
) -> tuple[jax.Array, jax.Array]:
  """(centres (K, D), count ()) of one image's pixels (N, D), foreground (N,) and seeds (N,)."""
  dim = flat.shape[-1]
  sq_norms = jnp.sum(jnp.square(flat), axis=-1)

  def sq_dists_to(point):
    return jnp.maximum(sq_norms - 2.0 * flat @ point + jnp.sum(jnp.square(point)), 0.0)

  def cond(state):
    count, candidate, _ = state
    best = jnp.max(jnp.where(candidate, seed, -jnp.inf))
    return (count < max_instances) & (best >= seed_threshold)

  def body(state):
    count, candidate, centres = state
    start = flat[jnp.argmax(jnp.where(candidate, seed, -jnp.inf))]
    near = fg & (sq_dists_to(start) <= jnp.square(bandwidth / 2.0))
    weight = near.astype(flat.dtype)
    centre = (weight @ flat) / jnp.maximum(jnp.sum(weight), 1.0)
    # The start pixel itself is always near; the guard is for an empty foreground only.
    centre = jnp.where(jnp.any(near), centre, start)
    candidate = candidate & (sq_dists_to(centre) > jnp.square(bandwidth))
    candidate = candidate & (sq_dists_to(start) > jnp.square(bandwidth))
    return count + 1, candidate, centres.at[count].set(centre)

  init = (jnp.int32(0), fg, jnp.zeros((max_instances, dim), flat.dtype))
  count, _, centres = jax.lax.while_loop(cond, body, init)
  return centres, count


def _seed_clustering_single(
    embeddings, mask, seed, bandwidth, seed_threshold, max_instances, chunk
):
  height, width, dim = embeddings.shape
  flat = embeddings.reshape(-1, dim).astype(jnp.float32)
  fg = mask.reshape(-1).astype(bool)
  centres, count = _centres(
      flat, fg, seed.reshape(-1).astype(jnp.float32), bandwidth, seed_threshold, max_instances
  )
  packed = meanshift._pack_foreground(flat, fg, chunk)
  labels = meanshift._assign_nearest(packed, centres, count)
  labels = meanshift._unpack_labels(packed, labels, flat.shape[0])
  # A centre can lose every pixel, its start included, to a nearer one.
  return meanshift._consecutive(labels, max_instances).reshape(height, width)


@functools.partial(jax.jit, static_argnames=("max_instances", "chunk"))
def seed_clustering(
    embeddings: jax.Array,
    mask: jax.Array,
    *,
    seed: jax.Array,
    bandwidth: float | jax.Array = 1.0,
    seed_threshold: float | jax.Array = 0.5,
    max_instances: int = 128,
    chunk: int = 2048,
) -> jax.Array:
  """Instances from the seed map's peaks (see the module docstring), on device.

  Args:
    embeddings: (H, W, D) or (B, H, W, D) float pixel embeddings.
    mask: (H, W) or (B, H, W) bool foreground; only these pixels are clustered.
    seed: (H, W) or (B, H, W) float seed scores in [0, 1] (the seed head's sigmoid).
    bandwidth: radius in embedding space that one centre claims from the candidates; as for
      mean shift, 1.0 = 2 * the loss's pull margin.
    seed_threshold: the lowest seed score that starts an instance.
    max_instances: most instances returned per image (static).
    chunk: foreground pixels labelled per step of the final assignment (static).

  Returns:
    (H, W) or (B, H, W) int32 labels: 0 outside the mask, instances 1..K in the order their seeds
    were taken (highest first).
  """
  fn = functools.partial(_seed_clustering_single, max_instances=max_instances, chunk=chunk)
  bandwidth = jnp.asarray(bandwidth, jnp.float32)
  seed_threshold = jnp.asarray(seed_threshold, jnp.float32)
  if embeddings.ndim == 3:
    return fn(embeddings, mask, seed, bandwidth, seed_threshold)
  return jax.vmap(fn, (0, 0, 0, None, None))(embeddings, mask, seed, bandwidth, seed_threshold)
