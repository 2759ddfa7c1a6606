"""The pixel-level part of the discriminative loss: per-slot counts, means and pull sums.

A `jax.custom_vjp` with a hand-written backward: the gradient of the whole loss with respect to
the embeddings is one fused pass over the pixels, so a forward and backward read the
(B, H, W, D) embeddings three times and write them once (the gradient); on CPU the forward passes
run in chunks so that nothing else of that size is allocated.
"""

from collections.abc import Callable
import dataclasses
import functools
import math
import operator
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from instseg_jax.losses import _slots

# XLA:CPU page-faults every fresh buffer over ~32 MB (glibc maps those afresh on each call), so the
# pixel passes there work on chunks of about this many bytes.
_CPU_CHUNK_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class PullSpec:
  """Static description of the pixel-level pass (`pull_statistics`)."""

  num_slots: int  # per image: max_instances + 1 cluster slots and one slot for excluded pixels
  distance: str
  error: str
  margin: float
  num_chunks: int  # the pixel axis is processed in this many sequential chunks


def chunk_count(shape: tuple[int, ...], dtype: Any) -> int:
  """How many sequential chunks the pixel passes over (B, *spatial, D) embeddings use; 1 off CPU."""
  if jax.default_backend() != "cpu":
    return 1
  batch, num_pixels, dim = shape[0], math.prod(shape[1:-1]), shape[-1]
  itemsize = jnp.dtype(jnp.promote_types(dtype, jnp.float32)).itemsize
  wanted = math.ceil(batch * num_pixels * dim * itemsize / _CPU_CHUNK_BYTES)
  if wanted <= 1:
    return 1
  divisors = [n for n in range(wanted, min(num_pixels, 8 * wanted) + 1) if num_pixels % n == 0]
  return divisors[0] if divisors else 1


def _channel_sum(t: jax.Array) -> jax.Array:
  # Explicit adds, not a reduce: XLA:CPU turns a reduce over gathered operands into a kernel that
  # is two orders of magnitude slower than the fused elementwise loop.
  return functools.reduce(operator.add, [t[..., c] for c in range(t.shape[-1])])


def _pixel_distance(t: jax.Array, distance: str) -> jax.Array:
  """(P, D) differences -> (P,) distances."""
  if distance == "euclidean":
    return jnp.sqrt(_channel_sum(t * t))
  return _channel_sum(jnp.abs(t))


def hinge_error(h: jax.Array, kind: str) -> jax.Array:
  """Error of a non-negative value: a hinge, or a mean's distance from 0 (the regularizer)."""
  if kind == "squared":
    return h * h
  if kind == "absolute":
    return h
  # log(cosh(h)) without overflow for large h.
  return h + jax.nn.softplus(-2.0 * h) - math.log(2.0)


def _pull_error_and_slope(d: jax.Array, spec: PullSpec) -> tuple[jax.Array, jax.Array]:
  """Per-pixel pull error err([d - margin]_+) and its derivative with respect to d."""
  fn = lambda d: hinge_error(jnp.maximum(d - spec.margin, 0.0), spec.error)
  return jax.jvp(fn, (d,), (jnp.ones_like(d),))


def _direction_scale(d: jax.Array, slope: jax.Array, distance: str) -> jax.Array:
  """Per-pixel factor s with d(error)/d(x_i - mu) = s * direction(x_i - mu)."""
  if distance == "euclidean":
    # d(||t||)/dt = t / ||t||, taken as 0 at t = 0.
    positive = d > 0
    return jnp.where(positive, slope / jnp.where(positive, d, 1.0), 0.0)
  return slope


def _direction(t: jax.Array, distance: str) -> jax.Array:
  return t if distance == "euclidean" else jnp.sign(t)


