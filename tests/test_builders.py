"""Tests of the builders (circles, cvppp, instance_folder, voc, coco, cityscapes).

Each folder test writes a tiny data set in the layout of the real one, builds
it with TFDS (array_record, no TensorFlow) and reads it back through the grain
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
from pycocotools import mask as mask_lib
import pytest

import helpers
from instseg_jax.data import builders
from instseg_jax.data import pipeline
from instseg_jax.data.builders import circles
from instseg_jax.data.builders import files

SHARED_DATA = os.path.join(os.path.dirname(helpers.REPO), "shared", "data")


# ---------------------------------------------------------------- circles


def test_tiny_build_has_splits_shapes_and_ids(circles_dir):
  builder = pipeline.prepare(helpers.circles_config(), data_dir=circles_dir)  # Idempotent.
  for split, count in (("train", 32), ("test", 16)):
    examples = helpers.records(builder, split)
    assert len(examples) == count
    for i, ex in enumerate(examples):
      assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
      assert ex["instances"].shape == (32, 32)
      assert ex["instances"].dtype == np.uint16
      assert ex["semantic"].dtype == np.uint8
      # Record i is example i, so ids and pipeline indices agree.
      assert ex["id"].decode() == f"{split}_{i:05d}"


def test_build_is_deterministic_and_options_apply(tmp_path):
  config = circles.CirclesConfig(
      name="custom",
      image_size=(20, 24),
      num_train=5,
      num_test=3,
      min_discs=2,
      max_discs=3,
      min_radius=3.0,
      max_radius=5.0,
      seed=7,
  )
  built = []
  for run in ("a", "b"):
    builder = builders.get_builder("circles", data_dir=str(tmp_path / run), config=config)
    builder.download_and_prepare(file_format="array_record")
    built.append(helpers.records(builder, "train") + helpers.records(builder, "test"))
  assert len(built[0]) == 8
  for ex_a, ex_b in zip(*built):
    assert ex_a["image"].shape == (20, 24, 3)
    for key in ex_a:
      np.testing.assert_array_equal(ex_a[key], ex_b[key])
  # Train and test come from disjoint streams.
  assert not np.array_equal(built[0][0]["image"], built[0][5]["image"])


def test_instances_match_semantic(circles_dir):
  builder = pipeline.prepare(helpers.circles_config(), data_dir=circles_dir)
  min_pixels = circles.Circles.builder_configs["tiny"].min_pixels
  for ex in helpers.records(builder, "train"):
    instances = ex["instances"].astype(int)
    np.testing.assert_array_equal(ex["semantic"], instances > 0)
    counts = np.bincount(instances.ravel())
    num = instances.max()
    assert 1 <= num <= 4
    assert np.all(counts[1:] >= min_pixels)  # Consecutive ids, no slivers.
    # Discs are brighter than the background they sit on.
    grey = ex["image"].mean(-1)
    assert grey[instances > 0].mean() > grey[instances == 0].mean() + 50


def test_unknown_dataset_lists_known_ones():
  config = helpers.circles_config()
  config.data.name = "nope"
  with pytest.raises(ValueError, match="circles"):
    pipeline.prepare(config, data_dir=None)


def _write_cvppp_folder(folder, count, *, first=1, labelled=True, seed=0, size=(44, 40)):
  rng = np.random.default_rng(seed)
  for i in range(first, first + count):
    labels = helpers.rectangles(*size, 3 + i % 3, rng)
    rgba = np.concatenate([helpers.id_colours(labels), np.full(size + (1,), 255, np.uint8)], -1)
    helpers.save(rgba, os.path.join(folder, f"plant{i:03d}_rgb.png"), "RGBA")
    helpers.palette_png((labels > 0).astype(np.uint8), os.path.join(folder, f"plant{i:03d}_fg.png"))
    if labelled:
      helpers.palette_png(labels, os.path.join(folder, f"plant{i:03d}_label.png"))


# ---------------------------------------------------------------- cvppp


def test_cvppp_flat_folder(tmp_path):
  _write_cvppp_folder(str(tmp_path / "a1_subset"), 6)
  config = helpers.folder_config(
      "cvppp", tmp_path / "a1_subset", tmp_path / "tfds", builder_config="A1"
  )
  builder = pipeline.prepare(config, data_dir=None)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      "train": 5,
      "validation": 1,
  }
  records = helpers.records(builder, "train") + helpers.records(builder, "validation")
  assert sorted(helpers.text(r["id"]) for r in records) == [f"plant{i:03d}" for i in range(1, 7)]
  for r in records:
    assert r["image"].shape == (44, 40, 3) and r["image"].dtype == np.uint8
    assert r["instances"].dtype == np.uint16
    assert r["semantic"].dtype == np.uint16
    np.testing.assert_array_equal(r["semantic"], r["instances"] > 0)
    assert helpers.text(r["file_name"]) == helpers.text(r["id"]) + "_rgb.png"
  # The alpha channel is dropped, the colour kept.
  counts = pipeline.split_stats(builder, "train")["num_instances"]
  assert counts == [int(r["instances"].max()) for r in helpers.records(builder, "train")]

  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (2, 32, 32, 3)
  assert batch["instances"].dtype == np.int32
  example = next(pipeline.eval_records(config, data_dir=None))
  assert example["image"].shape == (44, 40, 3)  # Evaluation scores the stored grid.
  assert example["id"] in {helpers.text(r["id"]) for r in records}


def test_cvppp_challenge_layout_with_subsets_and_test(tmp_path):
  root = tmp_path / "CVPPP2017"
  _write_cvppp_folder(str(root / "training" / "A1"), 4)
  _write_cvppp_folder(str(root / "training" / "A2"), 3, seed=1, size=(30, 34))
  _write_cvppp_folder(str(root / "testing" / "A1"), 2, first=50, labelled=False, seed=2)
  a1 = pipeline.prepare(
      helpers.folder_config("cvppp", root, tmp_path / "tfds", builder_config="A1"), data_dir=None
  )
  splits = {s: i.num_examples for s, i in a1.info.splits.items()}
  assert splits == {"train": 3, "validation": 1, "test": 2}
  test = helpers.records(a1, "test")
  assert [helpers.text(r["id"]) for r in test] == ["testing/A1/plant050", "testing/A1/plant051"]
  for r in test:  # Unlabelled: no instances, the fg mask as semantic.
    assert r["instances"].max() == 0 and r["semantic"].max() == 1
  assert all(helpers.text(r["id"]).startswith("training/A1/") for r in helpers.records(a1, "train"))

  both = pipeline.prepare(
      helpers.folder_config("cvppp", root, tmp_path / "tfds", builder_config="all"), data_dir=None
  )
  assert both.info.splits["train"].num_examples + both.info.splits["validation"].num_examples == 7
  sizes = {
      tuple(r["image"].shape)
      for r in helpers.records(both, "train") + helpers.records(both, "validation")
  }
  assert sizes == {(44, 40, 3), (30, 34, 3)}  # Native sizes, not resized.

  with pytest.raises(builders.DataError, match=r"A3"):
    pipeline.prepare(
        helpers.folder_config("cvppp", root, tmp_path / "tfds", builder_config="A3"), data_dir=None
    )


# ------------------------------------------------------ instance_folder


def test_instance_folder_png_tiff_8_and_16_bit(folder_data):
  config = helpers.folder_config(
      "instance_folder", folder_data["manual_dir"], folder_data["data_dir"]
  )
  builder = pipeline.prepare(config, data_dir=None)
  records = {
      helpers.text(r["id"]): r
      for split in ("train", "validation")
      for r in helpers.records(builder, split)
  }
  assert sorted(records) == [f"img{i}" for i in range(5)]
  for i, shape in enumerate(folder_data["shapes"]):
    r = records[f"img{i}"]
    assert r["image"].shape == shape + (3,)
    ids = np.unique(r["instances"])
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # Renumbered.
  assert helpers.text(records["img1"]["file_name"]) == "images/img1.tif"
  # The 16-bit TIFF (values 500..) is stretched to the full 8-bit range.
  assert records["img1"]["image"].min() == 0
  assert records["img1"]["image"].max() == 255
  # Every instance of the 16-bit image keeps one grey level.
  image, labels = records["img1"]["image"][..., 0], records["img1"]["instances"]
  for k in range(1, labels.max() + 1):
    assert np.ptp(image[labels == k]) == 0


def test_split_folders_are_used_when_present(tmp_path):
  for split in ("train", "val"):
    helpers.write_instance_folder(str(tmp_path / "raw" / split), seed=len(split))
  os.makedirs(tmp_path / "raw" / "test" / "images")
  shutil.copy(
      tmp_path / "raw" / "train" / "images" / "img0.png",
      tmp_path / "raw" / "test" / "images" / "x.png",
  )
  builder = pipeline.prepare(
      helpers.folder_config("instance_folder", tmp_path / "raw", tmp_path / "tfds"), data_dir=None
  )
  splits = {s: i.num_examples for s, i in builder.info.splits.items()}
  assert splits == {"train": 5, "validation": 5, "test": 1}
  assert helpers.text(helpers.records(builder, "test")[0]["id"]) == "test/x"


def test_committed_dsb2018_sample(tmp_path):
  config = helpers.folder_config(
      "instance_folder", helpers.DSB_SAMPLE, tmp_path, size=(64, 64), validation_fraction=0.25
  )
  builder = pipeline.prepare(config, data_dir=None)
  records = helpers.records(builder, "train") + helpers.records(builder, "validation")
  assert len(helpers.records(builder, "validation")) == 1
  assert {helpers.text(r["id"]): int(r["instances"].max()) for r in records} == (
      helpers.SAMPLE_COUNTS
  )
  shapes = {tuple(r["image"].shape[:2]) for r in records}
  assert shapes == {(256, 256), (256, 320)}
  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (2, 64, 64, 3)
  assert batch["image"].dtype == np.float32
  assert (batch["num_instances"] > 0).all()


# ---------------------------------------------------------------- voc


def test_voc(tmp_path):
  helpers.write_voc(str(tmp_path / "raw"), np.random.default_rng(0))
  config = helpers.folder_config(
      "voc", tmp_path / "raw", tmp_path / "tfds", builder_config="2012", num_classes=21
  )
  builder = pipeline.prepare(config, data_dir=None)
  assert [helpers.text(r["id"]) for r in helpers.records(builder, "train")] == [
      "2007_000001",
      "2008_000003",
  ]
  record = helpers.records(builder, "validation")[0]
  assert record["image"].shape == (30, 36, 3)
  void = record["instances"] == files.STORED_IGNORE
  assert void.any()
  np.testing.assert_array_equal(record["semantic"] == files.STORED_IGNORE, void)
  assert set(np.unique(record["semantic"][~void])) <= {0, 15, 7, 12}
  assert builder.info.metadata["class_names"][15] == "person"

  config.data.augment = False
  example = next(pipeline.eval_records(config, data_dir=None))
  # The ignore value reaches evaluation and training as config.data.ignore_label.
  np.testing.assert_array_equal(example["instances"] == -1, void)
  np.testing.assert_array_equal(example["semantic"] == -1, void)
  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["instances"].min() == -1 and batch["semantic"].min() == -1


# ---------------------------------------------------------------- coco


def _write_coco(root):
  def image(split, image_id, height, width):
    name = f"{image_id:012d}.jpg"
    helpers.save(
        np.full((height, width, 3), 90, np.uint8), os.path.join(root, f"{split}2017", name)
    )
    return {"id": image_id, "file_name": name, "height": height, "width": width}

  crowd = np.zeros((30, 40), np.uint8, order="F")
  crowd[20:28, 2:12] = 1
  rle = mask_lib.encode(crowd)
  rle["counts"] = rle["counts"].decode()
  categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
  train = {
      "images": [image("train", 7, 30, 40), image("train", 9, 24, 24)],
      "categories": categories,
      "annotations": [
          # A large car with a small dog on top of it.
          {
              "id": 1,
              "image_id": 7,
              "category_id": 3,
              "iscrowd": 0,
              "area": 400.0,
              "bbox": [0, 0, 20, 20],
              "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]],
          },
          {
              "id": 2,
              "image_id": 7,
              "category_id": 18,
              "iscrowd": 0,
              "area": 36.0,
              "bbox": [5, 5, 6, 6],
              "segmentation": [[5, 5, 11, 5, 11, 11, 5, 11]],
          },
          {
              "id": 3,
              "image_id": 7,
              "category_id": 1,
              "iscrowd": 1,
              "area": 80.0,
              "bbox": [2, 20, 10, 8],
              "segmentation": rle,
          },
          {
              "id": 4,
              "image_id": 9,
              "category_id": 1,
              "iscrowd": 0,
              "area": 100.0,
              "bbox": [2, 2, 10, 10],
              "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]],
          },
      ],
  }
  val = {"images": [image("val", 11, 20, 28)], "categories": categories, "annotations": []}
  os.makedirs(os.path.join(root, "annotations"))
  for name, content in (("train", train), ("val", val)):
    with open(os.path.join(root, "annotations", f"instances_{name}2017.json"), "w") as f:
      json.dump(content, f)


# pycocotools itself warns about NumPy 2's copy keyword.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco(tmp_path):
  _write_coco(str(tmp_path / "coco"))
  config = helpers.folder_config(
      "coco", tmp_path / "coco", tmp_path / "tfds", builder_config="2017", num_classes=4
  )
  builder = pipeline.prepare(config, data_dir=None)
  assert builder.info.metadata["class_names"] == ["background", "person", "car", "dog"]
  first, second = helpers.records(builder, "train")
  assert helpers.text(first["id"]) == "000000000007"
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
  empty = helpers.records(builder, "validation")[0]
  assert empty["instances"].max() == 0  # Kept: an image without objects.

  batch = next(pipeline.train_iterator(config, data_dir=None))
  assert batch["image"].shape == (2, 32, 32, 3)
  assert batch["semantic"].max() <= 3 and batch["semantic"].min() >= -1
  example = next(pipeline.eval_records(config, data_dir=None))
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
    helpers.save(
        np.full((16, 32, 3), 60, np.uint8),
        str(root / "leftImg8bit" / split / "city" / f"{stem}_leftImg8bit.png"),
    )
    gt = root / "gtFine" / split / "city"
    helpers.save(instance_ids, str(gt / f"{stem}_gtFine_instanceIds.png"))
    helpers.save(label_ids, str(gt / f"{stem}_gtFine_labelIds.png"))
  config = helpers.folder_config(
      "cityscapes", root, tmp_path / "tfds", builder_config="fine", num_classes=9
  )
  builder = pipeline.prepare(config, data_dir=None)
  record = helpers.records(builder, "validation")[0]
  assert helpers.text(record["id"]) == "val/city/valcity_000000_000019"
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
  example = next(pipeline.eval_records(config, data_dir=None))
  np.testing.assert_array_equal(
      example["semantic"], np.where(semantic == ignore, -1, semantic.astype(int))
  )
  assert example["num_instances"] == 3


# ---------------------------------------------------------------- caching


def test_manual_dirs_get_separate_caches(tmp_path):
  helpers.write_instance_folder(str(tmp_path / "one"), seed=1)
  helpers.write_instance_folder(str(tmp_path / "two"), seed=2)
  os.symlink(tmp_path / "one", tmp_path / "alias")
  data_dir = tmp_path / "tfds"
  built = {}
  for name in ("one", "two", "alias"):
    builder = pipeline.prepare(
        helpers.folder_config("instance_folder", tmp_path / name, data_dir), data_dir=None
    )
    built[name] = builder
  assert built["one"].data_path != built["two"].data_path
  assert built["one"].data_path == built["alias"].data_path  # Same folder.
  first = {n: helpers.records(b, "train")[0]["instances"] for n, b in built.items()}
  assert not np.array_equal(first["one"], first["two"])
  # Another holdout fraction is another split, so another cache.
  other = pipeline.prepare(
      helpers.folder_config("instance_folder", tmp_path / "one", data_dir, validation_fraction=0.4),
      data_dir=None,
  )
  assert other.data_path != built["one"].data_path
  assert other.info.splits["validation"].num_examples == 2


def test_missing_manual_dir_explains_download():
  config = helpers.folder_config("voc", "", "/nonexistent")
  with pytest.raises(builders.DataError, match="(?s)'voc'.*manual_dir=DIR.*VOCtrainval"):
    pipeline.prepare(config, data_dir=None)


# ------------------------------------------------------------ bad input


# img0 is in the train split, img3 alone in validation.
def _truncated(folder):
  path = os.path.join(folder, "images", "img0.png")
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) * 2 // 3])
  return "images/img0.png", "cannot decode"


def _wrong_size(folder):
  path = os.path.join(folder, "labels", "img0.png")
  helpers.save(np.zeros((10, 12), np.uint16), path)
  return "labels/img0.png", "label is 10x12 .* is 40x48"


def _missing_label(folder):
  os.remove(os.path.join(folder, "labels", "img0.png"))
  return "images/img0.png", "label file missing"


@pytest.mark.parametrize("damage", [helpers.corrupt, _truncated, _wrong_size, _missing_label])
def test_bad_file_is_named_or_skipped(tmp_path, damage):
  folder = str(tmp_path / "raw")
  helpers.write_instance_folder(folder)
  name, what = damage(folder)
  config = helpers.folder_config("instance_folder", folder, tmp_path / "tfds")
  with pytest.raises(builders.DataError, match=what) as error:
    pipeline.prepare(config, data_dir=None)
  assert os.path.join(os.path.realpath(folder), name) in str(error.value)
  assert "\n" not in str(error.value)

  config.data.skip_bad_examples = True
  builder = pipeline.prepare(config, data_dir=None)
  kept = [
      helpers.text(r["id"])
      for split in ("train", "validation")
      for r in helpers.records(builder, split)
  ]
  assert sorted(kept) == ["img1", "img2", "img3", "img4"]
  skipped = sum(len(pipeline.split_stats(builder, s)["skipped"]) for s in ("train", "validation"))
  assert skipped == 1


def test_split_left_empty_by_bad_files(tmp_path):
  folder = str(tmp_path / "raw")
  helpers.write_instance_folder(folder)
  helpers.corrupt(folder, "img3")
  config = helpers.folder_config(
      "instance_folder", folder, tmp_path / "tfds", skip_bad_examples=True
  )
  with pytest.raises(
      builders.DataError,
      match=r"all 1 examples of split 'validation' are bad, " r"e.g. .*img3.png: cannot decode",
  ):
    pipeline.prepare(config, data_dir=None)


def test_empty_folders(tmp_path):
  os.makedirs(tmp_path / "empty" / "images")
  os.makedirs(tmp_path / "empty" / "labels")
  with pytest.raises(builders.DataError, match=r"empty/images: no image"):
    pipeline.prepare(
        helpers.folder_config("instance_folder", tmp_path / "empty", tmp_path / "tfds"),
        data_dir=None,
    )
  os.makedirs(tmp_path / "nothing")
  with pytest.raises(builders.DataError, match=r"nothing: no \*_rgb.png"):
    pipeline.prepare(
        helpers.folder_config("cvppp", tmp_path / "nothing", tmp_path / "tfds"), data_dir=None
    )
  with pytest.raises(builders.DataError, match="folder not found"):
    pipeline.prepare(
        helpers.folder_config("cvppp", tmp_path / "absent", tmp_path / "tfds"), data_dir=None
    )


# ----------------------------------------------------- interrupted build


def test_build_failing_half_way_leaves_nothing_complete(tmp_path, monkeypatch):
  folder = str(tmp_path / "raw")
  helpers.write_instance_folder(folder)
  config = helpers.folder_config("instance_folder", folder, tmp_path / "tfds")
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
      "instance_folder", data_dir=str(tmp_path / "tfds"), manual_dir=folder
  )
  assert not builder.is_prepared()
  assert not os.path.exists(builder.data_path)
  monkeypatch.setattr(builders.InstanceFolder, "read", original)
  rebuilt = pipeline.prepare(config, data_dir=None)
  assert rebuilt.info.splits["train"].num_examples == 4


def test_killed_build_leaves_nothing_complete(tmp_path):
  folder = str(tmp_path / "raw")
  helpers.write_instance_folder(folder)
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
  process = subprocess.Popen(
      [sys.executable, "-c", script],
      cwd=helpers.REPO,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
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
      "instance_folder", data_dir=str(tmp_path / "tfds"), manual_dir=folder
  )
  assert not builder.is_prepared()
  # What the killed run left is an "incomplete.*" folder, never the data path.
  leftovers = os.listdir(os.path.dirname(builder.data_path))
  assert all(name.startswith("incomplete") for name in leftovers), leftovers
  config = helpers.folder_config("instance_folder", folder, tmp_path / "tfds")
  assert pipeline.prepare(config, data_dir=None).is_prepared()


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
  config = helpers.folder_config(
      "cvppp", _shared("cvppp_a1_train"), shared_tfds, builder_config="A1", size=(64, 64)
  )
  builder = pipeline.prepare(config, data_dir=None)
  assert builder.info.splits["train"].num_examples == 80
  assert builder.info.splits["validation"].num_examples == 20
  counts = [
      c for s in ("train", "validation") for c in pipeline.split_stats(builder, s)["num_instances"]
  ]
  assert min(counts) == 11 and max(counts) == 20
  with open(os.path.join(_shared("cvppp_a1_train"), "A1.csv")) as f:
    expected = {
        line.split(",")[0].replace("_rgb.png", ""): int(line.split(",")[1])
        for line in f
        if line.strip()
    }
  record = builder.as_data_source(split="validation")[0]
  assert record["image"].shape == (530, 500, 3)
  assert int(record["instances"].max()) == expected[helpers.text(record["id"])]
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


# ------------------------------------------------------- what a run checks before it starts


def test_changed_files_get_a_new_cache(tmp_path):
  folder = str(tmp_path / "raw")
  helpers.write_instance_folder(folder)
  config = helpers.folder_config("instance_folder", folder, tmp_path / "tfds")
  before = pipeline.prepare(config, data_dir=None)
  assert pipeline.prepare(config, data_dir=None).data_path == before.data_path
  old = {helpers.text(r["id"]): r["instances"] for r in helpers.records(before, "train")}
  stem = sorted(old)[0]
  label = os.path.join(folder, "labels", f"{stem}.png")
  helpers.save(np.zeros(old[stem].shape, np.uint16), label)
  after = pipeline.prepare(config, data_dir=None)
  assert after.data_path != before.data_path
  new = {helpers.text(r["id"]): r["instances"] for r in helpers.records(after, "train")}
  assert not new[stem].any()


def test_skip_bad_examples_gets_its_own_cache(tmp_path):
  folder = str(tmp_path / "raw")
  helpers.write_instance_folder(folder)
  helpers.corrupt(folder)
  config = helpers.folder_config(
      "instance_folder", folder, tmp_path / "tfds", skip_bad_examples=True
  )
  pipeline.prepare(config, data_dir=None)
  # Without skipping, the bad file must stop the build, not hide in the skipping cache.
  config.data.skip_bad_examples = False
  with pytest.raises(builders.DataError, match="img0.png"):
    pipeline.prepare(config, data_dir=None)
