"""Mean-shift clustering of pixel embeddings in JAX: static shapes, jit, vmap.

Two variants:

* `mean_shift`: parallel seeds. Seeds are spread over the foreground embeddings by farthest-point
  sampling, shifted to their modes together with a Gaussian (or flat) kernel over a fixed subsample
  of the foreground embeddings, merged greedily by density, and every foreground pixel takes the
  nearest surviving mode.
* `fast_mean_shift`: the sequential scheme of De Brabandere et al. (2017): pick an unlabeled pixel,
  shift it to its mode, claim every unlabeled pixel within the bandwidth, repeat.

Bandwidth and the discriminative loss. After training, the pixels of one instance lie within
delta_v (0.5) of their mean and the means are at least 2 * delta_d (3.0) apart. Both variants read
the bandwidth h as a radius in embedding space: the flat kernel is the ball of radius h, the
Gaussian kernel has standard deviation h / 2.

* `mean_shift`, Gaussian kernel: the default h = 2 * delta_v = 1.0 (`config.cluster.bandwidth`)
  gives a standard deviation of delta_v. That smooths the spread inside an instance into one mode,
  while a neighbouring mean 3.0 = six standard deviations away weighs exp(-18) per pixel, so a small
  instance keeps its mode next to one many times larger. Modes closer than `merge_radius` = h
  merge. On the benchmark scenes h = 0.7 .. 1.5 gives the same result; from about h = 2 (standard
  deviation 1, means three apart) neighbouring instances merge.
* `fast_mean_shift`, flat kernel: h is also the radius of the claim around the mode. The default
  h = delta_d = 1.5, half the distance between means, reaches the stragglers of an instance without
  touching its neighbours; with h = 1.0 stragglers stay out and each becomes an instance of its own.
"""

from collections.abc import Callable
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

_KERNELS = ("gaussian", "flat")
# Centres compared with a chunk of pixels at a time when labelling (see `_assign_nearest`).
_CENTRE_BLOCK = 32
# The density subsample holds at least this many points per seed, so that each of hundreds of
# small instances is sampled (see `mean_shift`).
_POINTS_PER_SEED = 16
# Once at most this many seeds still move, only they take further mean-shift steps
# (see `_shift_to_modes`).
_STRAGGLERS = 16


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared Euclidean distances between rows, via matmul so XLA uses its GEMM.

  Args:
    a: (M, D) points.
    b: (K, D) points.

  Returns:
    (M, K) squared distances, clamped at 0 against rounding.
  """
  d2 = jnp.sum(a * a, axis=-1)[:, None] - 2.0 * a @ b.T + jnp.sum(b * b, axis=-1)[None, :]
  return jnp.maximum(d2, 0.0)


class _Foreground(NamedTuple):
  """The foreground of one image as indices into its pixels, in a static-size buffer."""

  flat: jax.Array  # (N, D) float32 embeddings of every pixel.
  order: jax.Array  # (M,) int32 pixel indices, foreground in raster order first, then N (padding).
  count: jax.Array  # () int32 foreground pixels.
  chunk: int  # M is a multiple of it (static).


def _pack_foreground(flat: jax.Array, fg: jax.Array, chunk: int) -> _Foreground:
  """Packs the foreground so that per-pixel work can stop after ceil(count / chunk) chunks.

  Only the indices are packed: a packed copy of the embeddings would write (M, D) floats for
  every image (64 MB at 1024x1024) where the chunks that follow read only the foreground's rows.

  Args:
    flat: (N, D) embeddings.
    fg: (N,) bool foreground.
    chunk: granularity of the later per-pixel loops (static).

  Returns:
    The packed foreground.
  """
  n = flat.shape[0]
  size = -(-n // chunk) * chunk
  order = jnp.nonzero(fg, size=size, fill_value=n)[0].astype(jnp.int32)
  return _Foreground(flat, order, jnp.sum(fg, dtype=jnp.int32), chunk)


def _take(packed: _Foreground, rank: jax.Array) -> jax.Array:
  """(K, D) embeddings of the foreground pixels at packed positions `rank`; padding gives 0."""
  return packed.flat.at[packed.order[rank]].get(mode="fill", fill_value=0.0)


def _chunk_rows(packed: _Foreground, start: jax.Array) -> jax.Array:
  """(chunk, D) embeddings of the packed positions start .. start + chunk."""
  return _take(packed, start + jnp.arange(packed.chunk))


def _first_min(values: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(index of the first minimum, minimum) of each row of `values` (R, K), as `argmin` picks.

  Two plain reductions: XLA's CPU arg-min is a variadic reduce that took 3.5x as long and
  dominated the labelling of pixels.
  """
  low = jnp.min(values, axis=-1, keepdims=True)
  index = jnp.arange(values.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(values <= low, index, values.shape[-1]), axis=-1), low[:, 0]


