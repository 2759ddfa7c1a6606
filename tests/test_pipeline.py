"""Tests of the grain pipeline: training batches, their shards and resumption, size modes,
evaluation records, and what a run checks in the prepared data before its first step."""

from __future__ import annotations

import numpy as np
import pytest

import helpers
from instseg_jax.data import builders
from instseg_jax.data import pipeline
from instseg_jax.data import transforms

# ---------------------------------------------------------------- training batches


def test_training_normalizes_the_whole_image_before_its_window(circles_dir):
  config = helpers.circles_config()
  config.data.augment = False
  config.data.normalize = "percentile"
  batch = next(iter(pipeline.train_dataset(config, data_dir=circles_dir)))
  source = pipeline.prepare(config, data_dir=circles_dir).as_data_source(split="train")
  raw = source[int(batch["index"][0])]["image"]
  expected = transforms.fixed_window(
      {"image": transforms.normalize_intensity(raw, "percentile")},
      size=config.data.image_size,
      mode=config.data.size_mode,
  )["image"]
  np.testing.assert_allclose(batch["image"][0], expected, atol=1e-6)


def test_train_batches_have_shapes_and_dtypes(circles_dir):
  iterator = pipeline.train_iterator(helpers.circles_config(), data_dir=circles_dir)
  for _ in range(3):
    batch = next(iterator)
    assert batch["image"].shape == (4, 32, 32, 3)
    assert batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    for key in ("instances", "semantic"):
      assert batch[key].shape == (4, 32, 32) and batch[key].dtype == np.int32
    for key in ("num_instances", "index"):
      assert batch[key].shape == (4,) and batch[key].dtype == np.int32
    np.testing.assert_array_equal(batch["num_instances"], batch["instances"].max(axis=(1, 2)))
    for instances in batch["instances"]:
      ids = np.unique(instances)
      np.testing.assert_array_equal(ids, np.arange(len(ids)))


def test_process_shards_cover_each_epoch_once(circles_dir):
  config = helpers.circles_config(batch_size=8)
  config.data.augment = False
  epochs = [[], []]
  for process in range(2):
    iterator = pipeline.train_iterator(
        config, data_dir=circles_dir, process_index=process, process_count=2
    )
    # 32 records / 2 processes / 4 per process batch = 4 batches per epoch.
    for epoch in epochs:
      epoch.append(np.concatenate([next(iterator)["index"] for _ in range(4)]))
  for epoch in epochs:
    assert len(set(epoch[0]) & set(epoch[1])) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), np.arange(32))
  assert not np.array_equal(epochs[0][0], epochs[1][0])  # Reshuffled.


def _assert_a_restored_iterator_continues_exactly(config, data_dir, *, consumed: int) -> None:
  """The state after `consumed` batches, set into a fresh iterator, gives the next four again."""
  iterator = pipeline.train_iterator(config, data_dir=data_dir)
  for _ in range(consumed):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(4)]
  resumed = pipeline.train_iterator(config, data_dir=data_dir)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_restored_iterator_continues_exactly(circles_dir):
  _assert_a_restored_iterator_continues_exactly(helpers.circles_config(), circles_dir, consumed=5)


# ---------------------------------------------- a folder of images of several sizes


def test_augmentation_keeps_image_and_labels_aligned(folder_data):
  """Through the whole pipeline, the colour of each instance's interior
  still encodes the source id of that instance."""
  config = helpers.folder_config(
      "instance_folder",
      folder_data["manual_dir"],
      folder_data["data_dir"],
      size=(40, 40),
      batch_size=2,
      aug_brightness=0.0,
      aug_contrast=0.0,
      aug_max_degrees=20.0,
      aug_scale_range=(0.7, 1.4),
  )
  builder = pipeline.prepare(config, data_dir=None)
  grey = {
      i
      for i, r in enumerate(helpers.records(builder, "train"))
      if helpers.text(r["id"]) in ("img1", "img2")
  }  # They encode no id.
  iterator = pipeline.train_iterator(config, data_dir=None)
  checked = 0
  for _ in range(8):
    batch = next(iterator)
    for image, labels, index in zip(batch["image"], batch["instances"], batch["index"]):
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


