"""COCO instances: polygon and RLE annotations turned into label maps.

`manual_dir` holds annotations/instances_{train,val}<year>.json and the image
folders {train,val}<year>/. Each image becomes an instance map (ids 1..N in
painting order) and a class map (COCO's 80 categories as 1..80 in category
id order). Instances are painted from the largest to the smallest, so a small
object lying on a large one stays visible. Crowd regions ("iscrowd": 1) get
the ignore label in the instance map and their class in the class map, where
no single object covers them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os

import numpy as np
from pycocotools import coco as coco_lib
import tensorflow_datasets as tfds

from instseg_jax.data.builders import base
from instseg_jax.data.builders import files
from instseg_jax.data.builders.files import DataError

_SPLITS = {"train": "train", "validation": "val"}


@dataclasses.dataclass(eq=False)
class CocoConfig(base.FolderConfig):
  """Attributes: year: the release, as in instances_train<year>.json."""

  year: str = "2017"


class Coco(base.FolderBuilder):
  """COCO instance segmentation as label maps."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://cocodataset.org"
  USES_HOLDOUT = False
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download train2017.zip, val2017.zip and annotations_trainval2017.zip from
  https://cocodataset.org/#download, unzip them into one folder DIR (giving
  DIR/train2017/, DIR/val2017/ and DIR/annotations/instances_train2017.json)
  and pass --config.data.manual_dir=DIR. Either split may be left out.
  """
  BUILDER_CONFIGS = [
      CocoConfig(name="2017", description="COCO 2017 train / val.", year="2017"),
      CocoConfig(name="2014", description="COCO 2014 train / val.", year="2014"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "2017"

  # The 80 category names in id order; filled from the annotation file, since
  # a builder's class names must be known before the first example.
  CLASS_NAMES = ("background",)

  def find_sources(self, root: str) -> dict[str, list[base.Source]]:
    year = self.builder_config.year
    splits = {}
    categories = None
    for split, prefix in _SPLITS.items():
      path = os.path.join(root, "annotations", f"instances_{prefix}{year}.json")
      if not os.path.isfile(path):
        continue
      try:
        # pycocotools reports progress on stdout.
        with contextlib.redirect_stdout(io.StringIO()):
          api = coco_lib.COCO(path)
      except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: cannot read the annotations ({type(e).__name__}: {e})") from None
      cats = sorted(api.loadCats(api.getCatIds()), key=lambda c: c["id"])
      if categories is None:
        categories = cats
      class_of = {c["id"]: i for i, c in enumerate(cats, start=1)}
      image_dir = os.path.join(root, f"{prefix}{year}")
      splits[split] = [
          base.Source(
              id=os.path.splitext(info["file_name"])[0],
              image=os.path.join(image_dir, info["file_name"]),
              extra=(api, info, class_of),
          )
          for info in api.loadImgs(sorted(api.getImgIds()))
      ]
    if not splits:
      raise DataError(
          f"{root}: no annotations/instances_{{train,val}}{year}.json.\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    self.info.metadata["class_names"] = ["background"] + [c["name"] for c in categories]
    return splits

  def read(self, source: base.Source) -> base.Decoded:
    api, info, class_of = source.extra
    image, data = files.open_image(source.image)
    height, width = image.height, image.width
    if (info["height"], info["width"]) != (height, width):
      raise DataError(
          f"{source.image}: image is {height}x{width} (HxW) but the "
          f"annotations say {info['height']}x{info['width']}"
      )
    anns = api.loadAnns(api.getAnnIds(imgIds=[info["id"]], iscrowd=None))
    instances = np.zeros((height, width), np.int64)
    semantic = np.zeros((height, width), np.uint16)
    crowd = np.zeros((height, width), bool)
    try:
      for ann in (a for a in anns if a.get("iscrowd", 0)):
        mask = api.annToMask(ann).astype(bool)
        crowd |= mask
        semantic[mask] = class_of[ann["category_id"]]
      objects = [a for a in anns if not a.get("iscrowd", 0)]
      objects.sort(key=lambda a: -float(a.get("area", 0.0)))
      for number, ann in enumerate(objects, start=1):
        mask = api.annToMask(ann).astype(bool)
        instances[mask] = number
        semantic[mask] = class_of[ann["category_id"]]
    except (KeyError, IndexError, TypeError, ValueError) as e:
      raise DataError(
          f"{source.image}: bad annotation of image id {info['id']} " f"({type(e).__name__}: {e})"
      ) from None
    ignore = crowd & (instances == 0)
    instances, count = files.compact_instances(instances, source.image, ignore=ignore)
    return base.Decoded(
        image=files.encoded_rgb(image, data, source.image),
        height=height,
        width=width,
        instances=instances,
        semantic=semantic,
        num_instances=count,
    )
