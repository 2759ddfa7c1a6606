"""Any pair of folders: images/ and labels/, matched by file stem.

The DSB2018 nuclei layout, and that of most cell and nucleus data sets:

    DIR/images/<stem>.png|.tif|.tiff|.jpg     8- or 16-bit, grey or colour
    DIR/labels/<stem>.png|.tif|.tiff          8-, 16- or 32-bit instance ids

Images with more than 8 bits are stretched to 8 bits per image (1st to 99.8th
percentile). Label ids need not be consecutive; they are renumbered 1..N.

Splits: with DIR/train/, DIR/validation/ (or val/) and DIR/test/, each
holding images/ (+ labels/), those are the splits (a test/ without labels/ is
unlabelled); otherwise DIR/images + DIR/labels is "train" with a held-out
"validation" (config.data.validation_fraction).
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from instseg_jax.data.builders import base
from instseg_jax.data.builders import files
from instseg_jax.data.builders.files import DataError

_SPLIT_FOLDERS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


@dataclasses.dataclass(eq=False)
class InstanceFolderConfig(base.FolderConfig):
  """Attributes: image_folder, label_folder: the two folder names."""

  image_folder: str = "images"
  label_folder: str = "labels"


class InstanceFolder(base.FolderBuilder):
  """Instance label images next to their images, one class of objects."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://bbbc.broadinstitute.org/BBBC038"
  CLASS_NAMES = ("background", "object")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put the images in DIR/images/ and one label image per image, with the same
  file stem, in DIR/labels/ (PNG or TIFF; 0 = background, one integer id per
  object), or use DIR/train/, DIR/validation/, DIR/test/ each with images/
  and labels/. Pass --config.data.manual_dir=DIR.
  """
  BUILDER_CONFIGS = [
      InstanceFolderConfig(name="default", description="images/ + labels/."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"

  def find_sources(self, root: str) -> dict[str, list[base.Source]]:
    config = self.builder_config
    split_dirs = {
        _SPLIT_FOLDERS[d]: os.path.join(root, d)
        for d in sorted(os.listdir(root))
        if d in _SPLIT_FOLDERS and os.path.isdir(os.path.join(root, d, config.image_folder))
    }
    if not split_dirs:
      return base.holdout(self._sources(root, root), config.validation_fraction)
    splits = {s: self._sources(root, d) for s, d in split_dirs.items()}
    if "validation" not in splits:
      splits.update(
          base.holdout(splits["train"], config.validation_fraction) if "train" in splits else {}
      )
    return splits

  def _sources(self, root: str, folder: str) -> list[base.Source]:
    config = self.builder_config
    image_dir = os.path.join(folder, config.image_folder)
    label_dir = os.path.join(folder, config.label_folder)
    if not os.path.isdir(image_dir):
      raise DataError(
          f"{image_dir}: folder not found; expected {config.image_folder}/ "
          f"and {config.label_folder}/ in {folder}.\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    names = files.list_files(image_dir, files.IMAGE_SUFFIXES)
    if not names:
      raise DataError(f"{image_dir}: no image files ({', '.join(files.IMAGE_SUFFIXES)})")
    labelled = os.path.isdir(label_dir)
    if not labelled and os.path.basename(folder) != "test":
      raise DataError(f"{label_dir}: folder not found")
    sources = []
    for name in names:
      stem = os.path.splitext(name)[0]
      sources.append(
          base.Source(
              id=os.path.relpath(os.path.join(folder, stem), root).replace(os.sep, "/"),
              image=os.path.join(image_dir, name),
              # The label is looked up on read, so that a missing one is
              # reported (or skipped) like any other bad file.
              label=os.path.join(label_dir, stem) if labelled else None,
          )
      )
    ids = [s.id for s in sources]
    if len(set(ids)) != len(ids):
      twice = sorted({i for i in ids if ids.count(i) > 1})
      raise DataError(
          f"{image_dir}: several images share the stem of {twice[0]!r}; " "stems must be unique"
      )
    return sources

  def read(self, source: base.Source) -> base.Decoded:
    if source.label is not None:
      label = files.find_by_stem(os.path.dirname(source.label), os.path.basename(source.label))
      if label is None:
        raise DataError(
            f"{source.image}: label file missing; expected "
            f"{source.label}{{{','.join(files.LABEL_SUFFIXES)}}}"
        )
      source = dataclasses.replace(source, label=label)
    return base.read_instance_example(source)
