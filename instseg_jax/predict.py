"""predict: images on disk -> instance label PNGs (16-bit) and colour overlays.

Every image goes through `inference.Segmenter`, the path evaluate uses, and is read as the data
builders read it (`files.to_rgb8`: palette, CMYK and grey images become RGB, deeper images are
stretched between percentiles), so a model sees in prediction what it saw in training.

Every file is handled on its own: one that cannot be read is reported by name and the
others are still processed. Outputs are written atomically and only inside the output
folder. Pillow's decompression-bomb limit stays on, and its warning is treated as an error,
so an oversized image is refused before it is decoded.
"""

import collections
import os
import warnings

import ml_collections
import numpy as np
from PIL import Image
from tqdm import tqdm

from instseg_jax import evaluate
from instseg_jax import inference
from instseg_jax import tune
from instseg_jax import viz
from instseg_jax.data import transforms
from instseg_jax.data.builders import files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_inputs(path: str) -> tuple[list[str], list[str]]:
  """(image files, other files): `path` itself if a file, else the files directly inside it."""
  if os.path.isfile(path):
    return [path], []
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--input {path} is neither a file nor a folder")
  names = sorted(os.listdir(path))
  found = [os.path.join(path, name) for name in names if os.path.isfile(os.path.join(path, name))]
  images = [f for f in found if f.lower().endswith(IMAGE_SUFFIXES)]
  return images, [f for f in found if f not in images]


def read_rgb(path: str) -> np.ndarray:
  """Any image file as float32 (H, W, 3) in [0, 1], converted as the data builders convert it.

  Raises:
    files.DataError: unreadable, corrupt, of an unsupported mode, or a decompression bomb.
  """
  with warnings.catch_warnings():
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
      image, _ = files.open_image(path)
    except Image.DecompressionBombWarning as warning:
      raise files.DataError(f"{path}: {warning}") from None
  rgb = np.asarray(files.to_rgb8(image, path))
  return transforms.to_float({"image": rgb})["image"]


def output_stems(paths: list[str]) -> dict[str, str]:
  """A distinct output name for every input: its stem, or stem_ext where stems collide.

  Only the base name is used, so names derived from inputs never leave the output folder.
  """

  def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0].lstrip(".") or "image"

  counts = collections.Counter(stem(p) for p in paths)
  names = {}
  for path in paths:
    name = stem(path)
    if counts[name] > 1:
      name = f"{name}_{os.path.splitext(path)[1].lstrip('.').lower()}"
    names[path] = name
  return names


def predict(
    config: ml_collections.ConfigDict,
    workdir: str | None,
    input_path: str,
    output_dir: str,
    *,
    params=None,
) -> dict[str, str]:
  """Segments every image under input_path; returns {path: reason} for the files skipped."""
  if params is None:
    params = evaluate.load_params(config, workdir)
  config = tune.with_tuned(config, workdir)
  segmenter = inference.Segmenter(config, params)
  os.makedirs(output_dir, exist_ok=True)
  paths, others = list_inputs(input_path)
  failures = {path: "not an image file (by its name); skipped" for path in others}
  stems = output_stems(paths)
  written = 0
  for path in tqdm(paths, desc="predict", unit="image"):
    try:
      image = read_rgb(path)
    except files.DataError as error:
      failures[path] = f"cannot read image: {error}"
      continue
    labels = segmenter(image).labels
    viz.save_png(os.path.join(output_dir, f"{stems[path]}_labels.png"), labels.astype(np.uint16))
    viz.save_png(os.path.join(output_dir, f"{stems[path]}_overlay.png"), viz.overlay(image, labels))
    written += 1
  for path, reason in sorted(failures.items()):
    print(f"skipped {path}: {reason}", flush=True)
  print(
      f"wrote {written} label maps to {output_dir}"
      + (f"; skipped {len(failures)} files" if failures else ""),
      flush=True,
  )
  return failures