def _pixel_chunks(
    x: jax.Array, flat_slots: jax.Array, num_chunks: int
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  """Returns chunk(i) -> ((P, D) embeddings, (P,) global slots) of pixel chunk i of every image."""
  batch, num_pixels, dim = x.shape
  size = num_pixels // num_chunks
  xc = x.reshape(batch, num_chunks, size, dim)
  sc = flat_slots.reshape(batch, num_chunks, size)

  def chunk(i):
    xi = lax.dynamic_index_in_dim(xc, i, axis=1, keepdims=False)
    si = lax.dynamic_index_in_dim(sc, i, axis=1, keepdims=False)
    return xi.reshape(-1, dim), si.reshape(-1)

  return chunk


def _over_chunks(
    fn: Callable[[jax.Array], tuple[Any, Any]], num_chunks: int, init: Any
) -> tuple[Any, Any]:
  """Runs fn(i) -> (sums, per_pixel) over the chunks: sums added up, per_pixel stacked.

  Per-pixel outputs come back as (num_chunks, B * chunk) arrays; without a loop for one chunk.
  """
  if num_chunks == 1:
    sums, per_pixel = fn(0)
    return sums, jax.tree.map(lambda a: a[None], per_pixel)

  def body(acc, i):
    sums, per_pixel = fn(i)
    return jax.tree.map(operator.add, acc, sums), per_pixel

  return lax.scan(body, init, jnp.arange(num_chunks))


def _unchunk(a: jax.Array, batch: int) -> jax.Array:
  """(num_chunks, B * chunk) per-pixel values -> (B * N,) in pixel order."""
  num_chunks = a.shape[0]
  return a.reshape(num_chunks, batch, -1).transpose(1, 0, 2).reshape(-1)


def _statistics(x: jax.Array, slots: jax.Array, spec: PullSpec, with_residuals: bool):
  """The two forward passes of `pull_statistics`: means first, then pull errors (+ residuals)."""
  batch, _, dim = x.shape
  ctype = jnp.promote_types(x.dtype, jnp.float32)
  num_segments = batch * spec.num_slots
  flat_slots = _slots.global_slots(slots, spec.num_slots)
  chunk = _pixel_chunks(x, flat_slots, spec.num_chunks)

  # Each pass is one row scatter: a pixel's values with one extra column (its count, its error),
  # since XLA:CPU scatters a row about as fast as a scalar.
  def moments(i):
    xi, si = chunk(i)
    rows = jnp.concatenate([xi.astype(ctype), jnp.ones((xi.shape[0], 1), ctype)], axis=1)
    return jax.ops.segment_sum(rows, si, num_segments), ()

  sums, _ = _over_chunks(moments, spec.num_chunks, jnp.zeros((num_segments, dim + 1), ctype))
  counts = sums[:, dim]
  means = sums[:, :dim] / jnp.maximum(counts, 1.0)[:, None]

  def pull(i):
    xi, si = chunk(i)
    t = xi.astype(ctype) - means[si]
    d = _pixel_distance(t, spec.distance)
    err, slope = _pull_error_and_slope(d, spec)
    if not with_residuals:
      return jax.ops.segment_sum(err, si, num_segments), ()
    # d(err_i)/d(x_i - mu) = scale_i * direction(x_i - mu); its sum over each segment is what the
    # mean's gradient needs, and scale_i is kept for the backward pass.
    scale = _direction_scale(d, slope, spec.distance)
    rows = jnp.concatenate([scale[:, None] * _direction(t, spec.distance), err[:, None]], axis=1)
    return jax.ops.segment_sum(rows, si, num_segments), scale

  width = dim + 1 if with_residuals else None
  init = jnp.zeros((num_segments, width) if width else num_segments, ctype)
  pull_rows, scale = _over_chunks(pull, spec.num_chunks, init)
  if with_residuals:
    pull_sums, grad_sums = pull_rows[:, dim], pull_rows[:, :dim]
  else:
    pull_sums = pull_rows
  out = (counts.reshape(batch, -1), means.reshape(batch, -1, dim), pull_sums.reshape(batch, -1))
  if not with_residuals:
    return out, None
  return out, (x, flat_slots, counts, means, grad_sums, _unchunk(scale, batch))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def pull_statistics(
    x: jax.Array, slots: jax.Array, spec: PullSpec
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-slot pixel counts, means and pull sums.

  Args:
    x: (B, N, D) embeddings.
    slots: (B, N) int32 slots in [0, spec.num_slots).
    spec: static options.

  Returns:
    counts (B, S), means (B, S, D) and pull sums (B, S) = sum over the slot's pixels of
    err([distance(x_i, mean) - margin]_+), with S = spec.num_slots, in float32 (float64 for
    float64 input).
  """
  return _statistics(x, slots, spec, with_residuals=False)[0]


def _pull_statistics_fwd(x, slots, spec):
  return _statistics(x, slots, spec, with_residuals=True)


def _pull_statistics_bwd(spec, residuals, cotangents):
  # x_i enters its slot's mean (weight 1/n) and its own pull error, which also depends on the mean:
  #   dL/dx_i = g_E * e_i' + (g_mu - g_E * sum_{j in slot} e_j') / n,
  # with e_i' = d err_i / d(x_i - mu) = scale_i * direction(x_i - mu).
  # The counts are piecewise constant in x, so their cotangent contributes nothing.
  x, flat_slots, counts, means, grad_sums, scale = residuals
  _, g_means, g_pull = cotangents
  dim = x.shape[-1]
  g_pull = g_pull.reshape(-1)
  shared = (g_means.reshape(-1, dim) - g_pull[:, None] * grad_sums) / jnp.maximum(counts, 1.0)[
      :, None
  ]
  s = flat_slots.reshape(-1)
  xf = x.reshape(-1, dim).astype(means.dtype)
  # One fused pass writes the gradient; the row gathers of the small tables fuse into it.
  grad = (g_pull[s] * scale)[:, None] * _direction(xf - means[s], spec.distance) + shared[s]
  return grad.reshape(x.shape).astype(x.dtype), None


pull_statistics.defvjp(_pull_statistics_fwd, _pull_statistics_bwd)
