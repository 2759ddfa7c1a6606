"""Tests of the folder builders (cvppp, instance_folder, voc, coco, cityscapes).

Each test writes a tiny data set in the layout of the real one, builds it
with TFDS (array_record, no TensorFlow) and reads it back through the grain
pipeline. Real data under ../shared/data is used when present.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from PIL import Image
from pycocotools import mask as mask_lib
import pytest

from configs import default
from instseg_jax.data import builders
from instseg_jax.data import inspect as inspect_lib
from instseg_jax.data import pipeline
from instseg_jax.data.builders import files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSB_SAMPLE = os.path.join(REPO, "third_party", "dsb2018_sample")
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
SAMPLE_COUNTS = {  # nuclei per image of the committed sample
    "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552": 27,
    "2bf594e9d06f78b4b79d7ffb395497a0a91126b6b0d710d7a9cee21f5c3bd177": 22,
    "4cbd6c37f3a55a538d759d440344c287cac66260d3047a83f429e63e7a0f7f20": 13,
    "a22b7882fa85b9f0fcef659a7b82bfcddf01710f9a7617a9e036e84ac6901841": 31,
}


def _config(name, manual_dir, data_dir, *, builder_config="default",
            size=(32, 32), batch_size=2, **data):
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


def _records(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def _rectangles(height, width, count, rng, *, min_side=8):
  """Instance map of `count` non-overlapping-ish rectangles, ids 1..count."""
  labels = np.zeros((height, width), np.int64)
  for k in range(1, count + 1):
    h = int(rng.integers(min_side, max(min_side + 1, height // 2)))
    w = int(rng.integers(min_side, max(min_side + 1, width // 2)))
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    labels[top:top + h, left:left + w] = k
  return labels


def _id_colours(labels):
  """RGB image whose colour encodes the instance id (alignment checks)."""
  image = np.zeros(labels.shape + (3,), np.uint8)
  image[..., 0] = np.minimum(labels * 40, 255)
  image[..., 1] = 30
  image[..., 2] = np.where(labels > 0, 200, 0)
  return image


def _save(array, path, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
  image.save(path)


def _palette_png(labels, path):
  image = Image.fromarray(labels.astype(np.uint8), "P")
  image.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path)


def _write_cvppp_folder(folder, count, *, first=1, labelled=True, seed=0,
                        size=(44, 40)):
  rng = np.random.default_rng(seed)
  for i in range(first, first + count):
    labels = _rectangles(*size, 3 + i % 3, rng)
    rgba = np.concatenate(
        [_id_colours(labels), np.full(size + (1,), 255, np.uint8)], -1)
    _save(rgba, os.path.join(folder, f"plant{i:03d}_rgb.png"), "RGBA")
    _palette_png((labels > 0).astype(np.uint8),
                 os.path.join(folder, f"plant{i:03d}_fg.png"))
    if labelled:
      _palette_png(labels, os.path.join(folder, f"plant{i:03d}_label.png"))


def _write_instance_folder(folder, *, seed=0):
  """Five images: RGB PNG + 16-bit PNG labels, 16-bit TIFF pairs, grey PNG."""
  rng = np.random.default_rng(seed)
  shapes = [(40, 48), (36, 36), (48, 40), (40, 40), (44, 52)]
  for i, (h, w) in enumerate(shapes):
    labels = _rectangles(h, w, 2 + i, rng)
    stem = f"img{i}"
    if i == 1:
      # 16-bit TIFF image and label with ids that are not consecutive.
      grey = (labels * 3000 + 500).astype(np.uint16)
      _save(grey, f"{folder}/images/{stem}.tif")
      _save((labels * 7).astype(np.uint16), f"{folder}/labels/{stem}.tif")
    elif i == 2:
      _save((labels * 40).astype(np.uint8), f"{folder}/images/{stem}.png")
      _save(labels.astype(np.uint8), f"{folder}/labels/{stem}.png")
    else:
      _save(_id_colours(labels), f"{folder}/images/{stem}.png")
      _save(labels.astype(np.uint16), f"{folder}/labels/{stem}.png")
  return shapes


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("raw")
  shapes = _write_instance_folder(str(root / "cells"))
  data_dir = tmp_path_factory.mktemp("tfds")
  return {"manual_dir": str(root / "cells"), "data_dir": str(data_dir),
          "shapes": shapes}


# ---------------------------------------------------------------- cvppp


def test_cvppp_flat_folder(tmp_path):
  _write_cvppp_folder(str(tmp_path / "a1_subset"), 6)
  config = _config("cvppp", tmp_path / "a1_subset", tmp_path / "tfds",
                   builder_config="A1")
  builder = pipeline.prepare(config, data_dir=None)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      "train": 5, "validation": 1}
  records = _records(builder, "train") + _records(builder, "validation")
  assert sorted(_text(r["id"]) for r in records) == [
      f"plant{i:03d}" for i in range(1, 7)]
  for r in records:
    assert r["image"].shape == (44, 40, 3) and r["image"].dtype == np.uint8
    assert r["instances"].dtype == np.uint16
    assert r["semantic"].dtype == np.uint16
    np.testing.assert_array_equal(r["semantic"], r["instances"] > 0)
    assert _text(r["file_name"]) == _text(r["id"]) + "_rgb.png"
  # The alpha channel is dropped, the colour kept.
  counts = pipeline.split_stats(builder, "train")["num_instances"]
  assert counts == [int(r["instances"].max()) for r in
                    _records(builder, "train")]

  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (2, 32, 32, 3)
  assert batch["instances"].dtype == np.int32
  example = next(pipeline.eval_examples(config, data_dir=None))
  assert example["image"].shape == (32, 32, 3)
  assert example["id"] in {_text(r["id"]) for r in records}


def test_cvppp_challenge_layout_with_subsets_and_test(tmp_path):
  root = tmp_path / "CVPPP2017"
  _write_cvppp_folder(str(root / "training" / "A1"), 4)
  _write_cvppp_folder(str(root / "training" / "A2"), 3, seed=1, size=(30, 34))
  _write_cvppp_folder(str(root / "testing" / "A1"), 2, first=50,
                      labelled=False, seed=2)
  a1 = pipeline.prepare(
      _config("cvppp", root, tmp_path / "tfds", builder_config="A1"),
      data_dir=None)
  splits = {s: i.num_examples for s, i in a1.info.splits.items()}
  assert splits == {"train": 3, "validation": 1, "test": 2}
  test = _records(a1, "test")
  assert [_text(r["id"]) for r in test] == [
      "testing/A1/plant050", "testing/A1/plant051"]
  for r in test:  # Unlabelled: no instances, the fg mask as semantic.
    assert r["instances"].max() == 0 and r["semantic"].max() == 1
  assert all(_text(r["id"]).startswith("training/A1/")
             for r in _records(a1, "train"))

  both = pipeline.prepare(
      _config("cvppp", root, tmp_path / "tfds", builder_config="all"),
      data_dir=None)
  assert both.info.splits["train"].num_examples + both.info.splits[
      "validation"].num_examples == 7
  sizes = {tuple(r["image"].shape) for r in _records(both, "train")
           + _records(both, "validation")}
  assert sizes == {(44, 40, 3), (30, 34, 3)}  # Native sizes, not resized.

  with pytest.raises(builders.DataError, match=r"A3"):
    pipeline.prepare(
        _config("cvppp", root, tmp_path / "tfds", builder_config="A3"),
        data_dir=None)


# ------------------------------------------------------ instance_folder


def test_instance_folder_png_tiff_8_and_16_bit(folder_data):
  config = _config("instance_folder", folder_data["manual_dir"],
                   folder_data["data_dir"])
  builder = pipeline.prepare(config, data_dir=None)
  records = {_text(r["id"]): r for split in ("train", "validation")
             for r in _records(builder, split)}
  assert sorted(records) == [f"img{i}" for i in range(5)]
  for i, shape in enumerate(folder_data["shapes"]):
    r = records[f"img{i}"]
    assert r["image"].shape == shape + (3,)
    ids = np.unique(r["instances"])
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # Renumbered.
  assert _text(records["img1"]["file_name"]) == "images/img1.tif"
  # The 16-bit TIFF (values 500..) is stretched to the full 8-bit range.
  assert records["img1"]["image"].min() == 0
  assert records["img1"]["image"].max() == 255
  # Every instance of the 16-bit image keeps one grey level.
  image, labels = records["img1"]["image"][..., 0], records["img1"][
      "instances"]
  for k in range(1, labels.max() + 1):
    assert np.ptp(image[labels == k]) == 0


def test_split_folders_are_used_when_present(tmp_path):
  for split in ("train", "val"):
    _write_instance_folder(str(tmp_path / "raw" / split), seed=len(split))
  os.makedirs(tmp_path / "raw" / "test" / "images")
  shutil.copy(tmp_path / "raw" / "train" / "images" / "img0.png",
              tmp_path / "raw" / "test" / "images" / "x.png")
  builder = pipeline.prepare(
      _config("instance_folder", tmp_path / "raw", tmp_path / "tfds"),
      data_dir=None)
  splits = {s: i.num_examples for s, i in builder.info.splits.items()}
  assert splits == {"train": 5, "validation": 5, "test": 1}
  assert _text(_records(builder, "test")[0]["id"]) == "test/x"


def test_committed_dsb2018_sample(tmp_path):
  config = _config("instance_folder", DSB_SAMPLE, tmp_path, size=(64, 64),
                   validation_fraction=0.25)
  builder = pipeline.prepare(config, data_dir=None)
  records = _records(builder, "train") + _records(builder, "validation")
  assert len(_records(builder, "validation")) == 1
  assert {_text(r["id"]): int(r["instances"].max()) for r in records} == (
      SAMPLE_COUNTS)
  shapes = {tuple(r["image"].shape[:2]) for r in records}
  assert shapes == {(256, 256), (256, 320)}
  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (2, 64, 64, 3)
  assert batch["image"].dtype == np.float32
  assert (batch["num_instances"] > 0).all()


# ---------------------------------------------------------------- voc


def _write_voc(root, rng):
  voc = os.path.join(root, "VOCdevkit", "VOC2012")
  stems = ["2007_000001", "2007_000002", "2008_000003"]
  for stem in stems:
    objects = _rectangles(30, 36, 3, rng)
    classes = np.array([0, 15, 7, 12])[objects]
    # A void border around every object, as VOC draws them.
    edge = np.zeros_like(objects, bool)
    edge[:, 1:] |= objects[:, 1:] != objects[:, :-1]
    edge[1:] |= objects[1:] != objects[:-1]
    objects[edge], classes[edge] = 255, 255
    _save(_id_colours(np.where(edge, 0, objects)),
          f"{voc}/JPEGImages/{stem}.jpg")
    _palette_png(objects, f"{voc}/SegmentationObject/{stem}.png")
    _palette_png(classes, f"{voc}/SegmentationClass/{stem}.png")
  os.makedirs(f"{voc}/ImageSets/Segmentation")
  with open(f"{voc}/ImageSets/Segmentation/train.txt", "w") as f:
    f.write("2007_000001\n2008_000003\n")
  with open(f"{voc}/ImageSets/Segmentation/val.txt", "w") as f:
    f.write("2007_000002\n")


def test_voc(tmp_path):
  _write_voc(str(tmp_path / "raw"), np.random.default_rng(0))
  config = _config("voc", tmp_path / "raw", tmp_path / "tfds",
                   builder_config="2012", num_classes=21)
  builder = pipeline.prepare(config, data_dir=None)
  assert [_text(r["id"]) for r in _records(builder, "train")] == [
      "2007_000001", "2008_000003"]
  record = _records(builder, "validation")[0]
  assert record["image"].shape == (30, 36, 3)
  void = record["instances"] == files.STORED_IGNORE
  assert void.any()
  np.testing.assert_array_equal(record["semantic"] == files.STORED_IGNORE,
                                void)
  assert set(np.unique(record["semantic"][~void])) <= {0, 15, 7, 12}
  assert builder.info.metadata["class_names"][15] == "person"

  config.data.augment = False
  example = next(pipeline.eval_examples(config, data_dir=None,
                                        full_resolution=True))
  # The ignore value reaches the batch as config.data.ignore_label.
  np.testing.assert_array_equal(example["full_instances"] == -1, void)
  assert (example["semantic"] == -1).any()
  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["instances"].min() == -1 and batch["semantic"].min() == -1


# ---------------------------------------------------------------- coco


def _write_coco(root):
  def image(split, image_id, height, width):
    name = f"{image_id:012d}.jpg"
    _save(np.full((height, width, 3), 90, np.uint8),
          os.path.join(root, f"{split}2017", name))
    return {"id": image_id, "file_name": name, "height": height,
            "width": width}

  crowd = np.zeros((30, 40), np.uint8, order="F")
  crowd[20:28, 2:12] = 1
  rle = mask_lib.encode(crowd)
  rle["counts"] = rle["counts"].decode()
  categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                {"id": 18, "name": "dog"}]
  train = {
      "images": [image("train", 7, 30, 40), image("train", 9, 24, 24)],
      "categories": categories,
      "annotations": [
          # A large car with a small dog on top of it.
          {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0,
           "area": 400.0, "bbox": [0, 0, 20, 20],
           "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]},
          {"id": 2, "image_id": 7, "category_id": 18, "iscrowd": 0,
           "area": 36.0, "bbox": [5, 5, 6, 6],
           "segmentation": [[5, 5, 11, 5, 11, 11, 5, 11]]},
          {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1,
           "area": 80.0, "bbox": [2, 20, 10, 8], "segmentation": rle},
          {"id": 4, "image_id": 9, "category_id": 1, "iscrowd": 0,
           "area": 100.0, "bbox": [2, 2, 10, 10],
           "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
      ],
  }
  val = {"images": [image("val", 11, 20, 28)], "categories": categories,
         "annotations": []}
  os.makedirs(os.path.join(root, "annotations"))
  for name, content in (("train", train), ("val", val)):
    with open(os.path.join(root, "annotations",
                           f"instances_{name}2017.json"), "w") as f:
      json.dump(content, f)


# pycocotools itself warns about NumPy 2's copy keyword.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco(tmp_path):
  _write_coco(str(tmp_path / "coco"))
  config = _config("coco", tmp_path / "coco", tmp_path / "tfds",
                   builder_config="2017", num_classes=4)
  builder = pipeline.prepare(config, data_dir=None)
  assert builder.info.metadata["class_names"] == [
      "background", "person", "car", "dog"]
  first, second = _records(builder, "train")
  assert _text(first["id"]) == "000000000007"
  assert first["image"].shape == (30, 40, 3)
  instances, semantic = first["instances"], first["semantic"]
  # Painted largest first: the dog (class 3) stays visible on the car (2).
  assert semantic[8, 8] == 3 and semantic[15, 15] == 2
  assert instances[8, 8] != instances[15, 15]
  assert instances[8, 8] > 0 and instances[15, 15] > 0
  # The crowd is ignored as an instance but keeps its class.
  assert instances[24, 6] == files.STORED_IGNORE and semantic[24, 6] == 1
  assert pipeline.split_stats(builder, "train")["num_instances"] == [2, 1]
  assert second["semantic"].max() == 1
  empty = _records(builder, "validation")[0]
  assert empty["instances"].max() == 0  # Kept: an image without objects.

  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (2, 32, 32, 3)
  assert batch["semantic"].max() <= 3 and batch["semantic"].min() >= -1
  example = next(pipeline.eval_examples(config, data_dir=None))
  assert example["id"] == "000000000011" and example["num_instances"] == 0


# ----------------------------------------------------------- cityscapes


def test_cityscapes(tmp_path):
  root = tmp_path / "cityscapes"
  label_ids = np.full((16, 32), 7, np.uint8)  # road
  instance_ids = label_ids.astype(np.uint16).copy()
  label_ids[0:6, 0:8] = 26
  instance_ids[0:6, 0:8] = 26000  # car 0
  label_ids[0:6, 8:16] = 26
  instance_ids[0:6, 8:16] = 26001  # car 1
  label_ids[8:12, 0:8] = 26
  instance_ids[8:12, 0:8] = 26  # a group of cars
  label_ids[8:12, 8:12] = 24
  instance_ids[8:12, 8:12] = 24005  # a person
  label_ids[12:16, 0:8] = 29
  instance_ids[12:16, 0:8] = 29000  # caravan: ignored
  label_ids[12:16, 24:32] = 1  # ego vehicle: ignored
  instance_ids[12:16, 24:32] = 1
  for split in ("train", "val"):
    stem = f"{split}city_000000_000019"
    _save(np.full((16, 32, 3), 60, np.uint8),
          str(root / "leftImg8bit" / split / "city" /
              f"{stem}_leftImg8bit.png"))
    gt = root / "gtFine" / split / "city"
    _save(instance_ids, str(gt / f"{stem}_gtFine_instanceIds.png"))
    _save(label_ids, str(gt / f"{stem}_gtFine_labelIds.png"))
  config = _config("cityscapes", root, tmp_path / "tfds",
                   builder_config="fine", num_classes=9)
  builder = pipeline.prepare(config, data_dir=None)
  record = _records(builder, "validation")[0]
  assert _text(record["id"]) == "val/city/valcity_000000_000019"
  instances, semantic = record["instances"], record["semantic"]
  ignore = files.STORED_IGNORE
  assert semantic[0, 0] == 3 and semantic[9, 9] == 1 and semantic[15, 20] == 0
  assert instances[0, 0] != instances[0, 10]
  assert len({instances[0, 0], instances[0, 10], instances[9, 9]}) == 3
  assert instances[9, 2] == ignore and semantic[9, 2] == 3  # group of cars
  assert instances[13, 2] == ignore and semantic[13, 2] == ignore  # caravan
  assert semantic[13, 28] == ignore  # ego vehicle
  assert pipeline.split_stats(builder, "train")["num_instances"] == [3]

  config.train.batch_size = 1
  config.data.image_size = (16, 32)
  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (1, 16, 32, 3)
  example = next(pipeline.eval_examples(config, data_dir=None))
  np.testing.assert_array_equal(
      example["semantic"],
      np.where(semantic == ignore, -1, semantic.astype(int)))
  assert example["num_instances"] == 3


# -------------------------------------------- augmentation and size modes


def test_augmentation_keeps_image_and_labels_aligned(folder_data):
  """Through the whole pipeline, the colour of each instance's interior
  still encodes the source id of that instance."""
  config = _config("instance_folder", folder_data["manual_dir"],
                   folder_data["data_dir"], size=(40, 40), batch_size=2,
                   aug_brightness=0.0, aug_contrast=0.0, aug_max_degrees=20.0,
                   aug_scale_range=(0.7, 1.4))
  builder = pipeline.prepare(config, data_dir=None)
  grey = {i for i, r in enumerate(_records(builder, "train"))
          if _text(r["id"]) in ("img1", "img2")}  # They encode no id.
  iterator = pipeline.train_iterator(config, data_dir=None)
  checked = 0
  for _ in range(8):
    batch = next(iterator)
    for image, labels, index in zip(batch["image"], batch["instances"],
                                    batch["index"]):
      if index in grey:
        continue
      # Pixels two away from any other label (or the frame) are interpolated
      # from their own instance only.
      interior = labels.copy()
      for dy in range(-2, 3):
        for dx in range(-2, 3):
          interior[np.roll(labels, (dy, dx), (0, 1)) != labels] = 0
      interior[:2], interior[-2:] = 0, 0
      interior[:, :2], interior[:, -2:] = 0, 0
      # Relabelling keeps the order of ids, so source ids increase with ids.
      decoded = []
      for k in range(1, labels.max() + 1):
        red = image[..., 0][interior == k] * 255 / 40
        if red.size:
          assert np.ptp(red) < 0.3, (k, red)
          decoded.append(red.mean())
          checked += 1
      assert np.all(np.diff(decoded) > 0.5)
  assert checked > 10


def test_size_modes_and_ignore_padding(folder_data):
  config = _config("instance_folder", folder_data["manual_dir"],
                   folder_data["data_dir"], size=(64, 64), size_mode="fit",
                   ignore_padding=True)
  by_id = {e["id"]: e for e in pipeline.eval_examples(
      config, data_dir=None, split="train")}
  by_id.update({e["id"]: e for e in pipeline.eval_examples(
      config, data_dir=None, split="validation")})
  fit = by_id["img4"]  # 44x52 scaled by 64/52 into 54x64, padded below.
  assert fit["image"].shape == (64, 64, 3)
  assert (fit["instances"][56:] == -1).all()
  assert (fit["semantic"][56:] == -1).all()
  assert (fit["instances"][:52] >= 0).all()

  config.data.size_mode = "native"
  config.data.ignore_padding = False
  native = {e["id"]: e for split in ("train", "validation")
            for e in pipeline.eval_examples(config, data_dir=None,
                                            split=split)}["img4"]
  # The 44x52 image sits unscaled in the middle of the 64x64 frame.
  assert (native["image"][:10].max() == 0) and native["image"][10:54].max() > 0
  assert native["instances"].min() == 0
  config.data.size_mode = "sideways"
  with pytest.raises(ValueError, match="sideways"):
    next(pipeline.eval_examples(config, data_dir=None))


def test_ignore_label_must_be_negative(folder_data):
  config = _config("instance_folder", folder_data["manual_dir"],
                   folder_data["data_dir"], ignore_label=255)
  with pytest.raises(ValueError, match="ignore_label=255 must be negative"):
    next(pipeline.eval_examples(config, data_dir=None))


def test_restored_iterator_continues_exactly_on_folder_data(folder_data):
  # A subset (images over max_instances left out) and full augmentation.
  config = _config("instance_folder", folder_data["manual_dir"],
                   folder_data["data_dir"], max_instances=5, batch_size=1,
                   skip_bad_examples=True, aug_saturation=0.3)
  iterator = pipeline.train_iterator(config, data_dir=None)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(4)]
  resumed = pipeline.train_iterator(config, data_dir=None)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


# ---------------------------------------------------------------- caching


def test_manual_dirs_get_separate_caches(tmp_path):
  _write_instance_folder(str(tmp_path / "one"), seed=1)
  _write_instance_folder(str(tmp_path / "two"), seed=2)
  os.symlink(tmp_path / "one", tmp_path / "alias")
  data_dir = tmp_path / "tfds"
  built = {}
  for name in ("one", "two", "alias"):
    builder = pipeline.prepare(
        _config("instance_folder", tmp_path / name, data_dir), data_dir=None)
    built[name] = builder
  assert built["one"].data_path != built["two"].data_path
  assert built["one"].data_path == built["alias"].data_path  # Same folder.
  first = {n: _records(b, "train")[0]["instances"] for n, b in built.items()}
  assert not np.array_equal(first["one"], first["two"])
  # Another holdout fraction is another split, so another cache.
  other = pipeline.prepare(
      _config("instance_folder", tmp_path / "one", data_dir,
              validation_fraction=0.4), data_dir=None)
  assert other.data_path != built["one"].data_path
  assert other.info.splits["validation"].num_examples == 2


def test_missing_manual_dir_explains_download():
  config = _config("voc", "", "/nonexistent")
  with pytest.raises(builders.DataError,
                     match="(?s)'voc'.*manual_dir=DIR.*VOCtrainval"):
    pipeline.prepare(config, data_dir=None)


# ------------------------------------------------------------ bad input


# img0 is in the train split, img3 alone in validation.
def _corrupt(folder, stem="img0"):
  with open(os.path.join(folder, "images", f"{stem}.png"), "wb") as f:
    f.write(b"this is not a PNG file at all")
  return f"images/{stem}.png", "cannot decode"


def _truncated(folder):
  path = os.path.join(folder, "images", "img0.png")
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) * 2 // 3])
  return "images/img0.png", "cannot decode"


def _wrong_size(folder):
  path = os.path.join(folder, "labels", "img0.png")
  _save(np.zeros((10, 12), np.uint16), path)
  return "labels/img0.png", "label is 10x12 .* is 40x48"


def _missing_label(folder):
  os.remove(os.path.join(folder, "labels", "img0.png"))
  return "images/img0.png", "label file missing"


@pytest.mark.parametrize("damage", [_corrupt, _truncated, _wrong_size,
                                    _missing_label])
def test_bad_file_is_named_or_skipped(tmp_path, damage):
  folder = str(tmp_path / "raw")
  _write_instance_folder(folder)
  name, what = damage(folder)
  config = _config("instance_folder", folder, tmp_path / "tfds")
  with pytest.raises(builders.DataError, match=what) as error:
    pipeline.prepare(config, data_dir=None)
  assert os.path.join(os.path.realpath(folder), name) in str(error.value)
  assert "\n" not in str(error.value)

  config.data.skip_bad_examples = True
  builder = pipeline.prepare(config, data_dir=None)
  kept = [_text(r["id"]) for split in ("train", "validation")
          for r in _records(builder, split)]
  assert sorted(kept) == ["img1", "img2", "img3", "img4"]
  skipped = sum(len(pipeline.split_stats(builder, s)["skipped"])
                for s in ("train", "validation"))
  assert skipped == 1
  result = inspect_lib.inspect(config, str(tmp_path / "work"), num_panels=0,
                               verbose=False)
  assert sum(s["skipped"] for s in result["splits"].values()) == 1


def test_split_left_empty_by_bad_files(tmp_path):
  folder = str(tmp_path / "raw")
  _write_instance_folder(folder)
  _corrupt(folder, "img3")
  config = _config("instance_folder", folder, tmp_path / "tfds",
                   skip_bad_examples=True)
  with pytest.raises(builders.DataError,
                     match=r"all 1 examples of split 'validation' are bad, "
                     r"e.g. .*img3.png: cannot decode"):
    pipeline.prepare(config, data_dir=None)


def test_empty_folders(tmp_path):
  os.makedirs(tmp_path / "empty" / "images")
  os.makedirs(tmp_path / "empty" / "labels")
  with pytest.raises(builders.DataError, match=r"empty/images: no image"):
    pipeline.prepare(_config("instance_folder", tmp_path / "empty",
                             tmp_path / "tfds"), data_dir=None)
  os.makedirs(tmp_path / "nothing")
  with pytest.raises(builders.DataError, match=r"nothing: no \*_rgb.png"):
    pipeline.prepare(_config("cvppp", tmp_path / "nothing",
                             tmp_path / "tfds"), data_dir=None)
  with pytest.raises(builders.DataError, match="folder not found"):
    pipeline.prepare(_config("cvppp", tmp_path / "absent",
                             tmp_path / "tfds"), data_dir=None)


def test_too_many_instances_named_or_skipped(folder_data, tmp_path):
  # img4 has 6 instances, img3 5; the others fewer.
  config = _config("instance_folder", folder_data["manual_dir"],
                   folder_data["data_dir"], max_instances=4, batch_size=1)
  builder = pipeline.prepare(config, data_dir=None)
  counts = pipeline.split_stats(builder, "train")["num_instances"]
  over = sum(c > 4 for c in counts)
  assert over >= 1
  with pytest.raises(builders.DataError,
                     match=r"more instances than config.data.max_instances=4"
                     r".*images/img\d\.png \(\d\)") as error:
    pipeline.train_iterator(config, data_dir=None)
  assert "skip_bad_examples=True" in str(error.value)

  config.data.skip_bad_examples = True
  iterator = pipeline.train_iterator(config, data_dir=None)
  seen = {int(next(iterator)["index"][0]) for _ in range(12)}
  usable = {i for i, c in enumerate(counts) if c <= 4}
  assert seen == usable
  result = inspect_lib.inspect(config, str(tmp_path), num_panels=0,
                               verbose=False)
  assert result["splits"]["train"]["instances"]["over_max_instances"] == over


# ----------------------------------------------------- interrupted build


def test_build_failing_half_way_leaves_nothing_complete(tmp_path,
                                                        monkeypatch):
  folder = str(tmp_path / "raw")
  _write_instance_folder(folder)
  config = _config("instance_folder", folder, tmp_path / "tfds")
  calls = []
  original = builders.InstanceFolder.read

  def failing_read(self, source):
    calls.append(source.id)
    if len(calls) == 3:
      raise RuntimeError("interrupted")
    return original(self, source)

  monkeypatch.setattr(builders.InstanceFolder, "read", failing_read)
  with pytest.raises(RuntimeError, match="interrupted"):
    pipeline.prepare(config, data_dir=None)
  builder = builders.get_builder(
      "instance_folder", data_dir=str(tmp_path / "tfds"), manual_dir=folder)
  assert not builder.is_prepared()
  assert not os.path.exists(builder.data_path)
  monkeypatch.setattr(builders.InstanceFolder, "read", original)
  rebuilt = pipeline.prepare(config, data_dir=None)
  assert rebuilt.info.splits["train"].num_examples == 4


def test_killed_build_leaves_nothing_complete(tmp_path):
  folder = str(tmp_path / "raw")
  _write_instance_folder(folder)
  marker = tmp_path / "started"
  script = textwrap.dedent(f"""
      import os, time
      from instseg_jax.data import builders
      original = builders.InstanceFolder.read
      def slow_read(self, source):
        example = original(self, source)
        open({str(marker)!r}, "a").close()
        time.sleep(0.5)
        return example
      builders.InstanceFolder.read = slow_read
      builder = builders.get_builder(
          "instance_folder", data_dir={str(tmp_path / "tfds")!r},
          manual_dir={folder!r})
      builder.download_and_prepare(file_format="array_record")
  """)
  process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 60
    while not marker.exists() and process.poll() is None:
      assert time.time() < deadline
      time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
  finally:
    process.wait()
  assert process.returncode == -signal.SIGKILL
  builder = builders.get_builder(
      "instance_folder", data_dir=str(tmp_path / "tfds"), manual_dir=folder)
  assert not builder.is_prepared()
  # What the killed run left is an "incomplete.*" folder, never the data path.
  leftovers = os.listdir(os.path.dirname(builder.data_path))
  assert all(name.startswith("incomplete") for name in leftovers), leftovers
  config = _config("instance_folder", folder, tmp_path / "tfds")
  assert pipeline.prepare(config, data_dir=None).is_prepared()


# ----------------------------------------------------------------- inspect


def test_inspect_writes_stats_and_panels(tmp_path, capsys):
  config = _config("instance_folder", DSB_SAMPLE, tmp_path / "tfds",
                   size=(64, 64), validation_fraction=0.25)
  config.eval.num_panels = 3
  result = inspect_lib.inspect(config, str(tmp_path / "work"))
  assert result["splits"]["train"]["examples"] == 3
  assert result["splits"]["validation"]["examples"] == 1
  total = sum(s["instances"]["total"] for s in result["splits"].values())
  assert total == sum(SAMPLE_COUNTS.values())
  with open(tmp_path / "work" / "inspect.json") as f:
    assert json.load(f)["splits"] == result["splits"]
  sheet = np.asarray(Image.open(tmp_path / "work" / "inspect.png"))
  assert sheet.shape == (3 * 64 + 2 * 4, 3 * 64 + 2 * 4, 3)
  out = capsys.readouterr().out
  assert "train: 3 images" in out and "inspect.png" in out


# --------------------------------------------------------------- real data


def _shared(name):
  path = os.path.join(SHARED_DATA, name)
  if not os.path.isdir(path):
    pytest.skip(f"real data {path} not present")
  return path


@pytest.fixture(scope="module")
def shared_tfds(tmp_path_factory):
  return str(tmp_path_factory.mktemp("shared_tfds"))


def test_real_cvppp_a1(shared_tfds):
  config = _config("cvppp", _shared("cvppp_a1_train"), shared_tfds,
                   builder_config="A1", size=(64, 64))
  builder = pipeline.prepare(config, data_dir=None)
  assert builder.info.splits["train"].num_examples == 80
  assert builder.info.splits["validation"].num_examples == 20
  counts = [c for s in ("train", "validation")
            for c in pipeline.split_stats(builder, s)["num_instances"]]
  assert min(counts) == 11 and max(counts) == 20
  with open(os.path.join(_shared("cvppp_a1_train"), "A1.csv")) as f:
    expected = {line.split(",")[0].replace("_rgb.png", ""):
                int(line.split(",")[1]) for line in f if line.strip()}
  record = builder.as_data_source(split="validation")[0]
  assert record["image"].shape == (530, 500, 3)
  assert int(record["instances"].max()) == expected[_text(record["id"])]
  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (2, 64, 64, 3)


def test_real_dsb2018(shared_tfds):
  from configs import dsb2018  # pylint: disable=g-import-not-at-top
  config = dsb2018.get_config()
  config.data.manual_dir = _shared("dsb2018")
  config.data.data_dir = shared_tfds
  config.data.image_size = (128, 128)
  config.train.batch_size = 4
  builder = pipeline.prepare(config, data_dir=None)
  assert builder.info.splits["train"].num_examples == 451
  assert builder.info.splits["validation"].num_examples == 113
  stats = [pipeline.split_stats(builder, s) for s in ("train", "validation")]
  counts = [c for s in stats for c in s["num_instances"]]
  assert sum(counts) == 23_987 and max(counts) == 375  # As in the label files.
  sizes = {tuple(size) for s in stats for size in s["image_sizes"]}
  assert (1040, 1388) in sizes and (256, 256) in sizes
  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (4, 128, 128, 3)
  assert batch["instances"].max() > 0


# ---------------------------------------------------------------- what a run checks before it starts


def _write_small_folder(folder, count, *, seed=0):
  """`count` 32x32 RGB images with 16-bit instance labels: enough for a batch of 8."""
  rng = np.random.default_rng(seed)
  for i in range(count):
    labels = _rectangles(32, 32, 2, rng)
    _save(_id_colours(labels), f"{folder}/images/img{i}.png")
    _save(labels.astype(np.uint16), f"{folder}/labels/img{i}.png")


def test_missing_eval_split_stops_the_run_before_the_first_step(tmp_path):
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from instseg_jax import checkpoint, train, validate  # pylint: disable=g-import-not-at-top
  _write_small_folder(str(tmp_path / "raw"), 8)
  config = tiny.get_config()
  # configs/dsb2018.py's data on a folder without split folders, nothing held out.
  config.data.name = "instance_folder"
  config.data.builder_config = "default"
  config.data.manual_dir = str(tmp_path / "raw")
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.eval_split = "validation"
  config.data.validation_fraction = 0.0
  workdir = str(tmp_path / "run")
  with pytest.raises(validate.ConfigError,
                     match=r"config.data.eval_split='validation' is not a split .*"
                     r"\['train'\].*validation_fraction"):
    train.train_and_evaluate(config, workdir)
  assert checkpoint.Checkpointer(workdir).latest_step() is None


def test_num_classes_below_the_data_classes_is_refused(tmp_path):
  from instseg_jax import train, validate  # pylint: disable=g-import-not-at-top
  _write_voc(str(tmp_path / "raw"), np.random.default_rng(0))
  config = _config("voc", tmp_path / "raw", tmp_path / "tfds",
                   builder_config="2012", num_classes=2)
  # VOC's classes 7, 12 and 15 would be left out of the semantic loss, silently.
  with pytest.raises(validate.ConfigError,
                     match=r"num_classes=2 is below the 21 classes .*num_classes=21"):
    train.prepare_data(config, process_index=0)
  config.data.num_classes = 21
  train.prepare_data(config, process_index=0)


def test_changed_files_get_a_new_cache(tmp_path):
  folder = str(tmp_path / "raw")
  _write_instance_folder(folder)
  config = _config("instance_folder", folder, tmp_path / "tfds")
  before = pipeline.prepare(config, data_dir=None)
  assert pipeline.prepare(config, data_dir=None).data_path == before.data_path
  old = {_text(r["id"]): r["instances"] for r in _records(before, "train")}
  stem = sorted(old)[0]
  label = os.path.join(folder, "labels", f"{stem}.png")
  _save(np.zeros(old[stem].shape, np.uint16), label)
  after = pipeline.prepare(config, data_dir=None)
  assert after.data_path != before.data_path
  new = {_text(r["id"]): r["instances"] for r in _records(after, "train")}
  assert not new[stem].any()


def test_skip_bad_examples_gets_its_own_cache(tmp_path):
  folder = str(tmp_path / "raw")
  _write_instance_folder(folder)
  _corrupt(folder)
  config = _config("instance_folder", folder, tmp_path / "tfds",
                   skip_bad_examples=True)
  pipeline.prepare(config, data_dir=None)
  # Without skipping, the bad file must stop the build, not hide in the skipping cache.
  config.data.skip_bad_examples = False
  with pytest.raises(builders.DataError, match="img0.png"):
    pipeline.prepare(config, data_dir=None)
