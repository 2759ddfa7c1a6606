"""Geometric and photometric augmentation of one example, in NumPy.

An example is a dict with "image" (H, W, 3), float32 in [0, 1] or uint8 as
decoded (`resize` and `to_float` turn it into float32), and the label maps
"instances" and "semantic", int32 (H, W) (negative values are an ignore label
and move with the pixels like any other); other keys pass through
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
from scipy import ndimage

Example = dict[str, np.ndarray]

LABEL_KEYS = ("instances", "semantic")

# How an image of any size becomes data.image_size (see `base_window`).
SIZE_MODES = ("stretch", "fit", "native")


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
  return _warp(example, src_y, src_x, label_fill=label_fill, image_fill=image_fill)


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
      k: np.where(inside, example[k][iy_c, ix_c], label_fill).astype(example[k].dtype)
      for k in _labels(example)
  }

  # Bilinear for the image over a 1-pixel fill border, so the image fades to
  # the fill exactly where the labels switch to it.
  image = example["image"]
  padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), constant_values=image_fill)
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


def to_float(example: Example) -> Example:
  """A uint8 image becomes float32 in [0, 1]; a float image is kept."""
  image = example["image"]
  if image.dtype == np.uint8:
    return _with(example, image=image.astype(np.float32) * np.float32(1.0 / 255.0))
  return example


INTENSITY_NORMALIZATIONS = ("none", "percentile", "nuclei", "nuclei_local")

# "nuclei_local": the side (pixels) of the window whose brightest level stretches each pixel, about
# four nucleus diameters, and the level below which a window is not stretched further (so that
# empty background is not blown up into nuclei).
_LOCAL_WINDOW = 64
_LOCAL_FLOOR = 0.25
# "nuclei_local": an image whose blue and red differ by less than this everywhere is grey.
_GREY_TOLERANCE = 0.02


def normalize_intensity(image: np.ndarray, kind: str) -> np.ndarray:
  """One image's intensities mapped to a common range, from that image alone.

  Applied to the whole image as stored, both before training crops and before
  inference, so that a crop and the whole image see the same mapping.

  Args:
    image: (H, W, 3) uint8 or float in [0, 1].
    kind: "none" (kept, as float32); "percentile" (each channel stretched
      between its 1st and 99.8th percentile); "nuclei" (the grey level
      stretched that way and inverted when the background is bright, so that
      stained nuclei on white and fluorescent nuclei on black both come out
      bright on dark; grey in all three channels); "nuclei_local" ("nuclei"'s
      grey in channel 0, the same grey stretched by its neighbourhood's
      brightest level in channel 1, so that dim nuclei far from bright ones
      come out bright, and the stain's hue, blue minus red stretched, in
      channel 2, 0 for grey images).

  Returns:
    float32 (H, W, 3) in [0, 1].

  Raises:
    ValueError: unknown kind.
  """
  if kind not in INTENSITY_NORMALIZATIONS:
    raise ValueError(
        f"intensity normalization {kind!r}; choose one of " f"{INTENSITY_NORMALIZATIONS}"
    )
  image = to_float({"image": image})["image"].astype(np.float32)
  if kind == "none":
    return image
  if kind == "percentile":
    return _stretch(image).astype(np.float32)
  grey = _stretch(image.mean(axis=-1, keepdims=True))
  if _bright_background(grey):
    grey = 1.0 - grey
  if kind == "nuclei":
    return np.repeat(grey, 3, axis=-1).astype(np.float32)
  channels = [grey, _local_stretch(grey[..., 0])[..., None], _stain_hue(image)[..., None]]
  return np.concatenate(channels, axis=-1).astype(np.float32)


IMAGE_KINDS = ("fluorescence", "stained", "brightfield")


def image_kind(image: np.ndarray) -> str:
  """Which kind of microscopy image (H, W, 3) is, by the checks "nuclei_local" makes: "stained"
  (blue and red differ: stained tissue), "brightfield" (grey on a bright background) or
  "fluorescence" (grey on a dark one)."""
  image = to_float({"image": image})["image"]
  if not _is_grey(image[..., 2:3] - image[..., 0:1]):
    return "stained"
  grey = _stretch(image.mean(axis=-1, keepdims=True))
  return "brightfield" if _bright_background(grey) else "fluorescence"


def _bright_background(grey: np.ndarray) -> bool:
  """Whether most of the stretched grey (H, W, 1) is bright: nuclei darker than their surround."""
  return bool(np.median(grey[::4, ::4]) > 0.5)


def _is_grey(blue_minus_red: np.ndarray) -> bool:
  return bool(np.abs(blue_minus_red[::4, ::4]).max() < _GREY_TOLERANCE)


def _stretch(image: np.ndarray) -> np.ndarray:
  """Each channel of (H, W, C) stretched between its 1st and 99.8th percentiles, into [0, 1].

  In the percentiles' float64: the cast to float32 comes last, after any inversion.
  """
  # Every 4th pixel of every 4th row: the same percentiles to within a grey
  # level, at a 16th of the cost on the data loader's few cores.
  sample = image[::4, ::4].reshape(-1, image.shape[-1])
  lo, hi = np.percentile(sample, (1.0, 99.8), axis=0)
  return np.clip((image - lo) / np.maximum(hi - lo, 1e-3), 0.0, 1.0)


def _local_stretch(grey: np.ndarray) -> np.ndarray:
  """(H, W) in [0, 1] divided by its neighbourhood's brightest level (at least _LOCAL_FLOOR)."""
  # The window's maximum on a grid 8 times coarser, smoothed and brought back: a level that
  # varies slowly, at a 64th of the cost of a full-resolution filter.
  step = 8
  h, w = grey.shape
  padded = np.pad(grey, ((0, -h % step), (0, -w % step)), mode="edge")
  coarse = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step).max((1, 3))
  coarse = ndimage.maximum_filter(coarse, size=_LOCAL_WINDOW // step, mode="nearest")
  coarse = ndimage.uniform_filter(coarse, size=_LOCAL_WINDOW // step, mode="nearest")
  level = np.repeat(np.repeat(coarse, step, axis=0), step, axis=1)[:h, :w]
  return np.clip(grey / np.maximum(level, _LOCAL_FLOOR), 0.0, 1.0)


def _stain_hue(image: np.ndarray) -> np.ndarray:
  """Blue minus red of (H, W, 3), stretched (hematoxylin's blue-purple nuclei high, eosin's pink
  low); zeros for a grey image."""
  difference = image[..., 2:3] - image[..., 0:1]
  if _is_grey(difference):
    return np.zeros(image.shape[:2])
  return _stretch(difference)[..., 0]


def resize(example: Example, *, size: Sequence[int]) -> Example:
  """Resizes to `size` = (H, W): image bilinear, antialiased; labels nearest.

  The resized image is float32 (a uint8 image is scaled to [0, 1]).
  """
  out_h, out_w = int(size[0]), int(size[1])
  image = example["image"]
  height, width = image.shape[:2]
  if (height, width) == (out_h, out_w):
    return example
  # Pillow's bilinear widens its kernel when shrinking, which avoids the
  # aliasing a plain 2x2 bilinear tap would give on large inputs (CVPPP, COCO).
  if image.dtype == np.uint8 and image.shape[-1] == 3:
    # One pass over packed RGB bytes is several times faster than three float
    # planes; the output is float anyway.
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (out_w, out_h), Image.Resampling.BILINEAR
    )
    resized = np.asarray(resized, np.float32) * np.float32(1.0 / 255.0)
  else:
    resized = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(
                    (out_w, out_h), Image.Resampling.BILINEAR
                )
            )
            for c in range(image.shape[-1])
        ],
        axis=-1,
    ).astype(np.float32)
  updates = {"image": resized}
  for k in _labels(example):
    updates[k] = resize_labels(example[k], size=(out_h, out_w))
  return _with(example, **updates)