def _unpack_labels(packed: _Foreground, labels: jax.Array, n: int) -> jax.Array:
  """(M,) labels in packed order -> (N,) labels per pixel, 0 off the foreground."""
  return jnp.zeros(n, labels.dtype).at[packed.order].set(labels, mode="drop")


def _strided_ranks(count: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
  """Picks `num` of `count` foreground ranks, spread evenly in raster order.

  With fewer foreground pixels than `num` each is taken once and the remaining slots are marked
  invalid, so the valid slots always form a prefix.

  Args:
    count: () number of foreground pixels.
    num: number of picks (static).

  Returns:
    rank: (num,) int32 positions in the packed foreground.
    valid: (num,) bool, False for unused slots.
  """
  step = jnp.maximum(count, num).astype(jnp.float32) / num
  rank = jnp.floor(jnp.arange(num, dtype=jnp.float32) * step).astype(jnp.int32)
  valid = rank < count
  return jnp.where(valid, rank, 0), valid


def _chunk_loop(
    packed: _Foreground, fn: Callable[[jax.Array, jax.Array], jax.Array], init: jax.Array
) -> jax.Array:
  """Folds `fn(start, carry) -> carry` over the chunks that hold foreground pixels.

  A `while_loop` rather than a `fori_loop` so that the work follows the foreground size, not the
  image size.
  """

  def cond(state):
    i, _ = state
    return i * packed.chunk < packed.count

  def body(state):
    i, carry = state
    return i + 1, fn(i * packed.chunk, carry)

  return jax.lax.while_loop(cond, body, (jnp.int32(0), init))[1]


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
    nxt = _first_min(-min_d2[None])[0][0]
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
    # Standard deviation bandwidth / 2: the bandwidth is a radius for both kernels.
    w = jnp.exp(d2 * (-2.0 / jnp.square(bandwidth)))
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
  """Mean-shift iterations of all seeds until none moves farther than `tol` in a step.

  A loop over all seeds lasts as long as the slowest one: a straggler wandering between sparse
  points at a small bandwidth, or a seed crossing between instances that a large bandwidth
  merges, takes 17-40 steps where the others settle in 4-5. So once at most `_STRAGGLERS` seeds
  still move, only those carry on, at a fraction of the cost of a step of all seeds; every seed
  still ends where it settles (or at `max_iters` steps), and none is left out.

  Args:
    seeds: (S, D) start points.
    points: (P, D) embeddings that form the density.
    valid: (P,) bool.
    bandwidth: kernel scale.
    kernel: "gaussian" or "flat".
    max_iters: iteration cap (static).
    tol: a seed has settled once a step moves it less than this.

  Returns:
    modes: (S, D) converged positions.
    density: (S,) kernel weight sum at each mode, in points.
  """

  def step(state):
    it, x, _ = state
    w = _kernel_weights(x, points, valid, bandwidth, kernel)
    total = jnp.sum(w, axis=-1, keepdims=True)
    new = (w @ points) / jnp.maximum(total, 1e-12)
    # A seed with no point under its kernel (flat kernel only) stays put instead of becoming NaN.
    new = jnp.where(total > 0, new, x)
    return it + 1, new, jnp.sqrt(jnp.sum(jnp.square(new - x), axis=-1))

  def iterate(state, most_moving: int):
    """Steps while more than `most_moving` seeds of the state move farther than `tol`."""
    cond = lambda s: (s[0] < max_iters) & (jnp.sum(s[2] > tol) > most_moving)
    return jax.lax.while_loop(cond, step, state)

  num_seeds = seeds.shape[0]
  state = (jnp.int32(0), seeds, jnp.full(num_seeds, jnp.inf, seeds.dtype))
  if num_seeds > _STRAGGLERS:
    it, modes, moved = iterate(state, _STRAGGLERS)
    _, slow = jax.lax.top_k(moved, _STRAGGLERS)
    _, slow_modes, _ = iterate((it, modes[slow], moved[slow]), 0)
    modes = modes.at[slow].set(slow_modes)
  else:
    _, modes, _ = iterate(state, 0)
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


def _assign_nearest(packed: _Foreground, centres: jax.Array, num_centres: jax.Array) -> jax.Array:
  """Labels each foreground pixel with 1 + the index of its nearest centre among the first ones.

  The (pixels, centres) distance matrix of a whole image is tens of megabytes and its arg-min
  dominated the run time; chunks of the packed foreground stay in cache and skip the background,
  and blocks of centres stop at `num_centres`, so an image of 40 nuclei does not pay for the 384
  slots its config allows. On a tie the first centre (the denser) wins, as in one arg-min.

  Args:
    packed: the foreground.
    centres: (K, D); only the first `num_centres` count.
    num_centres: () int32.

  Returns:
    (M,) int32 labels in packed order; 0 for padding or when there is no centre.
  """
  k = centres.shape[0]
  block = min(k, _CENTRE_BLOCK)
  padded = -(-k // block) * block
  centres = jnp.pad(centres, ((0, padded - k), (0, 0)))
  # ||x||^2 is the same for every centre and does not change the arg-min.
  offset = jnp.where(
      jnp.arange(padded) < num_centres, jnp.sum(jnp.square(centres), axis=-1), jnp.inf
  )

  def label_chunk(start, labels):
    x = _chunk_rows(packed, start)

    def cond(state):
      return state[0] * block < num_centres

    def body(state):
      b, best, nearest = state
      c = jax.lax.dynamic_slice_in_dim(centres, b * block, block)
      o = jax.lax.dynamic_slice_in_dim(offset, b * block, block)
      index, low = _first_min(o[None, :] - 2.0 * x @ c.T)
      better = low < best  # strictly: on a tie the earlier block's centre stays
      return b + 1, jnp.where(better, low, best), jnp.where(better, index + b * block, nearest)

    init = (jnp.int32(0), jnp.full(packed.chunk, jnp.inf), jnp.zeros(packed.chunk, jnp.int32))
    nearest = jax.lax.while_loop(cond, body, init)[2]
    return jax.lax.dynamic_update_slice_in_dim(labels, nearest + 1, start, 0)

  labels = jnp.zeros(packed.order.shape[0], jnp.int32)
  labels = _chunk_loop(packed, label_chunk, labels)
  valid = jnp.arange(packed.order.shape[0]) < packed.count
  return jnp.where(valid & (num_centres > 0), labels, 0)


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
    chunk: int,
) -> jax.Array:
  h, w, d = embeddings.shape
  flat = embeddings.reshape(h * w, d).astype(jnp.float32)
  packed = _pack_foreground(flat, mask.reshape(h * w).astype(bool), chunk)

  rank, point_valid = _strided_ranks(packed.count, num_points)
  points = _take(packed, rank)
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
  num_centres = jnp.minimum(jnp.sum(keep, dtype=jnp.int32), max_instances)

  labels = _unpack_labels(packed, _assign_nearest(packed, centres, num_centres), h * w)
  # A kept mode can end up nearest to no pixel; renumbering keeps the ids consecutive.
  return _consecutive(labels, max_instances).reshape(h, w)


@functools.partial(
    jax.jit,
    static_argnames=("num_seeds", "num_points", "max_iters", "max_instances", "kernel", "chunk"),
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
    chunk: int = 2048,
) -> jax.Array:
  """Mean-shift clustering of the foreground embeddings, on device.

  Seeds: `num_seeds` (at least `max_instances`) farthest-point samples of a `num_points`
  raster-strided subsample of the foreground, so small instances get seeds as surely as large
  ones. Each seed climbs the kernel
  density of that subsample until it moves less than `tol * bandwidth` or after `max_iters`
  steps. Modes are then kept in order of density unless one already kept lies within
  `merge_radius`, the densest `max_instances` survive, and every foreground pixel takes the nearest.

  Instances with fewer than about (foreground pixels / num_points) pixels may be absent from the
  subsample and join their nearest neighbour; raise `num_points` for large images.

  Args:
    embeddings: (H, W, D) or (B, H, W, D) float pixel embeddings.
    mask: (H, W) or (B, H, W) bool foreground; only these pixels are clustered.
    bandwidth: kernel radius: the flat kernel's radius, twice the Gaussian's standard deviation.
      1.0 = 2 * delta_v suits the paper's margins (see the module docstring).
    num_seeds: seeds per image (static); each seed finds at most one instance, so fewer than
      `max_instances` are raised to it. More seeds than instances find small instances more
      surely (CVPPP leaves: 32 seeds SBD 0.840, 64 or 128 seeds 0.845).
    num_points: size of the foreground subsample that forms the density (static); raised to 16
      per seed, so that each of 500 instances is sampled about 16 times.
    max_iters: cap on mean-shift steps (static).
    tol: convergence threshold, relative to `bandwidth`.
    merge_radius: modes closer than this merge; default `bandwidth`.
    max_instances: most instances returned per image (static).
    kernel: "gaussian" (default) or "flat" (sklearn's). Under the flat kernel the point halfway
      between two means 2 * bandwidth apart is a fixed point, from which sklearn's reference
      merges the pair.
    chunk: foreground pixels labelled per step of the final assignment (static).

  Returns:
    (H, W) or (B, H, W) int32 labels: 0 outside the mask, instances 1..K consecutive, ordered by
    decreasing density.
  """
  if kernel not in _KERNELS:
    raise ValueError(f"Unknown kernel {kernel!r}; valid: {', '.join(_KERNELS)}.")
  # Fewer seeds than max_instances would cap the result below what the caller asked for.
  num_seeds = max(num_seeds, max_instances)
  num_points = max(num_points, _POINTS_PER_SEED * num_seeds)
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
      chunk=chunk,
  )
  if embeddings.ndim == 4:
    return jax.vmap(fn)(embeddings, mask)
  if embeddings.ndim != 3:
    raise ValueError(f"embeddings must be (H, W, D) or (B, H, W, D), got {embeddings.shape}.")
  return fn(embeddings, mask)


