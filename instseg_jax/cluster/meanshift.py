"""Mean-shift clustering of pixel embeddings in JAX: static shapes, jit, vmap.

Two variants:

* `mean_shift`: parallel seeds. Seeds are spread over the foreground embeddings by farthest-point
  sampling, shifted to their modes together with a Gaussian (or flat) kernel over a fixed subsample
  of the foreground embeddings, merged greedily by density, and every foreground pixel takes the
  nearest surviving mode.
* `fast_mean_shift`: the sequential scheme of De Brabandere et al. (2017): pick an unlabeled pixel,
  shift it to its mode, claim every unlabeled pixel within the bandwidth, repeat.

Bandwidth and the discriminative loss. After training, the pixels of one instance lie within
delta_v (0.5) of their mean and the means are at least 2 * delta_d (3.0) apart. The Gaussian kernel
of `mean_shift` with bandwidth h (its standard deviation) gives every instance its own mode as long
as h stays well below the distance between means; h = 2 * delta_v = 1.0 smooths away the spread
inside an instance while neighbouring means sit 3 h apart, which keeps the smaller instance's mode
even next to one many times larger. The flat kernel of `fast_mean_shift` claims pixels within h of
the mode: h = delta_d (1.5), half the distance between means, reaches the stragglers of an
instance without touching its neighbours.
"""

import functools

import jax
import jax.numpy as jnp

_KERNELS = ("gaussian", "flat")


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared Euclidean distances between rows, via matmul so XLA uses its GEMM.

  Args:
    a: (M, D) points.
    b: (K, D) points.

  Returns:
    (M, K) squared distances, clamped at 0 against rounding.
  """
  d2 = (
      jnp.sum(a * a, axis=-1)[:, None]
      - 2.0 * a @ b.T
      + jnp.sum(b * b, axis=-1)[None, :]
  )
  return jnp.maximum(d2, 0.0)


def _foreground_subsample(mask: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
  """Picks `num` foreground pixels spread evenly in raster order.

  With fewer foreground pixels than `num` each is taken once and the remaining slots are marked
  invalid, so the valid slots always form a prefix.

  Args:
    mask: (N,) bool foreground.
    num: number of picks (static).

  Returns:
    idx: (num,) int32 flat pixel indices.
    valid: (num,) bool, False for unused slots.
  """
  cum = jnp.cumsum(mask.astype(jnp.int32))
  count = cum[-1]
  step = jnp.maximum(count, num).astype(jnp.float32) / num
  rank = jnp.floor(jnp.arange(num, dtype=jnp.float32) * step).astype(jnp.int32)
  valid = rank < count
  # The pixel of foreground rank r is the first whose running count reaches r + 1.
  idx = jnp.searchsorted(cum, rank + 1, side="left")
  idx = jnp.minimum(idx, mask.shape[0] - 1).astype(jnp.int32)
  return idx, valid


def _farthest_point_seeds(points: jax.Array, valid: jax.Array, num_seeds: int) -> jax.Array:
  """Farthest-point sampling: every well-separated cluster gets a seed, however small.

  Strided or random seeds are spent in proportion to instance size and miss small instances;
  farthest-point sampling reaches each cluster before it spends seeds twice on any region whose
  points lie closer together than the clusters do.

  Args:
    points: (P, D) embeddings.
    valid: (P,) bool.
    num_seeds: number of seeds (static).

  Returns:
    (num_seeds,) int32 indices into `points`; repeats once the valid points are used up.
  """

  def body(i, carry):
    seeds, min_d2 = carry
    nxt = jnp.argmax(min_d2)
    seeds = seeds.at[i].set(nxt)
    d2 = jnp.sum(jnp.square(points - points[nxt]), axis=-1)
    return seeds, jnp.minimum(min_d2, d2)

  min_d2 = jnp.where(valid, jnp.inf, -jnp.inf)
  seeds = jnp.zeros((num_seeds,), jnp.int32)
  seeds, _ = jax.lax.fori_loop(0, num_seeds, body, (seeds, min_d2))
  return seeds


def _kernel_weights(
    x: jax.Array, points: jax.Array, valid: jax.Array, bandwidth: jax.Array, kernel: str
) -> jax.Array:
  """(S, P) kernel weights of `points` around each row of `x`; invalid points weigh 0."""
  d2 = _sq_dists(x, points)
  if kernel == "gaussian":
    w = jnp.exp(d2 * (-0.5 / jnp.square(bandwidth)))
  else:
    w = (d2 <= jnp.square(bandwidth)).astype(x.dtype)
  return w * valid[None, :].astype(x.dtype)


def _shift_to_modes(
    seeds: jax.Array,
    points: jax.Array,
    valid: jax.Array,
    *,
    bandwidth: jax.Array,
    kernel: str,
    max_iters: int,
    tol: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Mean-shift iterations for all seeds at once.

  Args:
    seeds: (S, D) start points.
    points: (P, D) embeddings that form the density.
    valid: (P,) bool.
    bandwidth: kernel scale.
    kernel: "gaussian" or "flat".
    max_iters: iteration cap (static).
    tol: stop once no seed moves farther than this.

  Returns:
    modes: (S, D) converged positions.
    density: (S,) kernel weight sum at each mode, in points.
  """

  def step(x):
    w = _kernel_weights(x, points, valid, bandwidth, kernel)
    total = jnp.sum(w, axis=-1, keepdims=True)
    new = (w @ points) / jnp.maximum(total, 1e-12)
    # A seed with no point under its kernel (flat kernel only) stays put instead of becoming NaN.
    return jnp.where(total > 0, new, x)

  def cond(state):
    it, _, moved = state
    return (it < max_iters) & (moved > tol)

  def body(state):
    it, x, _ = state
    new = step(x)
    moved = jnp.sqrt(jnp.max(jnp.sum(jnp.square(new - x), axis=-1)))
    return it + 1, new, moved

  init = (jnp.int32(0), seeds, jnp.asarray(jnp.inf, seeds.dtype))
  _, modes, _ = jax.lax.while_loop(cond, body, init)
  density = jnp.sum(_kernel_weights(modes, points, valid, bandwidth, kernel), axis=-1)
  return modes, density


