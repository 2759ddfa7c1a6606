"""TFDS builders, one per data set, named by `config.data.name`."""

from __future__ import annotations

import logging
import os

import tensorflow_datasets as tfds

from instseg_jax.data.builders.base import FolderBuilder, FolderConfig
from instseg_jax.data.builders.circles import Circles, CirclesConfig
from instseg_jax.data.builders.cityscapes import Cityscapes
from instseg_jax.data.builders.coco import Coco, CocoConfig
from instseg_jax.data.builders.cvppp import Cvppp, CvpppConfig
from instseg_jax.data.builders.files import DataError
from instseg_jax.data.builders.instance_folder import (
    InstanceFolder,
    InstanceFolderConfig,
)
from instseg_jax.data.builders.voc import Voc, VocConfig
from instseg_jax.data.builders import base


class _QuietTfdsNotices(logging.Filter):
  """Drops two TFDS notices that tell users of this library nothing useful.

  Every keyed builder config is "custom" to TFDS (it warns on each
  construction), and PIL decodes the images fine without OpenCV.
  """

  _PREFIXES = ("Using custom data configuration", "OpenCV is not installed")

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self._PREFIXES)


logging.getLogger("absl").addFilter(_QuietTfdsNotices())

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "circles": Circles,
    "cvppp": Cvppp,
    "instance_folder": InstanceFolder,
    "voc": Voc,
    "coco": Coco,
    "cityscapes": Cityscapes,
}


def builder_config_names(name: str) -> list[str]:
  """The values config.data.builder_config may take for the data set `name`.

  Raises:
    KeyError: `name` is not a key of `BUILDERS`.
  """
  cls = BUILDERS[name]
  names = {c.name for c in cls.BUILDER_CONFIGS}
  if issubclass(cls, FolderBuilder):
    names.add("default")  # base.resolve_config reads it as the builder's default.
  return sorted(names)


def get_builder(
    name: str,
    *,
    data_dir: str | None,
    config: str | tfds.core.BuilderConfig | None = None,
    manual_dir: str | None = None,
    validation_fraction: float | None = None,
    skip_bad_examples: bool | None = None,
) -> tfds.core.DatasetBuilder:
  """Instantiates the builder registered under `name`.

  Builders of downloaded data (all but "circles") get a copy of their config
  that carries `manual_dir` and whose name holds a hash of that folder's path
  and files (and of `validation_fraction` and `skip_bad_examples`), so that two
  folders, or one folder before and after a change, never share one cache in
  the same data_dir; see `base.keyed_config`.

  Args:
    name: a key of `BUILDERS`.
    data_dir: where the array_record files live; None = the TFDS default.
    config: a builder config name ("default" = the builder's default), a
      builder config object, or None for the builder's default.
    manual_dir: raw data for builders that cannot download; remembered on the
      builder as `manual_dir` and handed to TFDS when the data are prepared.
    validation_fraction: the held-out fraction of data without a validation
      split (None = the config's, 0.2 by default).
    skip_bad_examples: skip bad files with a warning instead of failing.

  Raises:
    ValueError: `name` is not a key of `BUILDERS`, or an unknown config.
    DataError: a folder builder without `manual_dir`.
  """
  if name not in BUILDERS:
    raise ValueError(f"Unknown data set {name!r}; known: {sorted(BUILDERS)}.")
  cls = BUILDERS[name]
  if issubclass(cls, FolderBuilder):
    config = base.keyed_config(
        cls,
        config,
        manual_dir=manual_dir,
        validation_fraction=validation_fraction,
        skip_bad_examples=skip_bad_examples,
        data_dir=data_dir
        or os.environ.get("TFDS_DATA_DIR")
        or os.path.expanduser("~/tensorflow_datasets"),
    )
    manual_dir = config.manual_dir
  builder = cls(
      data_dir=data_dir or None,
      config=config or None,
      file_format="array_record",
  )
  # TFDS takes the manual directory at prepare time, not at construction; keep
  # it with the builder so callers need not carry it separately.
  builder.manual_dir = manual_dir or None
  return builder


__all__ = [
    "BUILDERS",
    "Circles",
    "CirclesConfig",
    "Cityscapes",
    "Coco",
    "CocoConfig",
    "Cvppp",
    "CvpppConfig",
    "DataError",
    "FolderBuilder",
    "FolderConfig",
    "InstanceFolder",
    "InstanceFolderConfig",
    "Voc",
    "VocConfig",
    "builder_config_names",
    "get_builder",
]