def _fast_mean_shift_single(
    embeddings: jax.Array,
    mask: jax.Array,
    *,
    bandwidth: jax.Array,
    tol: jax.Array,
    num_points: int,
    max_iters: int,
    max_instances: int,
    chunk: int,
) -> jax.Array:
  h, w, d = embeddings.shape
  flat = embeddings.reshape(h * w, d).astype(jnp.float32)
  packed = _pack_foreground(flat, mask.reshape(h * w).astype(bool), chunk)
  size = packed.order.shape[0]
  is_fg = jnp.arange(size) < packed.count
  rank, point_valid = _strided_ranks(packed.count, num_points)
  points = _take(packed, rank)
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
    return (k < max_instances) & jnp.any(is_fg & (labels == 0))

  def body(state):
    labels, k = state
    # The first unlabeled foreground pixel in raster order.
    seed = jnp.argmax(is_fg & (labels == 0))
    # The mode is sought among the still unlabeled pixels of the subsample, so instances already
    # claimed do not pull the next one towards them.
    mode = shift(_take(packed, seed), point_valid & (labels[rank] == 0))

    def claim_chunk(start, labels):
      x = _chunk_rows(packed, start)
      old = jax.lax.dynamic_slice_in_dim(labels, start, chunk)
      near = jnp.sum(jnp.square(x - mode), axis=-1) <= bw2
      return jax.lax.dynamic_update_slice_in_dim(
          labels, jnp.where(near & (old == 0), k + 1, old), start, 0
      )

    labels = _chunk_loop(packed, claim_chunk, labels)
    # The seed itself is always claimed, so each round labels at least one pixel.
    return labels.at[seed].set(k + 1), k + 1

  labels = jnp.zeros(size, jnp.int32)
  labels, _ = jax.lax.while_loop(cond, body, (labels, jnp.int32(0)))
  # Padding rows (embedding 0) may have been claimed; they are dropped here.
  labels = jnp.where(is_fg, labels, 0)
  return _unpack_labels(packed, labels, h * w).reshape(h, w)