def _unaugmented_epoch(config) -> dict[str, dict[str, np.ndarray]]:
  """Every train example once, as training sees it with data.augment off, by record id."""
  config.data.augment = False
  builder = pipeline.prepare(config, data_dir=None)
  ids = [helpers.text(r["id"]) for r in helpers.records(builder, "train")]
  # One batch of the whole split: the first epoch, shuffled.
  config.train.batch_size = len(ids)
  batch = next(pipeline.train_iterator(config, data_dir=None))
  return {
      ids[index]: {key: value[row] for key, value in batch.items()}
      for row, index in enumerate(batch["index"])
  }


def test_size_modes_and_ignore_padding(folder_data):
  config = helpers.folder_config(
      "instance_folder",
      folder_data["manual_dir"],
      folder_data["data_dir"],
      size=(64, 64),
      size_mode="fit",
      ignore_padding=True,
  )
  fit = _unaugmented_epoch(config)["img4"]  # 44x52 scaled by 64/52 into 54x64, padded below.
  assert fit["image"].shape == (64, 64, 3)
  assert (fit["instances"][56:] == -1).all()
  assert (fit["semantic"][56:] == -1).all()
  assert (fit["instances"][:52] >= 0).all()

  config.data.size_mode = "native"
  config.data.ignore_padding = False
  native = _unaugmented_epoch(config)["img4"]
  # The 44x52 image sits unscaled in the middle of the 64x64 frame.
  assert (native["image"][:10].max() == 0) and native["image"][10:54].max() > 0
  assert native["instances"].min() == 0
  config.data.size_mode = "sideways"
  with pytest.raises(ValueError, match="sideways"):
    pipeline.train_iterator(config, data_dir=None)


def test_ignore_label_must_be_negative(folder_data):
  config = helpers.folder_config(
      "instance_folder", folder_data["manual_dir"], folder_data["data_dir"], ignore_label=255
  )
  with pytest.raises(ValueError, match="ignore_label=255 must be negative"):
    next(pipeline.eval_records(config, data_dir=None))


def test_restored_iterator_continues_exactly_on_folder_data(folder_data):
  # A subset (images over max_instances left out) and full augmentation.
  config = helpers.folder_config(
      "instance_folder",
      folder_data["manual_dir"],
      folder_data["data_dir"],
      max_instances=5,
      batch_size=1,
      skip_bad_examples=True,
      aug_saturation=0.3,
      aug_gamma=0.3,
  )
  _assert_a_restored_iterator_continues_exactly(config, None, consumed=3)


def test_too_many_instances_named_or_skipped(folder_data):
  # img4 has 6 instances, img3 5; the others fewer.
  config = helpers.folder_config(
      "instance_folder",
      folder_data["manual_dir"],
      folder_data["data_dir"],
      max_instances=4,
      batch_size=1,
  )
  builder = pipeline.prepare(config, data_dir=None)
  counts = pipeline.split_stats(builder, "train")["num_instances"]
  over = sum(c > 4 for c in counts)
  assert over >= 1
  with pytest.raises(
      builders.DataError,
      match=r"more instances than config.data.max_instances=4" r".*images/img\d\.png \(\d\)",
  ) as error:
    pipeline.train_iterator(config, data_dir=None)
  assert "skip_bad_examples=True" in str(error.value)

  config.data.skip_bad_examples = True
  iterator = pipeline.train_iterator(config, data_dir=None)
  seen = {int(next(iterator)["index"][0]) for _ in range(12)}
  usable = {i for i, c in enumerate(counts) if c <= 4}
  assert seen == usable


