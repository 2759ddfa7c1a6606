"""PASCAL VOC segmentation: object instances and 20 classes.

`manual_dir` is VOC2012/ (the folder holding JPEGImages/,
SegmentationObject/, SegmentationClass/ and ImageSets/Segmentation/) or any
folder above it (VOCdevkit/, the unpacked trainval archive). Splits come from
ImageSets/Segmentation/train.txt and val.txt; without them all annotated
images are held out as in the other folder builders.

SegmentationObject holds instance ids 1..N and SegmentationClass the class of
each pixel; both mark object boundaries and "difficult" regions with 255,
which is stored as ignore in both maps.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from instseg_jax.data.builders import base
from instseg_jax.data.builders import files
from instseg_jax.data.builders.files import DataError

CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
_VOID = 255
_LISTS = {"train": "train.txt", "validation": "val.txt"}


@dataclasses.dataclass(eq=False)
class VocConfig(base.FolderConfig):
  """Attributes: year: the VOC<year> folder to look for."""

  year: str = "2012"


class Voc(base.FolderBuilder):
  """PASCAL VOC object (instance) segmentation."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "http://host.robots.ox.ac.uk/pascal/VOC/"
  CLASS_NAMES = CLASS_NAMES
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download VOCtrainval_11-May-2012.tar from
  http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (or a mirror), unpack it and
  pass the VOCdevkit/VOC2012 folder (or any folder above it) as
  --config.data.manual_dir=DIR.
  """
  BUILDER_CONFIGS = [
      VocConfig(name="2012", description="VOC2012 train / val.", year="2012"),
      VocConfig(name="2007", description="VOC2007 train / val.", year="2007"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "2012"

  def find_sources(self, root: str) -> dict[str, list[base.Source]]:
    voc = _find_voc_root(root, self.builder_config.year)
    if voc is None:
      raise DataError(
          f"{root}: no folder with JPEGImages/ and SegmentationObject/ found."
          f"\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    object_dir = os.path.join(voc, "SegmentationObject")
    annotated = [os.path.splitext(n)[0] for n in files.list_files(object_dir, (".png",))]
    if not annotated:
      raise DataError(f"{object_dir}: no .png files")
    list_dir = os.path.join(voc, "ImageSets", "Segmentation")
    lists = {
        split: os.path.join(list_dir, name)
        for split, name in _LISTS.items()
        if os.path.isfile(os.path.join(list_dir, name))
    }
    if not lists:
      return base.holdout(
          [self._source(voc, s) for s in annotated],
          self.builder_config.validation_fraction,
      )
    splits = {}
    for split, path in lists.items():
      with open(path) as f:
        stems = [line.strip() for line in f if line.strip()]
      splits[split] = [self._source(voc, s) for s in stems]
    return splits

  def _source(self, voc: str, stem: str) -> base.Source:
    return base.Source(
        id=stem,
        image=os.path.join(voc, "JPEGImages", f"{stem}.jpg"),
        label=os.path.join(voc, "SegmentationObject", f"{stem}.png"),
        extra=os.path.join(voc, "SegmentationClass", f"{stem}.png"),
    )

  def read(self, source: base.Source) -> base.Decoded:
    image, data = files.open_image(source.image)
    objects = files.read_label(source.label)
    files.check_same_size(image, source.image, objects, source.label)
    classes = files.read_label(source.extra)
    files.check_same_size(image, source.image, classes, source.extra)
    void = (objects == _VOID) | (classes == _VOID)
    instances, count = files.compact_instances(
        np.where(void, 0, objects), source.label, ignore=void
    )
    if classes[~void].max(initial=0) >= len(CLASS_NAMES):
      raise DataError(
          f"{source.extra}: class {classes[~void].max()} is not a VOC class "
          f"(0..{len(CLASS_NAMES) - 1}, 255 = void)"
      )
    semantic = np.where(void, files.STORED_IGNORE, classes).astype(np.uint16)
    return base.Decoded(
        image=files.encoded_rgb(image, data, source.image),
        height=image.height,
        width=image.width,
        instances=instances,
        semantic=semantic,
        num_instances=count,
    )


def _find_voc_root(root: str, year: str) -> str | None:
  """The folder holding JPEGImages/ and SegmentationObject/, near `root`."""

  def is_voc(folder: str) -> bool:
    return all(os.path.isdir(os.path.join(folder, d)) for d in ("JPEGImages", "SegmentationObject"))

  for folder in (
      root,
      os.path.join(root, f"VOC{year}"),
      os.path.join(root, "VOCdevkit", f"VOC{year}"),
  ):
    if is_voc(folder):
      return folder
  for folder, dirs, _ in os.walk(root):
    if is_voc(folder):
      return folder
    if os.path.relpath(folder, root).count(os.sep) >= 2:
      dirs[:] = []
    dirs.sort()
  return None
