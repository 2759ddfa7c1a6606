"""CVPPP leaf segmentation challenge (LSC): one instance per leaf.

Accepted layouts of `manual_dir` (files found up to three folders deep):

  * the official archives unpacked, e.g. CVPPP2017_LSC_training/training/
    A1/plant001_rgb.png, plant001_label.png, plant001_fg.png, ... and
    CVPPP2017_testing_images/testing/A1/plant001_rgb.png (no labels);
  * a folder holding A1/, A2/, ... directly;
  * a flat folder of plantXXX_rgb.png + plantXXX_label.png files, e.g. one
    subset (it is used whatever its name).

Folders named A<n> are used when the builder config lists that subset.
Labelled plants form "train" and a held-out "validation"
(config.data.validation_fraction); folders whose images have no label file at
all form "test" (instances 0, semantic = the _fg.png mask if present).
"""

from __future__ import annotations

import dataclasses
import os
import re

import tensorflow_datasets as tfds

from instseg_jax.data.builders import base
from instseg_jax.data.builders import files
from instseg_jax.data.builders.files import DataError

_SUBSET = re.compile(r"^A\d+$")
_RGB_SUFFIX = "_rgb.png"
_MAX_DEPTH = 3


@dataclasses.dataclass(eq=False)
class CvpppConfig(base.FolderConfig):
  """Attributes: subsets: the A<n> folders to read (flat folders always are)."""

  subsets: tuple[str, ...] = ("A1",)


class Cvppp(base.FolderBuilder):
  """CVPPP 2017 LSC: Arabidopsis and tobacco rosettes, one label per leaf."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://www.plant-phenotyping.org/datasets"
  CLASS_NAMES = ("background", "plant")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Request the CVPPP 2017 LSC data at https://www.plant-phenotyping.org/datasets
  (research use only), unzip CVPPP2017_LSC_training.zip (and, optionally,
  CVPPP2017_testing_images.zip) into one folder, and pass that folder, a
  folder holding A1/ A2/ ..., or a flat folder of plantXXX_rgb.png and
  plantXXX_label.png files as --config.data.manual_dir=DIR.
  """
  BUILDER_CONFIGS = [
      CvpppConfig(name="A1", description="A1: Arabidopsis, 500x530.", subsets=("A1",)),
      CvpppConfig(name="A2", description="A2: Arabidopsis.", subsets=("A2",)),
      CvpppConfig(name="A3", description="A3: tobacco.", subsets=("A3",)),
      CvpppConfig(name="A4", description="A4: Arabidopsis mutants.", subsets=("A4",)),
      CvpppConfig(
          name="all", description="A1 to A5 together.", subsets=("A1", "A2", "A3", "A4", "A5")
      ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "A1"

  def find_sources(self, root: str) -> dict[str, list[base.Source]]:
    labelled, unlabelled = [], []
    folders = _plant_folders(root)
    subsets = set(self.builder_config.subsets)
    used = [
        f
        for f in folders
        if f == root or not _SUBSET.match(os.path.basename(f)) or os.path.basename(f) in subsets
    ]
    if not used:
      found = sorted({os.path.basename(f) for f in folders})
      raise DataError(
          f"{root}: no *{_RGB_SUFFIX} files"
          + (f" in the subsets {sorted(subsets)} (found {found})" if found else "")
          + f".\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    for folder in used:
      names = files.list_files(folder, (_RGB_SUFFIX,))
      stems = [n[: -len(_RGB_SUFFIX)] for n in names]
      has_label = {s: os.path.isfile(os.path.join(folder, f"{s}_label.png")) for s in stems}
      # A folder without any label file is test data; one with some labels
      # missing is a labelled folder with missing files (reported on read).
      target = labelled if any(has_label.values()) else unlabelled
      for stem in stems:
        image = os.path.join(folder, stem + _RGB_SUFFIX)
        ident = os.path.relpath(os.path.join(folder, stem), root)
        fg = os.path.join(folder, f"{stem}_fg.png")
        target.append(
            base.Source(
                id=ident.replace(os.sep, "/"),
                image=image,
                label=os.path.join(folder, f"{stem}_label.png") if target is labelled else None,
                extra=fg if os.path.isfile(fg) else None,
            )
        )
    splits = base.holdout(labelled, self.builder_config.validation_fraction)
    splits["test"] = unlabelled
    return splits

  def read(self, source: base.Source) -> base.Decoded:
    if source.label is not None and not os.path.isfile(source.label):
      raise DataError(f"{source.image}: label file {os.path.basename(source.label)} is " "missing")
    return base.read_instance_example(source, foreground=source.extra)


def _plant_folders(root: str) -> list[str]:
  """Folders up to _MAX_DEPTH below root (root included) with *_rgb.png."""
  found = []
  for folder, dirs, names in os.walk(root):
    depth = os.path.relpath(folder, root).count(os.sep) + (folder != root)
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    if depth >= _MAX_DEPTH:
      dirs[:] = []
    if any(n.endswith(_RGB_SUFFIX) for n in names):
      found.append(folder)
  return sorted(found)