def resize_labels(labels: np.ndarray, *, size: Sequence[int]) -> np.ndarray:
  """Resizes an (H, W) label map to `size` by nearest neighbour: no new ids appear.

  Same centre convention as Pillow's image resize: output centre j + 0.5 maps
  to source (j + 0.5) * scale, and the label is that of the pixel containing it.
  """
  height, width = labels.shape[:2]
  out_h, out_w = int(size[0]), int(size[1])
  rows = np.minimum(((np.arange(out_h) + 0.5) * height / out_h).astype(int), height - 1)
  cols = np.minimum(((np.arange(out_w) + 0.5) * width / out_w).astype(int), width - 1)
  return labels[rows[:, None], cols[None, :]]


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
    y, x = top + pad_top, left + pad_left
    return a[y : y + height, x : x + width]

  updates = {k: cut(example[k], label_fill) for k in _labels(example)}
  updates["image"] = cut(example["image"], image_fill)
  return _with(example, **updates)


def base_window(in_shape: Sequence[int], size: Sequence[int], mode: str) -> tuple[float, float]:
  """The (height, width) of the source window shown at `size` at zoom 1.

  Args:
    in_shape: (H, W) of the image.
    size: (H, W) of the output.
    mode: "stretch": the whole image, each axis scaled on its own (aspect
      ratio not kept); "fit": the whole image scaled by one factor so that it
      fits, the rest padded; "native": a window of `size` pixels at the
      image's own scale (cropped, or padded where the image is smaller).

  Raises:
    ValueError: an unknown mode.
  """
  in_h, in_w = float(in_shape[0]), float(in_shape[1])
  out_h, out_w = float(size[0]), float(size[1])
  if mode == "stretch":
    return in_h, in_w
  if mode == "fit":
    scale = max(in_h / out_h, in_w / out_w)
    return out_h * scale, out_w * scale
  if mode == "native":
    return out_h, out_w
  raise ValueError(f"size mode {mode!r} is not one of {SIZE_MODES}")


