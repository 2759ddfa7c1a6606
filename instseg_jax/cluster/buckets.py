"""Clustering inputs padded to a few sizes, so that images of many sizes share compiled programs.

The JAX mean shifts compile once per input shape, a second or more each on a CPU. They read an
image as its pixels in raster order and only the masked ones take part, so an (H, W) image
flattened to one row and extended with masked-out pixels up to a power of two is clustered
exactly as before: the foreground, its order, and hence every subsample, seed and label are the
same. All images with between 2^(k-1) and 2^k pixels on the network's grid then share one
program; a folder whose grids span 64x64 (2^12 pixels) to 1024x1024 (2^20) compiles at most 9.
"""

import numpy as np

# Smaller grids share the 64x64 program: below it compiling costs more than the padding.
MIN_PIXELS = 2**12


def bucket_pixels(num_pixels: int) -> int:
  """The padded pixel count of an image of `num_pixels`: the next power of two, >= MIN_PIXELS."""
  return max(MIN_PIXELS, 1 << max(0, num_pixels - 1).bit_length())


def pad_to_bucket(embeddings: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """One image as one row of `bucket_pixels` pixels, the added ones masked out.

  Args:
    embeddings: (H, W, D) float.
    mask: (H, W) bool foreground.

  Returns:
    embeddings (1, P, D) and mask (1, P), P = bucket_pixels(H * W); NumPy, so that the padding
    itself compiles nothing.
  """
  height, width, dim = embeddings.shape
  count = height * width
  extra = bucket_pixels(count) - count
  flat = np.pad(np.asarray(embeddings).reshape(count, dim), ((0, extra), (0, 0)))
  flat_mask = np.pad(np.asarray(mask, bool).reshape(count), (0, extra))
  return flat[None], flat_mask[None]


def unpad(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """(1, P) labels of `pad_to_bucket`'s row -> (H, W) labels of the image."""
  height, width = shape
  return np.asarray(labels).reshape(-1)[: height * width].reshape(height, width)