@functools.partial(jax.jit, static_argnames=("num_points", "max_iters", "max_instances", "chunk"))
def fast_mean_shift(
    embeddings: jax.Array,
    mask: jax.Array,
    *,
    bandwidth: float | jax.Array = 1.5,
    num_points: int = 2048,
    max_iters: int = 30,
    tol: float | jax.Array = 1e-3,
    max_instances: int = 128,
    chunk: int = 2048,
) -> jax.Array:
  """Sequential mean shift of De Brabandere et al. (2017), as a `jax.lax.while_loop`.

  Repeats until no foreground pixel is unlabeled or `max_instances` instances exist: take the first
  unlabeled foreground pixel in raster order, move its embedding to the mean of the unlabeled
  subsample embeddings within `bandwidth` until it settles, and give every unlabeled foreground
  pixel within `bandwidth` of that mode the next label. The mode search uses a raster-strided
  subsample of `num_points` foreground pixels; the claim step tests every foreground pixel.
  Pixels left when `max_instances` is reached stay 0. Stragglers farther than `bandwidth` from
  their mode become small instances of their own; `cluster(..., min_size=...)` removes them.

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
    chunk: foreground pixels tested per step of a claim (static).

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
      chunk=chunk,
  )
  if embeddings.ndim == 4:
    return jax.vmap(fn)(embeddings, mask)
  if embeddings.ndim != 3:
    raise ValueError(f"embeddings must be (H, W, D) or (B, H, W, D), got {embeddings.shape}.")
  return fn(embeddings, mask)
