"""predict: images on disk -> instance label PNGs (16-bit) and colour overlays."""

import os
from collections.abc import Iterator

import ml_collections
import numpy as np
from PIL import Image
from tqdm import tqdm

from instseg_jax import evaluate
from instseg_jax import models
from instseg_jax import viz

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_images(path: str) -> list[str]:
  """`path` itself if it is a file, else the image files directly inside it, sorted."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--input {path} is neither a file nor a folder")
  return sorted(
      os.path.join(path, name) for name in os.listdir(path)
      if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, name)))


def read_rgb(path: str) -> np.ndarray:
  """Any grey, RGB(A), 8- or 16-bit image as float32 (H,W,3) in [0,1]."""
  with Image.open(path) as image:
    image.load()
    array = np.asarray(image)
  if array.ndim == 3 and array.shape[-1] == 4:
    array = array[..., :3]
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
  return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(
      height, width) > max(pad_h, pad_w) else "edge")


def _output_stem(path: str) -> str:
  # Only the base name: names derived from inputs never leave --output.
  return os.path.splitext(os.path.basename(path))[0]


def predict(config: ml_collections.ConfigDict, workdir: str, input_path: str,
            output_dir: str, *, params=None) -> dict[str, str]:
  """Segments every image under input_path; returns {image path: error} for failures."""
  if params is None:
    params = evaluate.load_params(config, workdir)
  segment = evaluate.make_segmenter(config)
  stride = models.create_model(config).stride
  os.makedirs(output_dir, exist_ok=True)
  failures = {}
  paths = list_images(input_path)
  for path in tqdm(paths, desc="predict", unit="image"):
    try:
      image = read_rgb(path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
      failures[path] = f"cannot read image: {error}"
      print(f"skipped {path}: {failures[path]}", flush=True)
      continue
    height, width = image.shape[:2]
    labels, _ = segment(params, pad_to_multiple(image, stride)[None])
    labels = labels[0, :height, :width]
    stem = _output_stem(path)
    viz.save_png(os.path.join(output_dir, f"{stem}_labels.png"), labels.astype(np.uint16))
    viz.save_png(os.path.join(output_dir, f"{stem}_overlay.png"), viz.overlay(image, labels))
  print(f"wrote {len(paths) - len(failures)} label maps to {output_dir}"
        + (f"; {len(failures)} files skipped" if failures else ""), flush=True)
  return failures
