"""Reading raw image and label files for the folder-based builders.

Every problem with an input file is raised as one `DataError` whose message
starts with the file's path and says what is wrong with it, so a user can fix
or remove that one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import io
import os

import numpy as np
from PIL import Image

# Stored value of "ignore" in the uint16 instance and semantic maps. The
# pipeline turns it into config.data.ignore_label.
STORED_IGNORE = 65535

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")


class DataError(ValueError):
  """An input file or folder cannot be used; the message names it."""


def open_image(path: str) -> tuple[Image.Image, bytes]:
  """Opens and fully decodes an image file.

  Returns:
    The decoded image and the file's bytes.

  Raises:
    DataError: missing, unreadable, corrupt or truncated file.
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found")
  try:
    with open(path, "rb") as f:
      data = f.read()
    image = Image.open(io.BytesIO(data))
    # `open` reads only the header; `load` decodes every pixel, which is what
    # finds a truncated or corrupt body.
    image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(
        f"{path}: cannot decode the image ({type(e).__name__}: {e}); the file "
        "is corrupt, truncated or not an image"
    ) from None
  return image, data


def to_rgb8(image: Image.Image, path: str) -> Image.Image:
  """An 8-bit RGB version of any 8- or 16-bit greyscale or colour image.

  Images with more than 8 bits (16-bit or 32-bit integer, float) are
  stretched per image between their 1st and 99.8th percentile, the usual
  normalization of microscopy images, since their absolute range carries
  no meaning across files.

  Raises:
    DataError: a mode that cannot be turned into RGB.
  """
  mode = image.mode
  if mode == "RGB":
    return image
  if mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "LA", "L", "1"):
    return image.convert("RGB")
  if mode.startswith("I") or mode == "F":
    values = np.asarray(image).astype(np.float32)
    lo, hi = np.percentile(values, (1.0, 99.8))
    if hi <= lo:
      hi = lo + 1.0
    grey = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    grey = np.round(grey * 255.0).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
  raise DataError(f"{path}: image mode {mode!r} is not supported")


def encoded_rgb(image: Image.Image, data: bytes, path: str) -> bytes:
  """What to hand to tfds.features.Image: PNG or JPEG bytes of an RGB image.

  RGB PNG and JPEG files are kept byte for byte (no lossy JPEG re-encoding,
  no time spent compressing); anything else is converted and written as a
  PNG with light compression, several times faster to write than the
  default level for files about a fifth larger.
  """
  if image.mode == "RGB" and image.format in ("PNG", "JPEG"):
    return data
  buffer = io.BytesIO()
  to_rgb8(image, path).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


def read_label(path: str) -> np.ndarray:
  """A label map as int64 (H, W).

  Palette PNGs give their palette indices (VOC, CVPPP); 8-, 16- and 32-bit
  greyscale give their values; colour-coded RGB maps give one id per colour
  with black as 0.

  Raises:
    DataError: unreadable file, or a mode that holds no integer labels.
  """
  image, _ = open_image(path)
  mode = image.mode
  if mode in ("RGB", "RGBA"):
    rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours, ids = np.unique(codes, return_inverse=True)
    # Black is background: make it id 0 and keep the other colours 1..N.
    ids = ids.reshape(codes.shape)
    if colours[0] == 0:
      return ids.astype(np.int64)
    return ids.astype(np.int64) + 1
  if mode == "F":
    values = np.asarray(image)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
      raise DataError(f"{path}: float label map holds non-integer values")
    return values.astype(np.int64)
  if mode in ("P", "L", "1") or mode.startswith("I"):
    return np.asarray(image).astype(np.int64)
  raise DataError(f"{path}: label mode {mode!r} holds no integer labels")


def check_same_size(
    image: Image.Image, image_path: str, label: np.ndarray, label_path: str
) -> None:
  """Raises DataError when the label map and its image differ in size."""
  height, width = image.height, image.width
  if label.shape[:2] != (height, width):
    raise DataError(
        f"{label_path}: label is {label.shape[0]}x{label.shape[1]} (HxW) but "
        f"its image {image_path} is {height}x{width}"
    )


def compact_instances(
    instances: np.ndarray, path: str, *, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
  """Renumbers positive ids to 1..N and stores them as uint16.

  Args:
    instances: (H, W) int ids, 0 = background.
    path: the label file, for error messages.
    ignore: optional bool (H, W) of pixels stored as STORED_IGNORE.

  Returns:
    The uint16 map and N.

  Raises:
    DataError: negative ids, or more ids than uint16 can hold.
  """
  if instances.size and instances.min() < 0:
    raise DataError(f"{path}: negative instance id {instances.min()}")
  ids = np.unique(instances)
  ids = ids[ids > 0]
  if ids.size >= STORED_IGNORE:
    raise DataError(f"{path}: {ids.size} instances; at most 65534 are supported")
  out = np.zeros(instances.shape, np.uint16)
  positive = instances > 0
  out[positive] = np.searchsorted(ids, instances[positive]) + 1
  if ignore is not None:
    out[ignore] = STORED_IGNORE
    count = int(np.unique(out[(out > 0) & (out != STORED_IGNORE)]).size)
  else:
    count = int(ids.size)
  return out, count


def find_by_stem(folder: str, stem: str, suffixes: Sequence[str] = LABEL_SUFFIXES) -> str | None:
  """The first file `folder/stem<suffix>` that exists, or None."""
  for suffix in suffixes:
    for candidate in (suffix, suffix.upper()):
      path = os.path.join(folder, stem + candidate)
      if os.path.isfile(path):
        return path
  return None


def list_files(folder: str, suffixes: Iterable[str]) -> list[str]:
  """Sorted names of the files in `folder` whose suffix is one of `suffixes`."""
  suffixes = tuple(s.lower() for s in suffixes)
  return sorted(
      name
      for name in os.listdir(folder)
      if name.lower().endswith(suffixes)
      and not name.startswith(".")
      and os.path.isfile(os.path.join(folder, name))
  )
