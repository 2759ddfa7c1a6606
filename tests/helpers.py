"""What several test files share: configs of tiny data sets, writers of data sets on disk, and
readers of what a run wrote. The fixtures built on them are in conftest.py."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from PIL import Image

from configs import default
from configs import tiny
from instseg_jax import metric_writers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSB_SAMPLE = os.path.join(REPO, "third_party", "dsb2018_sample")
SAMPLE_COUNTS = {  # nuclei per image of the committed sample
    "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552": 27,
    "2bf594e9d06f78b4b79d7ffb395497a0a91126b6b0d710d7a9cee21f5c3bd177": 22,
    "4cbd6c37f3a55a538d759d440344c287cac66260d3047a83f429e63e7a0f7f20": 13,
    "a22b7882fa85b9f0fcef659a7b82bfcddf01710f9a7617a9e036e84ac6901841": 31,
}


# ---------------------------------------------------------------- configs


def tiny_config(data_dir: str, **train) -> ml_collections.ConfigDict:
  """configs/tiny.py reading its data from `data_dir`, with config.train overrides."""
  config = tiny.get_config()
  config.data.data_dir = data_dir
  for key, value in train.items():
    config.train[key] = value
  return config


def circles_config(**train) -> ml_collections.ConfigDict:
  """configs/tiny.py's data (circles "tiny": 32 train, 16 test images of 32x32) for the data
  tests: batches of 4, the first 10 test images evaluated, with config.train overrides."""
  config = tiny.get_config()
  config.data.num_eval_images = 10
  config.data.read_threads = 1
  config.train.batch_size = 4
  config.train.update(train)
  return config


def folder_config(
    name: str,
    manual_dir,
    data_dir,
    *,
    builder_config: str = "default",
    size: tuple[int, int] = (32, 32),
    batch_size: int = 2,
    **data,
) -> ml_collections.ConfigDict:
  """Data set `name` read from the folder `manual_dir`, with config.data overrides."""
  config = default.get_config()
  config.data.name = name
  config.data.builder_config = builder_config
  config.data.manual_dir = str(manual_dir)
  config.data.data_dir = str(data_dir)
  config.data.image_size = size
  config.data.eval_split = "validation"
  config.data.read_threads = 1
  config.data.num_eval_images = 0
  config.train.batch_size = batch_size
  config.data.update(data)
  return config


# ---------------------------------------------------------------- reading back


def records(builder, split: str) -> list[dict]:
  """Every stored record of `split`, in record order."""
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def text(value) -> str:
  """A stored string field (bytes in the records) as str."""
  return value.decode() if isinstance(value, bytes) else str(value)


def metric_rows(workdir) -> list[dict]:
  """The rows of a run's metrics.jsonl."""
  with open(os.path.join(workdir, metric_writers.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


# ---------------------------------------------------------------- writing data sets


def rectangles(
    height: int, width: int, count: int, rng: np.random.Generator, *, min_side: int = 8
) -> np.ndarray:
  """Instance map of `count` non-overlapping-ish rectangles, ids 1..count."""
  labels = np.zeros((height, width), np.int64)
  for k in range(1, count + 1):
    h = int(rng.integers(min_side, max(min_side + 1, height // 2)))
    w = int(rng.integers(min_side, max(min_side + 1, width // 2)))
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    labels[top : top + h, left : left + w] = k
  return labels


def id_colours(labels: np.ndarray) -> np.ndarray:
  """RGB image whose colour encodes the instance id (alignment checks)."""
  image = np.zeros(labels.shape + (3,), np.uint8)
  image[..., 0] = np.minimum(labels * 40, 255)
  image[..., 1] = 30
  image[..., 2] = np.where(labels > 0, 200, 0)
  return image


def save(array: np.ndarray, path: str, mode: str | None = None) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
  image.save(path)


def palette_png(labels: np.ndarray, path: str) -> None:
  """Labels as the indices of a palette PNG, as CVPPP and VOC store them."""
  image = Image.fromarray(labels.astype(np.uint8), "P")
  image.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path)


def write_instance_folder(folder: str, *, seed: int = 0) -> list[tuple[int, int]]:
  """Five images: RGB PNG + 16-bit PNG labels, 16-bit TIFF pairs, grey PNG.

  With the default holdout the train split holds img0, img1, img2 and img4 (2, 3, 4 and 6
  instances), the validation split img3 (5 instances).

  Returns:
    The (height, width) of img0..img4.
  """
  rng = np.random.default_rng(seed)
  shapes = [(40, 48), (36, 36), (48, 40), (40, 40), (44, 52)]
  for i, (h, w) in enumerate(shapes):
    labels = rectangles(h, w, 2 + i, rng)
    stem = f"img{i}"
    if i == 1:
      # 16-bit TIFF image and label with ids that are not consecutive.
      grey = (labels * 3000 + 500).astype(np.uint16)
      save(grey, f"{folder}/images/{stem}.tif")
      save((labels * 7).astype(np.uint16), f"{folder}/labels/{stem}.tif")
    elif i == 2:
      save((labels * 40).astype(np.uint8), f"{folder}/images/{stem}.png")
      save(labels.astype(np.uint8), f"{folder}/labels/{stem}.png")
    else:
      save(id_colours(labels), f"{folder}/images/{stem}.png")
      save(labels.astype(np.uint16), f"{folder}/labels/{stem}.png")
  return shapes


def corrupt(folder: str, stem: str = "img0") -> tuple[str, str]:
  """Overwrites an image of `write_instance_folder` with bytes no decoder reads.

  Returns:
    (the file's path below `folder`, what the error about it says).
  """
  with open(os.path.join(folder, "images", f"{stem}.png"), "wb") as f:
    f.write(b"this is not a PNG file at all")
  return f"images/{stem}.png", "cannot decode"


def write_voc(root: str, rng: np.random.Generator) -> None:
  """Three VOC2012 images (two train, one val) of three objects of classes 15, 7 and 12."""
  voc = os.path.join(root, "VOCdevkit", "VOC2012")
  stems = ["2007_000001", "2007_000002", "2008_000003"]
  for stem in stems:
    objects = rectangles(30, 36, 3, rng)
    classes = np.array([0, 15, 7, 12])[objects]
    # A void border around every object, as VOC draws them.
    edge = np.zeros_like(objects, bool)
    edge[:, 1:] |= objects[:, 1:] != objects[:, :-1]
    edge[1:] |= objects[1:] != objects[:-1]
    objects[edge], classes[edge] = 255, 255
    save(id_colours(np.where(edge, 0, objects)), f"{voc}/JPEGImages/{stem}.jpg")
    palette_png(objects, f"{voc}/SegmentationObject/{stem}.png")
    palette_png(classes, f"{voc}/SegmentationClass/{stem}.png")
  os.makedirs(f"{voc}/ImageSets/Segmentation")
  with open(f"{voc}/ImageSets/Segmentation/train.txt", "w") as f:
    f.write("2007_000001\n2008_000003\n")
  with open(f"{voc}/ImageSets/Segmentation/val.txt", "w") as f:
    f.write("2007_000002\n")
