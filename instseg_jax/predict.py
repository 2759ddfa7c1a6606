"""predict: images on disk -> instance label PNGs (16-bit) and colour overlays.

Every file is handled on its own: one that cannot be read is reported by name and the
others are still processed. Outputs are written atomically and only inside the output
folder. Pillow's decompression-bomb limit stays on, and its warning is treated as an error,
so an oversized image is refused before it is decoded.
"""

import os
import warnings

import ml_collections
import numpy as np
from PIL import Image
from tqdm import tqdm

from instseg_jax import evaluate
from instseg_jax import models
from instseg_jax import viz

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_inputs(path: str) -> tuple[list[str], list[str]]:
  """(image files, other files): `path` itself if a file, else the files directly inside it."""
  if os.path.isfile(path):
    return [path], []
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--input {path} is neither a file nor a folder")
  files = sorted(os.path.join(path, name) for name in os.listdir(path)
                 if os.path.isfile(os.path.join(path, name)))
  images = [f for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
  return images, [f for f in files if f not in images]


def read_rgb(path: str) -> np.ndarray:
  """Any grey, RGB(A), 8- or 16-bit image as float32 (H,W,3) in [0,1]."""
  with warnings.catch_warnings():
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    with Image.open(path) as image:
      image.load()
      array = np.asarray(image)
  if array.ndim == 3 and array.shape[-1] == 4:
    array = array[..., :3]
  if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
    array = array[..., 0]
  if array.ndim == 2:
    array = np.repeat(array[..., None], 3, axis=-1)
  if array.ndim != 3 or array.shape[-1] != 3:
    raise ValueError(f"unsupported image shape {array.shape}")
  if array.dtype == np.uint8:
    return array.astype(np.float32) / 255.0
  array = array.astype(np.float32)
  # 16-bit and float microscopy images: stretch to their own range.
  low, high = float(array.min()), float(array.max())
  return (array - low) / max(high - low, 1e-6)


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
  height, width = image.shape[:2]
  pad_h, pad_w = -height % multiple, -width % multiple
  # Reflection needs more pixels than it pads; tiny images repeat their edge instead.
  mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "edge"
  return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
  """Shrinks an image whose longer side exceeds max_side (0 = never)."""
  height, width = image.shape[:2]
  if not max_side or max(height, width) <= max_side:
    return image
  scale = max_side / max(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  channels = [np.asarray(Image.fromarray(image[..., c]).resize(size, Image.BILINEAR))
              for c in range(3)]
  return np.stack(channels, axis=-1)


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
  if labels.shape == (height, width):
    return labels
  resized = Image.fromarray(labels.astype(np.int32)).resize((width, height), Image.NEAREST)
  return np.asarray(resized).astype(labels.dtype)


def output_stem(path: str) -> str:
  # Only the base name: names derived from inputs never leave the output folder.
  stem = os.path.splitext(os.path.basename(path))[0]
  return stem.lstrip(".") or "image"


def predict(config: ml_collections.ConfigDict, workdir: str | None, input_path: str,
            output_dir: str, *, params=None) -> dict[str, str]:
  """Segments every image under input_path; returns {path: reason} for the files skipped."""
  if params is None:
    params = evaluate.load_params(config, workdir)
  segment = evaluate.make_segmenter(config)
  stride = models.create_model(config).stride
  max_side = config.get("predict", {}).get("max_side", 2048)
  os.makedirs(output_dir, exist_ok=True)
  paths, others = list_inputs(input_path)
  failures = {path: "not an image file (by its name); skipped" for path in others}
  for path in tqdm(paths, desc="predict", unit="image"):
    try:
      image = read_rgb(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
      failures[path] = f"cannot read image: {error}"
      continue
    height, width = image.shape[:2]
    small = fit_within(image, max_side)
    labels, _ = segment(params, pad_to_multiple(small, stride)[None])
    labels = resize_labels(labels[0, :small.shape[0], :small.shape[1]], height, width)
    stem = output_stem(path)
    viz.save_png(os.path.join(output_dir, f"{stem}_labels.png"), labels.astype(np.uint16))
    viz.save_png(os.path.join(output_dir, f"{stem}_overlay.png"), viz.overlay(image, labels))
  for path, reason in sorted(failures.items()):
    print(f"skipped {path}: {reason}", flush=True)
  print(f"wrote {len(paths) - len(failures) + len(others)} label maps to {output_dir}"
        + (f"; skipped {len(failures)} files" if failures else ""), flush=True)
  return failures
