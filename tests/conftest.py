"""Test set-up: 8 fake CPU devices, forced before anything imports jax; the fixtures that
several test files use."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# pylint: disable=g-import-not-at-top,wrong-import-position
import pytest

import helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  """An empty TFDS folder of the module: the first run that needs a data set builds it there."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def circles_dir(tmp_path_factory) -> str:
  """A TFDS folder holding the data of `helpers.circles_config`, built once per module."""
  from instseg_jax.data import pipeline

  directory = str(tmp_path_factory.mktemp("tfds"))
  pipeline.prepare(helpers.circles_config(), data_dir=directory)
  return directory


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> dict:
  """A folder of `helpers.write_instance_folder` and a TFDS folder for it, not yet built."""
  root = tmp_path_factory.mktemp("raw")
  shapes = helpers.write_instance_folder(str(root / "cells"))
  return {
      "manual_dir": str(root / "cells"),
      "data_dir": str(tmp_path_factory.mktemp("tfds")),
      "shapes": shapes,
  }