def random_scale_crop(
    example: Example,
    rng: np.random.Generator,
    *,
    size: Sequence[int],
    scale_range: tuple[float, float] = (0.75, 1.33),
    mode: str = "stretch",
    label_fill: int = 0,
    image_fill: float = 0.0,
    foreground_crop: float = 0.0,
) -> Example:
  """Zooms by a random factor, cuts a random window and resizes it to `size`.

  Zoom 1 shows the `base_window` of `mode` (in "stretch" mode: the whole
  image resized to `size`); zoom z > 1 shows a random window 1/z of that in
  height and width; z < 1 a window z times larger, the image at a random
  place in it where it is the smaller of the two.

  Args:
    example: the example.
    rng: the random generator.
    size: (H, W) of the output.
    scale_range: (min, max) zoom, drawn log-uniformly.
    mode: one of SIZE_MODES, see `base_window`.
    label_fill: label of pixels outside the image.
    image_fill: image value of pixels outside the image.
    foreground_crop: probability that the window is centred on a random instance pixel
      rather than placed uniformly: where objects fill a small part of a large image (a
      rosette in its pot), most uniform windows would show background only. 0 draws no
      number, so older random streams stay the same.
  """
  lo, hi = scale_range
  zoom = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
  in_h, in_w = example["image"].shape[:2]
  base_h, base_w = base_window((in_h, in_w), size, mode)
  win_h = max(1, int(round(base_h / zoom)))
  win_w = max(1, int(round(base_w / zoom)))
  # Uniform over all placements, whether the window is inside the image
  # (zoom in) or the image inside the window (zoom out).
  top_range = (min(0, in_h - win_h), max(0, in_h - win_h))
  left_range = (min(0, in_w - win_w), max(0, in_w - win_w))
  rows, cols = (), ()
  if foreground_crop > 0 and rng.random() < foreground_crop:
    rows, cols = np.nonzero(example["instances"] > 0)
  if len(rows):
    pick = int(rng.integers(len(rows)))
    top = int(np.clip(rows[pick] - win_h // 2, *top_range))
    left = int(np.clip(cols[pick] - win_w // 2, *left_range))
  else:
    top = int(rng.integers(top_range[0], top_range[1] + 1))
    left = int(rng.integers(left_range[0], left_range[1] + 1))
  return _window_resized(
      example, top, left, win_h, win_w, size=size, label_fill=label_fill, image_fill=image_fill
  )


def _window_resized(
    example: Example,
    top: int,
    left: int,
    height: int,
    width: int,
    *,
    size: Sequence[int],
    label_fill: int,
    image_fill: float,
) -> Example:
  """The window at (top, left) of the given size, padded where it leaves the image, resized."""
  example = crop_or_pad(
      example,
      top=top,
      left=left,
      height=height,
      width=width,
      label_fill=label_fill,
      image_fill=image_fill,
  )
  return resize(example, size=size)


def fixed_window(
    example: Example,
    *,
    size: Sequence[int],
    mode: str = "stretch",
    label_fill: int = 0,
    image_fill: float = 0.0,
) -> Example:
  """The deterministic counterpart of `random_scale_crop`, for evaluation.

  "stretch" resizes the whole image; "fit" scales it to fit and pads at the
  bottom and right; "native" takes the central `size` window, padded evenly
  where the image is smaller.
  """
  in_h, in_w = example["image"].shape[:2]
  if mode == "stretch":
    return resize(example, size=size)
  win_h, win_w = (max(1, int(round(v))) for v in base_window((in_h, in_w), size, mode))
  top = left = 0
  if mode == "native":
    top, left = (in_h - win_h) // 2, (in_w - win_w) // 2
  return _window_resized(
      example, top, left, win_h, win_w, size=size, label_fill=label_fill, image_fill=image_fill
  )


def color_jitter(
    example: Example,
    rng: np.random.Generator,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.0,
    gamma: float = 0.0,
) -> Example:
  """Random gamma, brightness, contrast and saturation.

  Intensities in [0, 1] are first raised to exp(U(-g, g)) (0 and 1 stay put,
  the ratio of dim to bright objects changes); then brightness is shifted by
  U(-b, b), contrast scaled by U(1 - c, 1 + c) about the image mean, saturation
  by U(1 - s, 1 + s) about each pixel's grey value. gamma=0 and saturation=0
  draw no number, so older random streams stay the same.
  """
  image = to_float(example)["image"]
  if gamma > 0:
    image = np.power(np.clip(image, 0.0, 1.0), np.exp(rng.uniform(-gamma, gamma)))
  delta = rng.uniform(-brightness, brightness)
  factor = rng.uniform(1.0 - contrast, 1.0 + contrast)
  mean = image.mean()
  image = (image - mean) * factor + mean + delta
  if saturation > 0:
    grey = image.mean(axis=-1, keepdims=True)
    image = grey + (image - grey) * rng.uniform(1.0 - saturation, 1.0 + saturation)
  return _with(example, image=np.clip(image, 0.0, 1.0).astype(np.float32))


def renumber_instances(instances: np.ndarray) -> tuple[np.ndarray, int]:
  """Renumbers positive instance ids to 1..N in increasing order.

  Unlike `metrics.relabel_consecutive`, which counts every nonzero id as an
  object, negative ids here are the ignore label and stay as they are.

  Args:
    instances: (H, W) integer ids, 0 = background; negative ids (an ignore
      label) are kept as they are.

  Returns:
    The renumbered int32 map and N.
  """
  instances = np.asarray(instances)
  positive = instances > 0
  top = int(instances.max(initial=0))
  if top < (1 << 20):
    # A presence table and its running count: linear, unlike np.unique's sort.
    present = np.zeros(top + 1, np.int32)
    present[instances[positive]] = 1
    lookup = np.cumsum(present, dtype=np.int32)
    relabelled = np.where(positive, lookup[np.where(positive, instances, 0)], instances)
    return relabelled.astype(np.int32), int(lookup[-1])
  ids = np.unique(instances[positive])
  lookup = np.searchsorted(ids, instances) + 1
  relabelled = np.where(positive, lookup, instances).astype(np.int32)
  return relabelled, int(ids.size)


def augment(
    example: Example,
    rng: np.random.Generator,
    *,
    size: Sequence[int],
    mode: str = "stretch",
    max_degrees: float = 15.0,
    scale_range: tuple[float, float] = (0.75, 1.33),
    hflip: bool = True,
    vflip: bool = True,
    rot90: bool = True,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.0,
    gamma: float = 0.0,
    label_fill: int = 0,
    foreground_crop: float = 0.0,
) -> Example:
  """The training augmentation: scale-crop, rot90, flips, rotation, jitter.

  The scale-crop runs first and brings any image to `size`, so every later
  transform costs O(size) whatever the size of the stored image; flipping or
  rotating by 90 degrees after a random crop gives the same distribution as
  before it.

  Args:
    example: the decoded example (uint8 or float image).
    rng: the random generator.
    size: (H, W) of the output.
    mode: how the image maps to `size` at zoom 1, see `base_window`.
    max_degrees: small-angle rotation drawn from [-x, x]; 0 = off.
    scale_range: (min, max) zoom of the scale-crop.
    hflip: random left-right flips.
    vflip: random up-down flips.
    rot90: random multiples of 90 degrees (only 0 or 180 when `size` is not
      square).
    brightness: see `color_jitter`.
    contrast: see `color_jitter`.
    saturation: see `color_jitter`.
    gamma: see `color_jitter`.
    label_fill: label of pixels from outside the image.
    foreground_crop: see `random_scale_crop`.
  """
  example = random_scale_crop(
      example,
      rng,
      size=size,
      scale_range=scale_range,
      mode=mode,
      label_fill=label_fill,
      foreground_crop=foreground_crop,
  )
  example = to_float(example)
  if rot90:
    example = random_rot90(example, rng, keep_shape=True)
  example = random_flip(example, rng, horizontal=hflip, vertical=vflip)
  example = random_rotate(example, rng, max_degrees=max_degrees, label_fill=label_fill)
  return color_jitter(
      example,
      rng,
      brightness=brightness,
      contrast=contrast,
      saturation=saturation,
      gamma=gamma,
  )
