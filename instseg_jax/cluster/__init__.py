"""Clustering of pixel embeddings into instances, and the `cluster` dispatch.

`mean_shift` and `fast_mean_shift` run in JAX on the device and return `jax.Array`s; `kmeans`,
`hdbscan` and `sklearn_mean_shift` run scikit-learn on the host and return NumPy arrays. All take
one image, (H, W, D) embeddings with an (H, W) foreground mask, or a batch of them, and return
int32 labels: 0 outside the mask, instances numbered 1..K per image.
"""

from collections.abc import Callable
import inspect

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from instseg_jax.cluster.meanshift import fast_mean_shift
from instseg_jax.cluster.meanshift import mean_shift
from instseg_jax.cluster.sklearn_methods import hdbscan
from instseg_jax.cluster.sklearn_methods import kmeans
from instseg_jax.cluster.sklearn_methods import sklearn_mean_shift

METHODS: dict[str, Callable[..., jax.Array | np.ndarray]] = {
    "meanshift": mean_shift,
    "fast_meanshift": fast_mean_shift,
    "kmeans": kmeans,
    "hdbscan": hdbscan,
    "sklearn_meanshift": sklearn_mean_shift,
}
# The methods compiled by JAX, once per input shape (see `buckets` for sharing programs).
JAX_METHODS = ("meanshift", "fast_meanshift")

__all__ = [
    "JAX_METHODS",
    "METHODS",
    "cluster",
    "fast_mean_shift",
    "hdbscan",
    "kmeans",
    "mean_shift",
    "remove_small_instances",
    "sklearn_mean_shift",
]


def _remove_small_np(labels: np.ndarray, min_size: int) -> np.ndarray:
  counts = np.bincount(labels.ravel())
  keep = counts >= min_size
  keep[0] = False
  new_ids = (np.cumsum(keep) * keep).astype(labels.dtype)
  return new_ids[labels]


@jax.jit
def _remove_small_jax(labels: jax.Array, min_size: jax.Array) -> jax.Array:
  # No label can exceed the pixel count, which gives the static number of bins.
  counts = jnp.bincount(labels.ravel(), length=labels.size + 1)
  keep = (counts >= min_size).at[0].set(False)
  new_ids = (jnp.cumsum(keep) * keep).astype(labels.dtype)
  return new_ids[labels]


def remove_small_instances(
    labels: jax.Array | np.ndarray, *, min_size: int
) -> jax.Array | np.ndarray:
  """Sets instances smaller than `min_size` pixels to 0 and renumbers the rest 1..K.

  NumPy in, NumPy out (on the host); a `jax.Array` stays on its device.

  Args:
    labels: (H, W) or (B, H, W) int labels, 0 = background; each image is treated on its own.
    min_size: smallest instance kept, in pixels; 0 or 1 keeps everything.

  Returns:
    Labels of the same shape, type and dtype.
  """
  if min_size <= 1:
    return labels
  if labels.ndim not in (2, 3):
    raise ValueError(f"labels must be (H, W) or (B, H, W), got {labels.shape}.")
  if isinstance(labels, jax.Array):
    fn = _remove_small_jax if labels.ndim == 2 else jax.vmap(_remove_small_jax, (0, None))
    return fn(labels, jnp.asarray(min_size, jnp.int32))
  labels = np.asarray(labels)
  if labels.ndim == 2:
    return _remove_small_np(labels, min_size)
  return np.stack([_remove_small_np(image, min_size) for image in labels])


def _instance_cap(fn: Callable[..., jax.Array | np.ndarray], options: dict) -> int | None:
  """The max_instances a method runs with (the caller's or its default); None if it has none."""
  if "max_instances" in options:
    return int(options["max_instances"])
  parameter = inspect.signature(fn).parameters.get("max_instances")
  if parameter is None or parameter.default is inspect.Parameter.empty:
    return None
  return int(parameter.default)


def _warn_if_capped(labels: jax.Array | np.ndarray, method: str, cap: int | None) -> None:
  """Says when an image has as many instances as the method may return: some may be missing."""
  if cap is None or isinstance(labels, jax.core.Tracer):
    return  # Inside a caller's jit the count is not known yet.
  found = int(np.max(np.asarray(labels), initial=0))
  if found >= cap:
    logging.warning(
        "clustering (%s) found max_instances=%d instances in an image, the most it may "
        "return; instances beyond them were merged or left out. Raise max_instances.",
        method, cap)


def cluster(
    embeddings: jax.Array | np.ndarray,
    mask: jax.Array | np.ndarray,
    *,
    method: str = "meanshift",
    min_size: int = 0,
    **options,
) -> jax.Array | np.ndarray:
  """Clusters foreground embeddings into instances with one of `METHODS`.

  Args:
    embeddings: (H, W, D) or (B, H, W, D) float pixel embeddings.
    mask: (H, W) or (B, H, W) bool foreground.
    method: a key of `METHODS`.
    min_size: instances smaller than this many pixels become background (0); the rest are
      renumbered 1..K.
    **options: keyword options of the chosen method, e.g. `bandwidth` for the mean shifts or
      `num_clusters` for k-means.

  Returns:
    (H, W) or (B, H, W) int32 labels: a `jax.Array` for the JAX methods, NumPy for sklearn's.
    When an image reaches the method's max_instances a warning is logged.

  Raises:
    ValueError: for an unknown method.
  """
  try:
    fn = METHODS[method]
  except KeyError:
    raise ValueError(
        f"Unknown clustering method {method!r}; valid: {', '.join(sorted(METHODS))}."
    ) from None
  labels = fn(embeddings, mask, **options)
  # Checked before small instances are removed: those still took a slot.
  _warn_if_capped(labels, method, _instance_cap(fn, options))
  return remove_small_instances(labels, min_size=min_size)
