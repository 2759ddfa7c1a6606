"""--mode=inspect: the statistics, the sample sheet and the summary of a data set."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

import helpers
from instseg_jax.data import inspect as inspect_lib


def test_inspect_writes_stats_and_panels(tmp_path, capsys):
  config = helpers.folder_config(
      "instance_folder",
      helpers.DSB_SAMPLE,
      tmp_path / "tfds",
      size=(64, 64),
      validation_fraction=0.25,
  )
  config.eval.num_panels = 3
  result = inspect_lib.inspect(config, str(tmp_path / "work"))
  assert result["splits"]["train"]["examples"] == 3
  assert result["splits"]["validation"]["examples"] == 1
  total = sum(s["instances"]["total"] for s in result["splits"].values())
  assert total == sum(helpers.SAMPLE_COUNTS.values())
  with open(tmp_path / "work" / "inspect.json") as f:
    assert json.load(f)["splits"] == result["splits"]
  sheet = np.asarray(Image.open(tmp_path / "work" / "inspect.png"))
  assert sheet.shape == (3 * 64 + 2 * 4, 3 * 64 + 2 * 4, 3)
  out = capsys.readouterr().out
  assert "train: 3 images" in out and "inspect.png" in out


def test_inspect_counts_the_files_the_build_skipped(tmp_path):
  folder = str(tmp_path / "raw")
  helpers.write_instance_folder(folder)
  name, _ = helpers.corrupt(folder)
  config = helpers.folder_config(
      "instance_folder", folder, tmp_path / "tfds", skip_bad_examples=True
  )
  result = inspect_lib.inspect(config, str(tmp_path / "work"), num_panels=0, verbose=False)
  assert sum(s["skipped"] for s in result["splits"].values()) == 1
  assert any(name in f for f in result["splits"]["train"]["skipped_files"])


def test_inspect_counts_images_over_max_instances(folder_data, tmp_path):
  # Train holds images of 2, 3, 4 and 6 instances.
  config = helpers.folder_config(
      "instance_folder",
      folder_data["manual_dir"],
      folder_data["data_dir"],
      max_instances=3,
      batch_size=1,
      skip_bad_examples=True,
  )
  result = inspect_lib.inspect(config, str(tmp_path), num_panels=0, verbose=False)
  assert result["splits"]["train"]["instances"]["over_max_instances"] == 2
  assert result["splits"]["validation"]["instances"]["over_max_instances"] == 1
