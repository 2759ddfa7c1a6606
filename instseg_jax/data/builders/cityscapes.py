"""Cityscapes: instances of the 8 classes of the instance-level benchmark.

`manual_dir` holds leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and
gtFine/{train,val}/<city>/*_gtFine_instanceIds.png and *_gtFine_labelIds.png.

Classes (semantic map): 0 = everything else, 1 person, 2 rider, 3 car,
4 truck, 5 bus, 6 train, 7 motorcycle, 8 bicycle. In *_instanceIds.png a
pixel of one of these classes holds labelId * 1000 + k for object k, or just
the labelId for a group of objects drawn as one ("cars"): such groups get the
ignore label in the instance map and keep their class. Ignored in both maps:
the void labels unlabeled, ego vehicle, rectification border, out of roi, and
the two classes with instances that the benchmark leaves out (caravan,
trailer).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from instseg_jax.data.builders import base
from instseg_jax.data.builders import files
from instseg_jax.data.builders.files import DataError

# labelId -> class index of the 8 instance classes.
INSTANCE_CLASSES = {24: 1, 25: 2, 26: 3, 27: 4, 28: 5, 31: 6, 32: 7, 33: 8}
CLASS_NAMES = (
    "background",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
_IGNORED_LABEL_IDS = (0, 1, 2, 3, 29, 30)
_SPLITS = {"train": "train", "validation": "val"}
_IMAGE_SUFFIX = "_leftImg8bit.png"


class Cityscapes(base.FolderBuilder):
  """Cityscapes fine annotations, 2048x1024 street scenes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://www.cityscapes-dataset.com"
  CLASS_NAMES = CLASS_NAMES
  USES_HOLDOUT = False
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Register at https://www.cityscapes-dataset.com, download
  leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, unzip both into
  one folder DIR (giving DIR/leftImg8bit/ and DIR/gtFine/) and pass
  --config.data.manual_dir=DIR.
  """
  BUILDER_CONFIGS = [
      base.FolderConfig(name="fine", description="gtFine train / val."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "fine"

  def find_sources(self, root: str) -> dict[str, list[base.Source]]:
    splits = {}
    for split, folder in _SPLITS.items():
      image_root = os.path.join(root, "leftImg8bit", folder)
      label_root = os.path.join(root, "gtFine", folder)
      if not os.path.isdir(image_root):
        continue
      sources = []
      for city in sorted(os.listdir(image_root)):
        city_dir = os.path.join(image_root, city)
        if not os.path.isdir(city_dir):
          continue
        for name in files.list_files(city_dir, (_IMAGE_SUFFIX,)):
          stem = name[: -len(_IMAGE_SUFFIX)]
          sources.append(
              base.Source(
                  id=f"{folder}/{city}/{stem}",
                  image=os.path.join(city_dir, name),
                  label=os.path.join(label_root, city, f"{stem}_gtFine_instanceIds.png"),
                  extra=os.path.join(label_root, city, f"{stem}_gtFine_labelIds.png"),
              )
          )
      splits[split] = sources
    if not any(splits.values()):
      raise DataError(
          f"{root}: no leftImg8bit/{{train,val}}/<city>/*{_IMAGE_SUFFIX}.\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    return splits

  def read(self, source: base.Source) -> base.Decoded:
    image, data = files.open_image(source.image)
    instance_ids = files.read_label(source.label)
    files.check_same_size(image, source.image, instance_ids, source.label)
    label_ids = files.read_label(source.extra)
    files.check_same_size(image, source.image, label_ids, source.extra)

    lookup = np.zeros(256, np.uint16)
    for label_id, cls in INSTANCE_CLASSES.items():
      lookup[label_id] = cls
    lookup[list(_IGNORED_LABEL_IDS)] = files.STORED_IGNORE
    if label_ids.min(initial=0) < 0 or label_ids.max(initial=0) > 255:
      raise DataError(f"{source.extra}: labelIds outside 0..255")
    semantic = lookup[label_ids]
    void = semantic == files.STORED_IGNORE
    is_object = (semantic > 0) & ~void
    single = is_object & (instance_ids >= 1000)
    group = is_object & (instance_ids < 1000)
    instances, count = files.compact_instances(
        np.where(single, instance_ids, 0), source.label, ignore=group | void
    )
    return base.Decoded(
        image=files.encoded_rgb(image, data, source.image),
        height=image.height,
        width=image.width,
        instances=instances,
        semantic=semantic,
        num_instances=count,
    )
