"""Clustering of pixel embeddings into instances, and the `cluster` dispatch.

`mean_shift`, `fast_mean_shift` and `seed_clustering` (which also takes the seed head's map) run
in JAX on the device and return `jax.Array`s; `kmeans`, `hdbscan` and `sklearn_mean_shift` run
scikit-learn on the host and return NumPy arrays. All take one image, (H, W, D) embeddings with
an (H, W) foreground mask, or a batch of them, and return int32 labels: 0 outside the mask,
instances numbered 1..K per image.
"""

from collections.abc import Callable
import dataclasses
import inspect

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from instseg_jax.cluster.meanshift import fast_mean_shift
from instseg_jax.cluster.meanshift import mean_shift
from instseg_jax.cluster.seeds import seed_clustering
from instseg_jax.cluster.sklearn_methods import hdbscan
from instseg_jax.cluster.sklearn_methods import kmeans
from instseg_jax.cluster.sklearn_methods import sklearn_mean_shift
from instseg_jax.registry import lookup


@dataclasses.dataclass(frozen=True)
class Method:
  """A clustering method of the registry METHODS.

  Attributes:
    fn: fn(embeddings, mask, **options) -> int32 labels, as `cluster` describes.
    options: the config.cluster fields passed to fn as keyword options (besides min_size).
    on_device: compiled by JAX, once per input shape (see `buckets` for sharing programs), with
      a static bound `max_instances` on the instances of an image.
    needs_seed: fn also takes `seed`, the seed head's map (config.model.seed_head).
  """

  fn: Callable[..., jax.Array | np.ndarray]
  options: tuple[str, ...]
  on_device: bool = False
  needs_seed: bool = False


# config.cluster.method -> its Method: a new method is its function and one entry here.
METHODS: dict[str, Method] = {
    "meanshift": Method(mean_shift, ("bandwidth",), on_device=True),
    "fast_meanshift": Method(fast_mean_shift, ("bandwidth",), on_device=True),
    "kmeans": Method(kmeans, ("num_clusters",)),
    "hdbscan": Method(hdbscan, ("min_cluster_size",)),
    "sklearn_meanshift": Method(sklearn_mean_shift, ("bandwidth",)),
    "seeds": Method(
        seed_clustering, ("bandwidth", "seed_threshold"), on_device=True, needs_seed=True
    ),
}

__all__ = [
    "METHODS",
    "Method",
    "cluster",
    "fast_mean_shift",
    "hdbscan",
    "kmeans",
    "mean_shift",
    "remove_small_instances",
    "seed_clustering",
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
        method,
        cap,
    )


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
    ConfigError (a ValueError): for an unknown method; the message lists the valid ones.
  """
  fn = lookup(METHODS, method, "method").fn
  labels = fn(embeddings, mask, **options)
  # Checked before small instances are removed: those still took a slot.
  _warn_if_capped(labels, method, _instance_cap(fn, options))
  return remove_small_instances(labels, min_size=min_size)