def _greedy_merge(
    modes: jax.Array, density: jax.Array, valid: jax.Array, radius: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Keeps modes in order of density, dropping any within `radius` of one already kept.

  Args:
    modes: (S, D).
    density: (S,).
    valid: (S,) bool.
    radius: merge distance.

  Returns:
    sorted_modes: (S, D) modes by decreasing density.
    keep: (S,) bool over `sorted_modes`.
  """
  order = jnp.argsort(jnp.where(valid, -density, jnp.inf))
  modes, valid = modes[order], valid[order]
  close = _sq_dists(modes, modes) <= jnp.square(radius)

  def body(i, keep):
    return keep.at[i].set(valid[i] & ~jnp.any(keep & close[i]))

  keep = jax.lax.fori_loop(0, modes.shape[0], body, jnp.zeros(modes.shape[0], bool))
  return modes, keep


def _consecutive(labels: jax.Array, num_labels: int) -> jax.Array:
  """Renumbers labels in [0, num_labels] so that the used ones are 1..K, keeping 0 as 0."""
  counts = jnp.bincount(labels, length=num_labels + 1)
  present = (counts > 0).at[0].set(False)
  new_ids = jnp.cumsum(present) * present
  return new_ids.astype(jnp.int32)[labels]


def _mean_shift_single(
    embeddings: jax.Array,
    mask: jax.Array,
    *,
    bandwidth: jax.Array,
    merge_radius: jax.Array | None,
    tol: jax.Array,
    num_seeds: int,
    num_points: int,
    max_iters: int,
    max_instances: int,
    kernel: str,
) -> jax.Array:
  h, w, d = embeddings.shape
  flat = embeddings.reshape(h * w, d).astype(jnp.float32)
  fg = mask.reshape(h * w).astype(bool)

  point_idx, point_valid = _foreground_subsample(fg, num_points)
  points = flat[point_idx]
  seed_idx = _farthest_point_seeds(points, point_valid, num_seeds)
  seed_valid = point_valid[seed_idx]

  modes, density = _shift_to_modes(
      points[seed_idx],
      points,
      point_valid,
      bandwidth=bandwidth,
      kernel=kernel,
      max_iters=max_iters,
      tol=tol * bandwidth,
  )
  radius = bandwidth if merge_radius is None else merge_radius
  sorted_modes, keep = _greedy_merge(modes, density, seed_valid, radius)

  # The densest kept modes fill the static `max_instances` slots.
  slot = jnp.nonzero(keep, size=max_instances, fill_value=0)[0]
  centres = sorted_modes[slot]
  centre_valid = jnp.arange(max_instances) < jnp.sum(keep)

  d2 = jnp.where(centre_valid[None, :], _sq_dists(flat, centres), jnp.inf)
  labels = jnp.argmin(d2, axis=-1).astype(jnp.int32) + 1
  labels = jnp.where(fg & centre_valid[0], labels, 0)
  # A kept mode can end up nearest to no pixel; renumbering keeps the ids consecutive.
  return _consecutive(labels, max_instances).reshape(h, w)


@functools.partial(
    jax.jit,
    static_argnames=("num_seeds", "num_points", "max_iters", "max_instances", "kernel"),
)
def mean_shift(
    embeddings: jax.Array,
    mask: jax.Array,
    *,
    bandwidth: float | jax.Array = 1.0,
    num_seeds: int = 128,
    num_points: int = 2048,
    max_iters: int = 30,
    tol: float | jax.Array = 1e-3,
    merge_radius: float | jax.Array | None = None,
    max_instances: int = 128,
    kernel: str = "gaussian",
) -> jax.Array:
  """Mean-shift clustering of the foreground embeddings, on device.

  Seeds: `num_seeds` farthest-point samples of a `num_points` raster-strided subsample of the
  foreground, so small instances get seeds as surely as large ones. Each seed climbs the kernel
  density of that subsample until it moves less than `tol * bandwidth` or after `max_iters`
  steps. Modes are then kept in order of density unless one already kept lies within
  `merge_radius`, the densest `max_instances` survive, and every foreground pixel takes the nearest.

  Instances with fewer than about (foreground pixels / num_points) pixels may be absent from the
  subsample and join their nearest neighbour; raise `num_points` for large images.

  Args:
    embeddings: (H, W, D) or (B, H, W, D) float pixel embeddings.
    mask: (H, W) or (B, H, W) bool foreground; only these pixels are clustered.
    bandwidth: kernel scale: the standard deviation of the Gaussian kernel, the radius of the flat
      one. 1.0 = 2 * delta_v suits the paper's margins (see the module docstring).
    num_seeds: seeds per image (static); must exceed the number of instances.
    num_points: size of the foreground subsample that forms the density (static).
    max_iters: cap on mean-shift steps (static).
    tol: convergence threshold, relative to `bandwidth`.
    merge_radius: modes closer than this merge; default `bandwidth`.
    max_instances: most instances returned per image (static).
    kernel: "gaussian" (default) or "flat". The flat kernel has fixed points halfway between
      instances whose means are 2 * bandwidth apart, which merge the pair.

  Returns:
    (H, W) or (B, H, W) int32 labels: 0 outside the mask, instances 1..K consecutive, ordered by
    decreasing density.
  """
  if kernel not in _KERNELS:
    raise ValueError(f"Unknown kernel {kernel!r}; valid: {', '.join(_KERNELS)}.")
  fn = functools.partial(
      _mean_shift_single,
      bandwidth=jnp.asarray(bandwidth, jnp.float32),
      merge_radius=None if merge_radius is None else jnp.asarray(merge_radius, jnp.float32),
      tol=jnp.asarray(tol, jnp.float32),
      num_seeds=num_seeds,
      num_points=num_points,
      max_iters=max_iters,
      max_instances=max_instances,
      kernel=kernel,
  )
  if embeddings.ndim == 4:
    return jax.vmap(fn)(embeddings, mask)
  if embeddings.ndim != 3:
    raise ValueError(f"embeddings must be (H, W, D) or (B, H, W, D), got {embeddings.shape}.")
  return fn(embeddings, mask)


def mean_shift_batch(embeddings: jax.Array, mask: jax.Array, **options) -> jax.Array:
  """`mean_shift` over a batch.

  Args:
    embeddings: (B, H, W, D) float.
    mask: (B, H, W) bool.
    **options: keyword options of `mean_shift`.

  Returns:
    (B, H, W) int32 labels, each image numbered 1..K_b on its own.
  """
  if embeddings.ndim != 4:
    raise ValueError(f"embeddings must be (B, H, W, D), got {embeddings.shape}.")
  return mean_shift(embeddings, mask, **options)


def _fast_mean_shift_single(
    embeddings: jax.Array,
    mask: jax.Array,
    *,
    bandwidth: jax.Array,
    tol: jax.Array,
    num_points: int,
    max_iters: int,
    max_instances: int,
) -> jax.Array:
  h, w, d = embeddings.shape
  flat = embeddings.reshape(h * w, d).astype(jnp.float32)
  fg = mask.reshape(h * w).astype(bool)
  point_idx, point_valid = _foreground_subsample(fg, num_points)
  points = flat[point_idx]
  bw2 = jnp.square(bandwidth)

  def shift(x, free):
    def cond(state):
      it, _, moved = state
      return (it < max_iters) & (moved > tol * bandwidth)

    def body(state):
      it, x, _ = state
      inside = free & (jnp.sum(jnp.square(points - x), axis=-1) <= bw2)
      n = jnp.sum(inside)
      new = jnp.where(n > 0, jnp.sum(points * inside[:, None], axis=0) / jnp.maximum(n, 1), x)
      return it + 1, new, jnp.sqrt(jnp.sum(jnp.square(new - x)))

    return jax.lax.while_loop(cond, body, (jnp.int32(0), x, jnp.asarray(jnp.inf)))[1]

  def cond(state):
    labels, k = state
    return (k < max_instances) & jnp.any(fg & (labels == 0))

  def body(state):
    labels, k = state
    unlabeled = fg & (labels == 0)
    seed = jnp.argmax(unlabeled)
    # The mode is sought among the still unlabeled pixels of the subsample, so instances already
    # claimed do not pull the next one towards them.
    mode = shift(flat[seed], point_valid & (labels[point_idx] == 0))
    claim = unlabeled & (jnp.sum(jnp.square(flat - mode), axis=-1) <= bw2)
    # The seed itself is always claimed, so each round labels at least one pixel.
    claim = claim.at[seed].set(True)
    return jnp.where(claim, k + 1, labels), k + 1

  labels, _ = jax.lax.while_loop(cond, body, (jnp.zeros(h * w, jnp.int32), jnp.int32(0)))
  return labels.reshape(h, w)


@functools.partial(jax.jit, static_argnames=("num_points", "max_iters", "max_instances"))
def fast_mean_shift(
    embeddings: jax.Array,
    mask: jax.Array,
    *,
    bandwidth: float | jax.Array = 1.5,
    num_points: int = 2048,
    max_iters: int = 30,
    tol: float | jax.Array = 1e-3,
    max_instances: int = 128,
) -> jax.Array:
  """Sequential mean shift of De Brabandere et al. (2017), as a `jax.lax.while_loop`.

  Repeats until no foreground pixel is unlabeled or `max_instances` instances exist: take the first
  unlabeled foreground pixel in raster order, move its embedding to the mean of the unlabeled
  subsample embeddings within `bandwidth` until it settles, and give every unlabeled foreground
  pixel within `bandwidth` of that mode the next label. The mode search uses a raster-strided
  subsample of `num_points` foreground pixels; the claim step scans every pixel. Pixels left when
  `max_instances` is reached stay 0. Stragglers farther than `bandwidth` from their mode become
  small instances of their own; `cluster(..., min_size=...)` removes them.

  Under `vmap` (a batch) the loop runs until the slowest image is done.

  Args:
    embeddings: (H, W, D) or (B, H, W, D) float pixel embeddings.
    mask: (H, W) or (B, H, W) bool foreground.
    bandwidth: flat kernel radius, also the claim radius; 1.5 = delta_d, half the distance between
      instance means after training.
    num_points: foreground subsample for the mode search (static).
    max_iters: cap on mean-shift steps per instance (static).
    tol: convergence threshold, relative to `bandwidth`.
    max_instances: most instances per image (static).

  Returns:
    (H, W) or (B, H, W) int32 labels, 0 outside the mask, 1..K in order of discovery.
  """
  fn = functools.partial(
      _fast_mean_shift_single,
      bandwidth=jnp.asarray(bandwidth, jnp.float32),
      tol=jnp.asarray(tol, jnp.float32),
      num_points=num_points,
      max_iters=max_iters,
      max_instances=max_instances,
  )
  if embeddings.ndim == 4:
    return jax.vmap(fn)(embeddings, mask)
  if embeddings.ndim != 3:
    raise ValueError(f"embeddings must be (H, W, D) or (B, H, W, D), got {embeddings.shape}.")
  return fn(embeddings, mask)
