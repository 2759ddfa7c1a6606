"""Geometric and photometric augmentation of one example, in NumPy.

An example is a dict with "image" float32 (H, W, 3) in [0, 1] and the label
maps "instances" and "semantic", int32 (H, W); other keys pass through
untouched. Every geometric transform moves image and labels with the same
pixel mapping (pixel centres at i + 0.5), the image interpolated bilinearly and
the labels by nearest neighbour so no new ids appear. Randomness comes only
from the `np.random.Generator` passed in, which keeps grain's per-element
seeding, and so resumption, exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

Example = dict[str, np.ndarray]

LABEL_KEYS = ("instances", "semantic")


def _with(example: Example, **updates: np.ndarray) -> Example:
  return {**example, **updates}


def _labels(example: Example) -> list[str]:
  return [k for k in LABEL_KEYS if k in example]


def _apply(example: Example, fn) -> Example:
  """Applies an array -> array function to the image and every label map."""
  updates = {k: np.ascontiguousarray(fn(example[k])) for k in _labels(example)}
  updates["image"] = np.ascontiguousarray(fn(example["image"]))
  return _with(example, **updates)


def random_flip(
    example: Example,
    rng: np.random.Generator,
    *,
    horizontal: bool = True,
    vertical: bool = True,
) -> Example:
  """Flips left-right and/or up-down, each with probability 1/2."""
  if horizontal and rng.random() < 0.5:
    example = _apply(example, lambda a: a[:, ::-1])
  if vertical and rng.random() < 0.5:
    example = _apply(example, lambda a: a[::-1])
  return example


def random_rot90(
    example: Example, rng: np.random.Generator, *, keep_shape: bool = False
) -> Example:
  """Rotates by a random multiple of 90 degrees.

  Args:
    example: the example.
    rng: the random generator.
    keep_shape: only rotate by 0 or 180 degrees when the image is not square,
      so that the shape never changes.
  """
  height, width = example["image"].shape[:2]
  if keep_shape and height != width:
    k = 2 * int(rng.integers(2))
  else:
    k = int(rng.integers(4))
  if k == 0:
    return example
  return _apply(example, lambda a: np.rot90(a, k, axes=(0, 1)))


def random_rotate(
    example: Example,
    rng: np.random.Generator,
    *,
    max_degrees: float,
    label_fill: int = 0,
    image_fill: float = 0.0,
) -> Example:
  """Rotates about the centre by an angle uniform in [-max, max] degrees.

  Pixels whose source falls outside the image get `label_fill` in the labels
  (background, or an ignore label the loss skips) and `image_fill` in the image.
  """
  if max_degrees <= 0:
    return example
  angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
  height, width = example["image"].shape[:2]
  cy, cx = height / 2.0, width / 2.0
  y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
  cos, sin = np.cos(angle), np.sin(angle)
  # Inverse map: for each output pixel, where it comes from in the input.
  src_y = cy + cos * (y - cy) - sin * (x - cx)
  src_x = cx + sin * (y - cy) + cos * (x - cx)
  return _warp(
      example, src_y, src_x, label_fill=label_fill, image_fill=image_fill
  )


def _warp(
    example: Example,
    src_y: np.ndarray,
    src_x: np.ndarray,
    *,
    label_fill: int,
    image_fill: float,
) -> Example:
  """Samples every map at continuous source coordinates (centres at i + 0.5)."""
  height, width = example["image"].shape[:2]
  # Nearest neighbour for labels: the pixel whose square contains the point.
  iy = np.floor(src_y).astype(np.int64)
  ix = np.floor(src_x).astype(np.int64)
  inside = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
  iy_c, ix_c = np.clip(iy, 0, height - 1), np.clip(ix, 0, width - 1)
  updates = {
      k: np.where(inside, example[k][iy_c, ix_c], label_fill).astype(
          example[k].dtype
      )
      for k in _labels(example)
  }

  # Bilinear for the image over a 1-pixel fill border, so the image fades to
  # the fill exactly where the labels switch to it.
  image = example["image"]
  padded = np.pad(
      image, ((1, 1), (1, 1), (0, 0)), constant_values=image_fill
  )
  fy = np.clip(src_y - 0.5 + 1.0, 0.0, height + 1.0)
  fx = np.clip(src_x - 0.5 + 1.0, 0.0, width + 1.0)
  y0 = np.minimum(np.floor(fy).astype(np.int64), height)
  x0 = np.minimum(np.floor(fx).astype(np.int64), width)
  wy = (fy - y0)[..., None].astype(np.float32)
  wx = (fx - x0)[..., None].astype(np.float32)
  top = padded[y0, x0] * (1 - wx) + padded[y0, x0 + 1] * wx
  bottom = padded[y0 + 1, x0] * (1 - wx) + padded[y0 + 1, x0 + 1] * wx
  updates["image"] = (top * (1 - wy) + bottom * wy).astype(image.dtype)
  return _with(example, **updates)


def resize(example: Example, *, size: Sequence[int]) -> Example:
  """Resizes to `size` = (H, W): image bilinear, antialiased; labels nearest."""
  out_h, out_w = int(size[0]), int(size[1])
  image = example["image"]
  height, width = image.shape[:2]
  if (height, width) == (out_h, out_w):
    return example
  # Pillow's bilinear widens its kernel when shrinking, which avoids the
  # aliasing a plain 2x2 bilinear tap would give on large inputs (CVPPP, COCO).
  channels = [
      np.asarray(
          Image.fromarray(
              np.ascontiguousarray(image[..., c], dtype=np.float32)
          ).resize(
              (out_w, out_h), Image.Resampling.BILINEAR
          )
      )
      for c in range(image.shape[-1])
  ]
  updates = {"image": np.stack(channels, axis=-1).astype(image.dtype)}
  # Same centre convention as Pillow: output centre j + 0.5 maps to source
  # (j + 0.5) * scale, and the label is that of the pixel containing it.
  rows = ((np.arange(out_h) + 0.5) * height / out_h).astype(int)
  cols = ((np.arange(out_w) + 0.5) * width / out_w).astype(int)
  rows, cols = np.minimum(rows, height - 1), np.minimum(cols, width - 1)
  for k in _labels(example):
    updates[k] = example[k][rows[:, None], cols[None, :]]
  return _with(example, **updates)


def crop_or_pad(
    example: Example,
    *,
    top: int,
    left: int,
    height: int,
    width: int,
    label_fill: int = 0,
    image_fill: float = 0.0,
) -> Example:
  """Cuts the window [top, top + height) x [left, left + width).

  The window may reach outside the image; that part is filled.
  """
  in_h, in_w = example["image"].shape[:2]
  pad_top, pad_left = max(0, -top), max(0, -left)
  pad_bottom = max(0, top + height - in_h)
  pad_right = max(0, left + width - in_w)

  def cut(a: np.ndarray, fill) -> np.ndarray:
    pads = [(pad_top, pad_bottom), (pad_left, pad_right)]
    pads += [(0, 0)] * (a.ndim - 2)
    a = np.pad(a, pads, constant_values=fill)
    t, l = top + pad_top, left + pad_left
    return a[t:t + height, l:l + width]

  updates = {k: cut(example[k], label_fill) for k in _labels(example)}
  updates["image"] = cut(example["image"], image_fill)
  return _with(example, **updates)


def random_scale_crop(
    example: Example,
    rng: np.random.Generator,
    *,
    size: Sequence[int],
    scale_range: tuple[float, float] = (0.75, 1.33),
    label_fill: int = 0,
    image_fill: float = 0.0,
) -> Example:
  """Zooms by a random factor, cuts a random window and resizes it to `size`.

  Zoom 1 is a plain resize of the whole image to `size`; zoom z > 1 shows a
  random window 1/z of the image's height and width; z < 1 shows the whole
  image shrunk, at a random place, in a filled frame.

  Args:
    example: the example.
    rng: the random generator.
    size: (H, W) of the output.
    scale_range: (min, max) zoom, drawn log-uniformly.
    label_fill: label of pixels outside the image.
    image_fill: image value of pixels outside the image.
  """
  lo, hi = scale_range
  zoom = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
  in_h, in_w = example["image"].shape[:2]
  win_h = max(1, int(round(in_h / zoom)))
  win_w = max(1, int(round(in_w / zoom)))
  # Uniform over all placements, whether the window is inside the image
  # (zoom in) or the image inside the window (zoom out).
  top = int(rng.integers(min(0, in_h - win_h), max(0, in_h - win_h) + 1))
  left = int(rng.integers(min(0, in_w - win_w), max(0, in_w - win_w) + 1))
  example = crop_or_pad(
      example,
      top=top,
      left=left,
      height=win_h,
      width=win_w,
      label_fill=label_fill,
      image_fill=image_fill,
  )
  return resize(example, size=size)


def color_jitter(
    example: Example,
    rng: np.random.Generator,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
) -> Example:
  """Shifts brightness by U(-b, b) and scales contrast by U(1-c, 1+c)."""
  image = example["image"]
  delta = rng.uniform(-brightness, brightness)
  factor = rng.uniform(1.0 - contrast, 1.0 + contrast)
  mean = image.mean()
  image = (image - mean) * factor + mean + delta
  return _with(example, image=np.clip(image, 0.0, 1.0).astype(np.float32))


def pad_to(
    example: Example,
    *,
    shape: Sequence[int],
    label_fill: int = 0,
    image_fill: float = 0.0,
) -> Example:
  """Pads at the bottom and right up to `shape` = (H, W).

  Raises:
    ValueError: the image is larger than `shape`.
  """
  height, width = example["image"].shape[:2]
  if height > shape[0] or width > shape[1]:
    raise ValueError(
        f"Image of size {(height, width)} does not fit in {tuple(shape)}."
    )
  return crop_or_pad(
      example,
      top=0,
      left=0,
      height=int(shape[0]),
      width=int(shape[1]),
      label_fill=label_fill,
      image_fill=image_fill,
  )


def relabel_consecutive(instances: np.ndarray) -> tuple[np.ndarray, int]:
  """Renumbers positive instance ids to 1..N in increasing order.

  Args:
    instances: (H, W) integer ids, 0 = background; negative ids (an ignore
      label) are kept as they are.

  Returns:
    The renumbered int32 map and N.
  """
  ids = np.unique(instances)
  ids = ids[ids > 0]
  lookup = np.searchsorted(ids, instances) + 1
  relabelled = np.where(instances > 0, lookup, instances).astype(np.int32)
  return relabelled, int(ids.size)


def augment(
    example: Example,
    rng: np.random.Generator,
    *,
    size: Sequence[int],
    max_degrees: float = 15.0,
    scale_range: tuple[float, float] = (0.75, 1.33),
    brightness: float = 0.2,
    contrast: float = 0.2,
    label_fill: int = 0,
) -> Example:
  """The training augmentation: rot90, flips, scale-crop, rotation, jitter.

  The cheap index-only transforms run first on the full image; the scale-crop
  brings it to `size` before the per-pixel rotation so that costs O(size).
  """
  square = size[0] == size[1]
  example = random_rot90(example, rng, keep_shape=not square)
  example = random_flip(example, rng)
  example = random_scale_crop(
      example, rng, size=size, scale_range=scale_range, label_fill=label_fill
  )
  example = random_rotate(
      example, rng, max_degrees=max_degrees, label_fill=label_fill
  )
  return color_jitter(example, rng, brightness=brightness, contrast=contrast)
