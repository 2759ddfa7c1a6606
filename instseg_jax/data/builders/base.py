"""What the builders of downloaded data sets share.

Each such builder reads image and label files from a folder the user
downloaded (`manual_dir`), and writes examples of one form:

  image:     (H, W, 3) uint8 at the file's own size (PNG, or the original JPEG
             bytes).
  instances: (H, W) uint16, 0 = background, 1..N instances, 65535 = ignore.
  semantic:  (H, W) uint16, class per pixel, 0 = background, 65535 = ignore.
  id:        a unique name of the example (its path relative to manual_dir
             without the suffix).
  file_name: the image file, relative to manual_dir.

Record i of a split is the i-th example in sorted id order. Per example
facts the pipeline needs without decoding the records (instance counts, image
sizes) and the examples skipped as bad go to `info.metadata["splits"]`.

Two folders must never share one cache silently, so `keyed_config` names the
builder config after a hash of the folder's absolute path, of the names,
sizes and modification times of its files, and of the options that change
what is built (holdout fraction, skipping of bad files): the files live in
<data_dir>/<name>/<config>-<hash>/.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import hashlib
import json
import os
from typing import Any

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from instseg_jax.data.builders import files
from instseg_jax.data.builders.files import DataError


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """Options every folder-reading builder takes.

  Attributes:
    manual_dir: the folder holding the downloaded data; see each builder's
      MANUAL_DOWNLOAD_INSTRUCTIONS.
    validation_fraction: for data without a validation split, the fraction of
      the labelled examples held out as "validation" (deterministic: the
      examples with the smallest SHA-1 of their id). 0 = no validation split.
    skip_bad_examples: skip (with a warning, counted in the metadata) an
      example whose files are bad instead of stopping the build.
  """

  manual_dir: str = ""
  validation_fraction: float = 0.2
  skip_bad_examples: bool = False


@dataclasses.dataclass(frozen=True)
class Source:
  """One example to read.

  Attributes:
    id: unique name of the example.
    image: absolute path of the image file.
    label: absolute path of the (main) label file; None for unlabelled data.
    extra: whatever else the builder needs to read it.
  """

  id: str
  image: str
  label: str | None = None
  extra: Any = None


@dataclasses.dataclass
class Decoded:
  """One example as read from disk, ready for TFDS."""

  image: bytes  # PNG or JPEG
  height: int
  width: int
  instances: np.ndarray  # uint16 (H, W)
  semantic: np.ndarray  # uint16 (H, W)
  num_instances: int


def holdout(sources: Sequence[Source], fraction: float) -> dict[str, list[Source]]:
  """Splits sources into "train" and a deterministic "validation" part.

  The validation part is the round(fraction * n) sources (at least one, at
  most n - 1) with the smallest SHA-1 of their id: the same ids whatever the
  order or number of other files, and close to a uniform random choice.
  """
  sources = sorted(sources, key=lambda s: s.id)
  if fraction <= 0 or len(sources) < 2:
    return {"train": sources}
  count = min(len(sources) - 1, max(1, round(fraction * len(sources))))
  ranked = sorted(sources, key=lambda s: hashlib.sha1(s.id.encode()).digest())
  held = {s.id for s in ranked[:count]}
  return {
      "train": [s for s in sources if s.id not in held],
      "validation": [s for s in sources if s.id in held],
  }


def read_instance_example(source: Source, *, foreground: str | None = None) -> Decoded:
  """Reads an image and an instance label map; semantic = instances > 0.

  Without a label file (unlabelled test data) the instances are all 0 and the
  semantic map is the `foreground` mask when one is given, else 0.
  """
  image, data = files.open_image(source.image)
  height, width = image.height, image.width
  if source.label is not None:
    label = files.read_label(source.label)
    files.check_same_size(image, source.image, label, source.label)
    instances, count = files.compact_instances(label, source.label)
    semantic = (instances > 0).astype(np.uint16)
  else:
    instances = np.zeros((height, width), np.uint16)
    count = 0
    semantic = np.zeros((height, width), np.uint16)
    if foreground is not None:
      mask = files.read_label(foreground)
      files.check_same_size(image, source.image, mask, foreground)
      semantic = (mask > 0).astype(np.uint16)
  return Decoded(
      image=files.encoded_rgb(image, data, source.image),
      height=height,
      width=width,
      instances=instances,
      semantic=semantic,
      num_instances=count,
  )


class FolderBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the builders that read a user-downloaded folder.

  Subclasses set CLASS_NAMES, MANUAL_DOWNLOAD_INSTRUCTIONS and implement
  `find_sources` (which files form which split) and `read` (one example).
  """

  # Class 0 is background; len(CLASS_NAMES) is config.data.num_classes.
  CLASS_NAMES: tuple[str, ...] = ("background", "foreground")
  # Whether the builder may hold out part of the training data as validation
  # (so config.data.validation_fraction changes its content).
  USES_HOLDOUT = True
  HOMEPAGE = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "instances": tfds.features.Tensor(
                    shape=(None, None), dtype=np.uint16, encoding="zlib"
                ),
                "semantic": tfds.features.Tensor(
                    shape=(None, None), dtype=np.uint16, encoding="zlib"
                ),
                "id": tfds.features.Text(),
                "file_name": tfds.features.Text(),
            }
        ),
        disable_shuffling=True,
        homepage=self.HOMEPAGE,
        metadata=tfds.core.MetadataDict(),
    )

  def manual_root(self, dl_manager=None) -> str:
    """The data folder, checked to exist.

    Raises:
      DataError: no folder was given, or it is not a folder.
    """
    folder = getattr(self.builder_config, "manual_dir", "")
    if not folder and dl_manager is not None:
      folder = os.fspath(getattr(dl_manager, "_manual_dir", "") or "")
    if not folder:
      raise DataError(
          f"data set {self.name!r} reads files you download yourself; set "
          f"--config.data.manual_dir=DIR.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    if not os.path.isdir(folder):
      raise DataError(f"{folder}: folder not found (config.data.manual_dir)")
    return folder

  def find_sources(self, root: str) -> dict[str, list[Source]]:
    """The sources of each split, given the data folder."""
    raise NotImplementedError

  def read(self, source: Source) -> Decoded:
    """Reads one example; raises DataError naming the bad file."""
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    root = self.manual_root(dl_manager)
    metadata = self.info.metadata
    metadata["manual_dir"] = os.path.abspath(root)
    # find_sources may replace these with names read from the data.
    metadata["class_names"] = list(self.CLASS_NAMES)
    metadata["splits"] = {}
    splits = {k: v for k, v in self.find_sources(root).items() if v}
    if not splits:
      raise DataError(f"{root}: no examples found.\n" f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {
        split: self._generate_examples(split=split, sources=sources, root=root)
        for split, sources in splits.items()
    }

  def _generate_examples(
      self, *, split: str, sources: Sequence[Source], root: str
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    stats = {"num_instances": [], "image_sizes": [], "skipped": []}
    self.info.metadata["splits"][split] = stats
    skip = getattr(self.builder_config, "skip_bad_examples", False)
    key = 0
    for source in sorted(sources, key=lambda s: s.id):
      try:
        decoded = self.read(source)
      except DataError as error:
        if not skip:
          raise
        logging.warning("%s: skipping %s: %s", self.name, source.id, error)
        stats["skipped"].append(str(error))
        continue
      stats["num_instances"].append(decoded.num_instances)
      stats["image_sizes"].append([decoded.height, decoded.width])
      # Integer keys in increasing order: with shuffling disabled TFDS
      # writes records in key order, so record i matches the stats' entry i.
      yield key, {
          "image": decoded.image,
          "instances": decoded.instances,
          "semantic": decoded.semantic,
          "id": source.id,
          "file_name": os.path.relpath(source.image, root).replace(os.sep, "/"),
      }
      key += 1
    if key == 0:
      # TFDS cannot write an empty split; say why it would be empty.
      raise DataError(
          f"{root}: all {len(sources)} examples of split {split!r} are bad, "
          f"e.g. {stats['skipped'][0] if stats['skipped'] else '?'}"
      )
    if stats["skipped"]:
      logging.warning(
          "%s: skipped %d bad examples of split %s (config.data." "skip_bad_examples=True)",
          self.name,
          len(stats["skipped"]),
          split,
      )


def resolve_config(
    cls: type[tfds.core.GeneratorBasedBuilder],
    config: str | tfds.core.BuilderConfig | None,
) -> tfds.core.BuilderConfig:
  """The builder config object named by `config` ("default" = the default)."""
  if isinstance(config, tfds.core.BuilderConfig):
    return config
  configs = {c.name: c for c in cls.BUILDER_CONFIGS}
  if not config or (config == "default" and "default" not in configs):
    config = cls.DEFAULT_BUILDER_CONFIG_NAME or cls.BUILDER_CONFIGS[0].name
  if config not in configs:
    raise ValueError(
        f"Unknown builder config {config!r} of {cls.__name__}; known: " f"{sorted(configs)}."
    )
  return configs[config]


def folder_fingerprint(root: str, *, exclude: Sequence[str] = ()) -> str:
  """A hash of the relative path, size and modification time of every file under root.

  Hidden files and folders (".DS_Store", ".git") and the folders in `exclude`
  (a data_dir inside the data folder, which the build itself changes) are left
  out. Reads no file contents, so it costs a directory walk.
  """
  excluded = {os.path.realpath(path) for path in exclude}
  digest = hashlib.sha1()
  for folder, subfolders, names in os.walk(root, followlinks=True):
    subfolders[:] = sorted(
        d
        for d in subfolders
        if not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) not in excluded
    )
    for name in sorted(n for n in names if not n.startswith(".")):
      path = os.path.join(folder, name)
      try:
        stat = os.stat(path)
      except OSError:
        continue  # A broken link: the build names it if it matters.
      relative = os.path.relpath(path, root).replace(os.sep, "/")
      digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()


def keyed_config(
    cls: type[FolderBuilder],
    config: str | tfds.core.BuilderConfig | None,
    *,
    manual_dir: str | None,
    validation_fraction: float | None = None,
    skip_bad_examples: bool | None = None,
    data_dir: str | None = None,
) -> FolderConfig:
  """A copy of the named config that carries the folder and is keyed by it.

  The name becomes "<config>-<8 hex digits>" from the folder's absolute,
  symlink-resolved path, its `folder_fingerprint`, the holdout fraction and
  skip_bad_examples: another folder, changed files, another split of the same
  folder, or a build that skips bad files each get their own cache in the same
  data_dir, so a cache never holds data other than what the config asks for.

  Args:
    cls: the builder.
    config: a config name or object, see `resolve_config`.
    manual_dir: the data folder.
    validation_fraction: overrides the config's.
    skip_bad_examples: overrides the config's.
    data_dir: where the builder writes; left out of the fingerprint when it
      lies inside the data folder.

  Raises:
    DataError: no manual_dir (the message holds the download instructions).
  """
  base = resolve_config(cls, config)
  updates = {}
  if manual_dir:
    updates["manual_dir"] = os.path.realpath(os.path.expanduser(manual_dir))
  if validation_fraction is not None:
    updates["validation_fraction"] = float(validation_fraction)
  if skip_bad_examples is not None:
    updates["skip_bad_examples"] = bool(skip_bad_examples)
  keyed = dataclasses.replace(base, **updates)
  if not keyed.manual_dir:
    raise DataError(
        f"data set {cls.name!r} reads files you download yourself; set "
        f"--config.data.manual_dir=DIR.\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )
  key = {"manual_dir": keyed.manual_dir, "skip_bad_examples": keyed.skip_bad_examples}
  if os.path.isdir(keyed.manual_dir):
    # A missing folder is reported by the build, with the config field to fix.
    key["files"] = folder_fingerprint(keyed.manual_dir, exclude=[data_dir] if data_dir else [])
  if cls.USES_HOLDOUT:
    key["validation_fraction"] = keyed.validation_fraction
  digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
  # A config object that already carries a key is not keyed twice.
  name = base.name.split("-")[0]
  return dataclasses.replace(keyed, name=f"{name}-{digest[:8]}")