def test_repeat_by_kind_repeats_the_records_of_that_kind(folder_data):
  config = helpers.folder_config(
      "instance_folder", folder_data["manual_dir"], folder_data["data_dir"], batch_size=1
  )
  builder = pipeline.prepare(config, data_dir=None)
  source = builder.as_data_source(split="train")
  indices = np.arange(len(source))
  kinds = [transforms.image_kind(np.asarray(source[int(i)]["image"])) for i in indices]
  assert len(set(kinds)) > 1  # colour and grey images: some repeat, some do not
  assert pipeline.repeated_by_kind(config, source, indices) is indices  # all 1: not decoded
  config.data.repeat_by_kind[kinds[0]] = 3
  repeated = pipeline.repeated_by_kind(config, source, indices)
  expected = [i for i, kind in enumerate(kinds) for _ in range(3 if kind == kinds[0] else 1)]
  np.testing.assert_array_equal(repeated, expected)
  # The training stream visits those records three times an epoch.
  iterator = pipeline.train_iterator(config, data_dir=None)
  seen = [int(next(iterator)["index"][0]) for _ in range(len(repeated))]
  np.testing.assert_array_equal(np.bincount(seen, minlength=len(indices)), np.bincount(expected))


# ---------------------------------------------------------------- evaluation records


def test_eval_records_are_the_first_records_of_the_split_as_stored(circles_dir):
  config = helpers.circles_config()
  examples = list(pipeline.eval_records(config, data_dir=circles_dir))
  # data.num_eval_images of the eval split, in record order.
  assert [e["id"] for e in examples] == [f"test_{i:05d}" for i in range(10)]
  stored = helpers.records(pipeline.prepare(config, data_dir=circles_dir), "test")
  for example, record in zip(examples, stored):
    assert example["image"].dtype == np.float32
    np.testing.assert_allclose(example["image"], record["image"] / 255, atol=1e-6)
    np.testing.assert_array_equal(example["instances"], record["instances"])
    assert example["num_instances"] == record["instances"].max()
  assert len(list(pipeline.eval_records(config, data_dir=circles_dir, limit=0))) == 16
  # Evaluation is unaugmented, so two passes agree.
  again = next(pipeline.eval_records(config, data_dir=circles_dir))
  np.testing.assert_array_equal(again["image"], examples[0]["image"])


# ------------------------------------------------------- what a run checks before it starts


def _write_small_folder(folder, count, *, seed=0):
  """`count` 32x32 RGB images with 16-bit instance labels: enough for a batch of 8."""
  rng = np.random.default_rng(seed)
  for i in range(count):
    labels = helpers.rectangles(32, 32, 2, rng)
    helpers.save(helpers.id_colours(labels), f"{folder}/images/img{i}.png")
    helpers.save(labels.astype(np.uint16), f"{folder}/labels/img{i}.png")


def test_missing_eval_split_stops_the_run_before_the_first_step(tmp_path):
  from instseg_jax import checkpoint, train, validate  # pylint: disable=g-import-not-at-top

  _write_small_folder(str(tmp_path / "raw"), 8)
  config = helpers.tiny_config(str(tmp_path / "tfds"))
  # configs/dsb2018.py's data on a folder without split folders, nothing held out.
  config.data.name = "instance_folder"
  config.data.builder_config = "default"
  config.data.manual_dir = str(tmp_path / "raw")
  config.data.eval_split = "validation"
  config.data.validation_fraction = 0.0
  workdir = str(tmp_path / "run")
  with pytest.raises(
      validate.ConfigError,
      match=r"config.data.eval_split='validation' is not a split .*"
      r"\['train'\].*validation_fraction",
  ):
    train.train_and_evaluate(config, workdir)
  assert checkpoint.Checkpointer(workdir).latest_step() is None


def test_num_classes_below_the_data_classes_is_refused(tmp_path):
  from instseg_jax import train, validate  # pylint: disable=g-import-not-at-top

  helpers.write_voc(str(tmp_path / "raw"), np.random.default_rng(0))
  config = helpers.folder_config(
      "voc", tmp_path / "raw", tmp_path / "tfds", builder_config="2012", num_classes=2
  )
  # VOC's classes 7, 12 and 15 would be left out of the semantic loss, silently.
  with pytest.raises(
      validate.ConfigError, match=r"num_classes=2 is below the 21 classes .*num_classes=21"
  ):
    train.prepare_data(config, process_index=0)
  config.data.num_classes = 21
  train.prepare_data(config, process_index=0)
