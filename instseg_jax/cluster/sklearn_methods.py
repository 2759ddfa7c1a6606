"""Host-side clustering of foreground embeddings with scikit-learn.

Each function takes one image, (H, W, D) embeddings and an (H, W) mask, or a batch, (B, H, W, D)
and (B, H, W), which it loops over on the host. Labels are NumPy int32: 0 outside the mask,
instances 1..K. scikit-learn is imported on first use so that the JAX path never pays for it.
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np


def _per_image(
    fn: Callable[..., np.ndarray],
    embeddings: jax.Array | np.ndarray,
    mask: jax.Array | np.ndarray,
    per_image: dict[str, object] | None = None,
    **options,
) -> np.ndarray:
  """Runs `fn(points (n, D), **options) -> labels (n,)` on the foreground of each image.

  Args:
    fn: clusters the (n, D) foreground embeddings of one image into labels 1..K.
    embeddings: (H, W, D) or (B, H, W, D).
    mask: (H, W) or (B, H, W) bool.
    per_image: options that take one value per image of a batch (a scalar is shared).
    **options: options shared by all images.

  Returns:
    (H, W) or (B, H, W) int32 labels.
  """
  embeddings = np.asarray(embeddings, np.float32)
  mask = np.asarray(mask, bool)
  if embeddings.ndim == 3:
    return _per_image(fn, embeddings[None], mask[None], per_image, **options)[0]
  if embeddings.ndim != 4:
    raise ValueError(f"embeddings must be (H, W, D) or (B, H, W, D), got {embeddings.shape}.")
  per_image = per_image or {}
  out = np.zeros(mask.shape, np.int32)
  for b in range(embeddings.shape[0]):
    fg = mask[b]
    if not fg.any():
      continue
    kwargs = {k: (v[b] if np.ndim(v) else v) for k, v in per_image.items()}
    out[b][fg] = fn(embeddings[b][fg], **kwargs, **options)
  return out


def _kmeans_points(points: np.ndarray, *, num_clusters: int, seed: int) -> np.ndarray:
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top

  k = min(int(num_clusters), len(points))
  if k <= 0:
    return np.zeros(len(points), np.int32)
  return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(points) + 1


def kmeans(
    embeddings: jax.Array | np.ndarray,
    mask: jax.Array | np.ndarray,
    *,
    num_clusters: int | Sequence[int] | np.ndarray,
    seed: int = 0,
) -> np.ndarray:
  """k-means with a known instance count (given, or predicted by a counting head).

  Args:
    embeddings: (H, W, D) or (B, H, W, D) float.
    mask: (H, W) or (B, H, W) bool foreground.
    num_clusters: instances per image: an int, or one per image of a batch (rounded from a
      counting head's output). 0 leaves the image unlabeled; more than the foreground pixels is
      clipped.
    seed: k-means initialisation seed.

  Returns:
    (H, W) or (B, H, W) int32 labels.
  """
  num_clusters = np.rint(np.asarray(num_clusters)).astype(np.int64)
  return _per_image(_kmeans_points, embeddings, mask, {"num_clusters": num_clusters}, seed=seed)


def _hdbscan_points(
    points: np.ndarray,
    *,
    min_cluster_size: int,
    min_samples: int | None,
    allow_single_cluster: bool,
    assign_noise: bool,
) -> np.ndarray:
  from sklearn.cluster import HDBSCAN  # pylint: disable=g-import-not-at-top

  if len(points) < max(2, min_cluster_size):
    return np.ones(len(points), np.int32)
  labels = HDBSCAN(
      min_cluster_size=min_cluster_size,
      min_samples=min_samples,
      allow_single_cluster=allow_single_cluster,
      copy=True,
  ).fit_predict(points)
  k = labels.max() + 1
  noise = labels < 0
  if k == 0:
    # Nothing dense enough to form a cluster: the foreground is one instance at best.
    return np.ones(len(points), np.int32) if assign_noise else np.zeros(len(points), np.int32)
  if assign_noise and noise.any():
    means = np.stack([points[labels == c].mean(axis=0) for c in range(k)])
    d2 = ((points[noise, None, :] - means[None]) ** 2).sum(-1)
    labels[noise] = d2.argmin(axis=1)
  return labels + 1


def hdbscan(
    embeddings: jax.Array | np.ndarray,
    mask: jax.Array | np.ndarray,
    *,
    min_cluster_size: int = 20,
    min_samples: int | None = None,
    allow_single_cluster: bool = True,
    assign_noise: bool = True,
) -> np.ndarray:
  """HDBSCAN (`sklearn.cluster.HDBSCAN`): no bandwidth and no count, only a minimum size.

  Its cost grows faster than linearly in the foreground size; for large images `mean_shift` is
  the practical choice.

  Args:
    embeddings: (H, W, D) or (B, H, W, D) float.
    mask: (H, W) or (B, H, W) bool foreground.
    min_cluster_size: smallest instance, in pixels.
    min_samples: HDBSCAN's density smoothing; default `min_cluster_size`.
    allow_single_cluster: let a single instance stand; without it HDBSCAN always splits or
      rejects an image that holds one instance.
    assign_noise: give pixels HDBSCAN calls noise the label of the nearest cluster mean instead
      of 0, so that every foreground pixel belongs to an instance.

  Returns:
    (H, W) or (B, H, W) int32 labels.
  """
  return _per_image(
      _hdbscan_points,
      embeddings,
      mask,
      min_cluster_size=min_cluster_size,
      min_samples=min_samples,
      allow_single_cluster=allow_single_cluster,
      assign_noise=assign_noise,
  )


def _sklearn_mean_shift_points(
    points: np.ndarray, *, bandwidth: float, bin_seeding: bool
) -> np.ndarray:
  from sklearn.cluster import MeanShift  # pylint: disable=g-import-not-at-top

  return MeanShift(bandwidth=bandwidth, bin_seeding=bin_seeding).fit_predict(points) + 1


def sklearn_mean_shift(
    embeddings: jax.Array | np.ndarray,
    mask: jax.Array | np.ndarray,
    *,
    bandwidth: float = 1.5,
    bin_seeding: bool = True,
) -> np.ndarray:
  """`sklearn.cluster.MeanShift` (flat kernel), the clustering of the reference implementations.

  Kept as the reference `mean_shift` is measured against: it takes seconds per image, and its flat
  kernel merges neighbouring instances whose means are about 2 * bandwidth apart.

  Args:
    embeddings: (H, W, D) or (B, H, W, D) float.
    mask: (H, W) or (B, H, W) bool foreground.
    bandwidth: flat kernel radius; 1.5 = delta_d as in the reference code.
    bin_seeding: seed from a grid of `bandwidth`-sized bins instead of every point.

  Returns:
    (H, W) or (B, H, W) int32 labels.
  """
  return _per_image(
      _sklearn_mean_shift_points, embeddings, mask, bandwidth=bandwidth, bin_seeding=bin_seeding
  )
