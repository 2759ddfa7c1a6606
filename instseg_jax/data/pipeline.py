"""Host input pipeline: TFDS array_record files -> grain -> NumPy batches.

Training:

    it = pipeline.train_iterator(config, data_dir=d,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    batch = next(it)              # dict of NumPy arrays, per-process batch
    state = it.get_state()        # JSON-able dict; it.set_state(state) resumes

The iterator is a `grain.DatasetIterator`; `checkpoint.Checkpointer` saves it
next to the model with `grain.checkpoint.CheckpointSave(it)` and restores it
with `CheckpointRestore(it)`.

Every random choice (shuffle order, augmentation) is a function of the seed and
the element's position in the stream, so a restored iterator yields exactly
the batches the interrupted one would have.

Labels: stored 65535 ("ignore": VOC boundaries, COCO crowds, Cityscapes
groups) becomes config.data.ignore_label (negative, -1 by default), which the
discriminative and semantic losses leave out; so do pixels from outside the
image (padding, rotation corners) when config.data.ignore_padding is set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import functools
from typing import Any

from absl import logging
import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from instseg_jax import validate
from instseg_jax.data import builders
from instseg_jax.data import transforms
from instseg_jax.data.builders import files
from instseg_jax.registry import check_choice

Batch = dict[str, np.ndarray]

# How many offending files an error message lists before "and N more".
_NAMED_IN_ERRORS = 5


def _resolve_data_dir(config: ml_collections.ConfigDict, data_dir: str | None):
  # The argument wins over the config; "" in both means the TFDS default
  # (TFDS_DATA_DIR or ~/tensorflow_datasets).
  return data_dir or config.data.data_dir or None


def prepare(config: ml_collections.ConfigDict, *, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Writes the array_record files of `config.data` if they are missing.

  Idempotent: when the files exist this only reads the dataset info.

  Args:
    config: the experiment config; uses data.name, data.builder_config,
      data.manual_dir, data.data_dir, data.validation_fraction and
      data.skip_bad_examples.
    data_dir: overrides config.data.data_dir.

  Returns:
    The prepared builder.

  Raises:
    ValueError: config.data.name is not a known data set.
    builders.DataError: a bad input file or folder (the message names it).
  """
  builder = builders.get_builder(
      config.data.name,
      data_dir=_resolve_data_dir(config, data_dir),
      config=config.data.builder_config or None,
      manual_dir=config.data.manual_dir or None,
      validation_fraction=config.data.validation_fraction,
      skip_bad_examples=config.data.skip_bad_examples,
  )
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=builder.manual_dir),
  )
  return builder


def data_classes(builder: tfds.core.DatasetBuilder) -> list[str] | None:
  """The class names of the prepared data (0 = background), or None if unknown."""
  metadata = builder.info.metadata
  if metadata is not None and "class_names" in metadata:
    return list(metadata["class_names"])
  names = getattr(builder, "CLASS_NAMES", None)
  return None if names is None else list(names)


def check_prepared(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder) -> None:
  """Checks, before any step, what the run will read from the prepared data.

  A missing evaluation split would otherwise surface after the whole training,
  and semantic labels at or above data.num_classes would be silently left out
  of the loss.

  Raises:
    validate.ConfigError: data.train_split or data.eval_split is not a split of
      the data, or data.num_classes is below the number of classes it holds.
  """
  splits = sorted(builder.info.splits.keys())
  for field in ("train_split", "eval_split"):
    split = config.data[field]
    if split in splits:
      continue
    hint = ""
    if getattr(builder, "USES_HOLDOUT", False) and not config.data.validation_fraction:
      hint = (
          "; config.data.validation_fraction=0 holds out no " "'validation' split, set it above 0"
      )
    raise validate.ConfigError(
        f"config.data.{field}={split!r} is not a split of data set "
        f"{config.data.name!r} in {builder.data_dir} (splits: {splits}){hint}"
    )
  classes = data_classes(builder)
  if classes is not None and config.data.num_classes < len(classes):
    raise validate.ConfigError(
        f"config.data.num_classes={config.data.num_classes} is below the "
        f"{len(classes)} classes (background included) of data set "
        f"{config.data.name!r}; set --config.data.num_classes={len(classes)}"
    )


def split_stats(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, list] | None:
  """Per-example facts the builder stored for `split`, or None.

  A dict with "num_instances" and "image_sizes" (one entry per record, in
  record order) and "skipped" (messages of the files left out as bad).
  """
  metadata = builder.info.metadata
  if metadata is None or "splits" not in metadata:
    return None
  return metadata["splits"].get(split)


class _Subset:
  """The records of a data source at the given indices (a grain source)."""

  def __init__(self, source, indices: Sequence[int]):
    self._source = source
    self.indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self._source[int(self.indices[index])]


def _record_name(record: dict[str, Any]) -> str:
  name = record.get("file_name", record.get("id", b"?"))
  return name.decode() if isinstance(name, bytes) else str(name)


def usable_indices(
    config: ml_collections.ConfigDict,
    builder: tfds.core.DatasetBuilder,
    source,
    *,
    split: str,
) -> np.ndarray:
  """Record indices of `split` that have at most data.max_instances instances.

  Checked from the instance counts the builder stored, before any batch is
  made, so an image the loss cannot hold stops the run at once rather than
  hours in.

  Raises:
    builders.DataError: some records have too many instances and
      data.skip_bad_examples is off; the message names their files.
  """
  everything = np.arange(len(source))
  stats = split_stats(builder, split)
  counts = None if stats is None else stats.get("num_instances")
  if counts is None or len(counts) != len(source):
    return everything
  counts = np.asarray(counts, np.int64)
  limit = int(config.data.max_instances)
  over = np.flatnonzero(counts > limit)
  if not over.size:
    return everything
  named = ", ".join(
      f"{_record_name(source[int(i)])} ({counts[i]})" for i in over[:_NAMED_IN_ERRORS]
  )
  more = over.size - _NAMED_IN_ERRORS
  named += f" and {more} more" if more > 0 else ""
  message = (
      f"{over.size} of {len(source)} examples of split {split!r} have more "
      f"instances than config.data.max_instances={limit}: {named}"
  )
  if not config.data.skip_bad_examples:
    raise builders.DataError(
        f"{message}. Raise config.data.max_instances to at least "
        f"{counts.max()} or set config.data.skip_bad_examples=True to leave "
        "them out."
    )
  logging.warning("%s; left out (config.data.skip_bad_examples=True).", message)
  return np.flatnonzero(counts <= limit)


def repeated_by_kind(config: ml_collections.ConfigDict, source, indices: np.ndarray) -> np.ndarray:
  """`indices` with each record repeated as data.repeat_by_kind says for its image's kind.

  Decodes every image once to tell its kind, so only when some kind repeats other than once.
  """
  repeats = dict(config.data.repeat_by_kind)
  if all(int(n) == 1 for n in repeats.values()):
    return indices
  counts = [int(repeats[transforms.image_kind(_decoded_image(source[int(i)]))]) for i in indices]
  logging.info("Training visits per image by kind: %s.", repeats)
  return np.repeat(indices, counts)


def _attach_index(
    index: int, record: dict[str, Any], *, record_indices: np.ndarray
) -> dict[str, Any]:
  # Grain hands the position in the repeated stream to index-aware maps even
  # when they sit upstream of `repeat`; the record is that modulo the source
  # length, and its index in the split is looked up for subsets.
  return {**record, "index": record_indices[index % len(record_indices)]}


def _attach_position(position: int, record: dict[str, Any]) -> dict[str, Any]:
  return {**record, "position": position}


def _augment_at_position(
    example: transforms.Example, *, seed: int, **options
) -> transforms.Example:
  # The generator depends on the position in the global stream only, not on
  # how the stream is split between processes.
  rng = np.random.default_rng([seed, int(example.pop("position"))])
  return transforms.augment(example, rng, **options)


def ignore_label(config: ml_collections.ConfigDict) -> int:
  """config.data.ignore_label, checked to be negative.

  Raises:
    ValueError: a non-negative value, which would read as an instance id or
      a class.
  """
  value = int(config.data.ignore_label)
  if value >= 0:
    raise ValueError(
        f"config.data.ignore_label={value} must be negative: 0 is background "
        "and positive values are instance ids and classes."
    )
  return value


def size_mode(config: ml_collections.ConfigDict) -> str:
  """config.data.size_mode, checked.

  Raises:
    validate.ConfigError: not one of transforms.SIZE_MODES.
  """
  check_choice("config.data.size_mode", config.data.size_mode, transforms.SIZE_MODES)
  return config.data.size_mode


def _label_fill(config: ml_collections.ConfigDict) -> int:
  """The label of pixels from outside the image."""
  return ignore_label(config) if config.data.ignore_padding else 0


def _label_map(stored: Any, *, ignore: int) -> np.ndarray:
  labels = np.asarray(stored)
  out = labels.astype(np.int32)
  if labels.dtype == np.uint16:
    out[labels == files.STORED_IGNORE] = ignore
  return out


def _decode(record: dict[str, Any], *, ignore: int = -1) -> transforms.Example:
  """TFDS record -> uint8 RGB image and int32 label maps (ignore < 0)."""
  image = _decoded_image(record)
  instances = _label_map(record["instances"], ignore=ignore)
  if "semantic" in record:
    semantic = _label_map(record["semantic"], ignore=ignore)
  else:
    semantic = np.where(instances < 0, instances, instances > 0).astype(np.int32)
  example = {
      "image": image,
      "instances": instances,
      "semantic": semantic,
      "index": np.int32(record["index"]),
  }
  if "position" in record:
    example["position"] = record["position"]
  if "id" in record:
    ident = record["id"]
    example["id"] = ident.decode() if isinstance(ident, bytes) else str(ident)
  return example


def _decoded_image(record: dict[str, Any]) -> np.ndarray:
  """The record's image as (H, W, 3): uint8 as stored, other integers and floats in [0, 1]."""
  image = np.asarray(record["image"])
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  image = image[..., :3]  # An alpha channel carries no signal here.
  if image.dtype != np.uint8:
    scale = np.iinfo(image.dtype).max if image.dtype.kind in "ui" else 1.0
    image = image.astype(np.float32) / np.float32(scale)
  return image


def _normalized(example: transforms.Example, *, kind: str) -> transforms.Example:
  return dict(example, image=transforms.normalize_intensity(example["image"], kind))


def _finalize(example: transforms.Example, *, keep_id: bool = False) -> Batch:
  """Fixes dtypes and renumbers instances after crops removed some."""
  instances, count = transforms.renumber_instances(example["instances"])
  out = {
      "image": np.ascontiguousarray(transforms.to_float(example)["image"], dtype=np.float32),
      "instances": instances,
      "semantic": np.ascontiguousarray(example["semantic"], dtype=np.int32),
      "num_instances": np.int32(count),
      "index": np.int32(example["index"]),
  }
  if keep_id:
    out["id"] = example["id"]
  return out


def augment_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Keyword arguments of `transforms.augment` from config.data."""
  data = config.data
  return {
      "size": tuple(data.image_size),
      "mode": size_mode(config),
      "max_degrees": float(data.aug_max_degrees),
      "scale_range": tuple(data.aug_scale_range),
      "hflip": bool(data.aug_hflip),
      "vflip": bool(data.aug_vflip),
      "rot90": bool(data.aug_rot90),
      "brightness": float(data.aug_brightness),
      "contrast": float(data.aug_contrast),
      "saturation": float(data.aug_saturation),
      "gamma": float(data.aug_gamma),
      "foreground_crop": float(data.aug_foreground_crop),
      "label_fill": _label_fill(config),
  }


def _unaugmented(
    example: transforms.Example, *, size: Sequence[int], mode: str, label_fill: int
) -> transforms.Example:
  return transforms.fixed_window(example, size=size, mode=mode, label_fill=label_fill)


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  return grain.ReadOptions(
      num_threads=int(config.data.read_threads),
      prefetch_buffer_size=int(config.data.prefetch_batches),
  )


def train_dataset(
    config: ml_collections.ConfigDict,
    *,
    data_dir: str | None,
    process_index: int = 0,
    process_count: int = 1,
    seed: int | None = None,
) -> grain.IterDataset:
  """The infinite training stream of this process as a grain dataset.

  Order of operations: leave out records over data.max_instances (or fail,
  see `usable_indices`), index the records, shuffle them all (the same
  permutation in every process, reshuffled every epoch), repeat forever, take
  this process's elements (positions process_index, process_index +
  process_count, ... of the stream), decode, augment (or bring to
  data.image_size as data.size_mode says), renumber instances, batch.
  Batches may span an epoch boundary.

  Args:
    config: the experiment config (data.*, train.batch_size, seed).
    data_dir: overrides config.data.data_dir.
    process_index: this JAX process.
    process_count: number of JAX processes.
    seed: overrides config.seed.

  Returns:
    An IterDataset of batches; see `train_iterator`.

  Raises:
    ValueError: unknown data set, a batch size the processes cannot share,
      or a bad data.size_mode or data.ignore_label.
    builders.DataError: a bad input file, or images over data.max_instances.
  """
  batch_size = validate.check_batch_split(config.train.batch_size, process_count, "processes")
  seed = config.seed if seed is None else seed
  size = tuple(config.data.image_size)
  split = config.data.train_split
  builder = prepare(config, data_dir=data_dir)
  source = builder.as_data_source(split=split)
  indices = repeated_by_kind(config, source, usable_indices(config, builder, source, split=split))
  if not np.array_equal(indices, np.arange(len(source))):
    source = _Subset(source, indices)

  if len(source) < config.train.batch_size:
    raise ValueError(
        f"The {split} split holds {len(source)} usable examples, "
        f"fewer than train.batch_size={config.train.batch_size}."
    )
  ds = grain.MapDataset.source(source).map_with_index(
      functools.partial(_attach_index, record_indices=indices)
  )
  ds = ds.seed(seed)
  buffer = int(config.data.shuffle_buffer)
  if buffer > 0:
    # Shuffles within consecutive windows of records: locality for slow
    # storage, at the price of a weaker shuffle whose windows may straddle an
    # epoch boundary.
    ds = grain.experimental.WindowShuffleMapDataset(ds, window_size=buffer, seed=seed)
  else:
    ds = ds.shuffle()
  ds = ds.repeat().map_with_index(_attach_position)
  # Sharding after the global shuffle: every process walks the same permuted
  # stream and takes every process_count-th element, so the processes' k-th
  # batches together hold exactly the k-th global batch of a single process,
  # and augmentation keyed on the stream position is the same either way.
  ds = ds[process_index::process_count].map(functools.partial(_decode, ignore=ignore_label(config)))
  if config.data.normalize != "none":
    # On the whole stored image, before any crop, as inference.Geometry does.
    ds = ds.map(functools.partial(_normalized, kind=config.data.normalize))
  if config.data.augment:
    ds = ds.map(functools.partial(_augment_at_position, seed=seed, **augment_options(config)))
  else:
    ds = ds.map(
        functools.partial(
            _unaugmented,
            size=size,
            mode=size_mode(config),
            label_fill=_label_fill(config),
        )
    )
  ds = ds.map(_finalize).batch(batch_size, drop_remainder=True)
  # Batching before the hand-over to threads/workers keeps batch contents
  # independent of read_threads and worker_count.
  stream = ds.to_iter_dataset(_read_options(config))
  workers = int(config.data.worker_count)
  if workers > 0:
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return stream


def train_iterator(
    config: ml_collections.ConfigDict,
    *,
    data_dir: str | None,
    process_index: int = 0,
    process_count: int = 1,
    seed: int | None = None,
) -> grain.DatasetIterator:
  """Infinite iterator over this process's training batches.

  Each batch is a dict of NumPy arrays, b = train.batch_size // process_count
  and (H, W) = data.image_size:
    image: float32 (b, H, W, 3) in [0, 1].
    instances: int32 (b, H, W), 0 = background, ids 1..num_instances,
      data.ignore_label (negative) where the loss must not look.
    semantic: int32 (b, H, W), classes 0..num_classes-1 or data.ignore_label.
    num_instances: int32 (b,).
    index: int32 (b,), the record's index in the split.

  The iterator has `get_state() -> dict` and `set_state(dict)`; restoring a
  state into a fresh iterator built from the same config resumes the exact
  stream. With data.worker_count > 0 the calling program must run under
  `absl.app.run` with an `if __name__ == "__main__"` guard, and should call
  `close()` when done.

  Args: see `train_dataset`.
  """
  return iter(
      train_dataset(
          config,
          data_dir=data_dir,
          process_index=process_index,
          process_count=process_count,
          seed=seed,
      )
  )


def _decoded_eval_split(
    config: ml_collections.ConfigDict,
    *,
    data_dir: str | None,
    split: str | None,
    limit: int | None,
) -> grain.MapDataset:
  """The first `limit` records of the eval split in record order, decoded."""
  split = split or config.data.eval_split
  source = prepare(config, data_dir=data_dir).as_data_source(split=split)
  limit = config.data.num_eval_images if limit is None else limit
  count = len(source) if limit <= 0 else min(limit, len(source))
  ds = grain.MapDataset.source(source).map_with_index(
      functools.partial(_attach_index, record_indices=np.arange(len(source)))
  )[:count]
  return ds.map(functools.partial(_decode, ignore=ignore_label(config)))


def _eval_read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=int(config.data.read_threads), prefetch_buffer_size=4)


def eval_records(
    config: ml_collections.ConfigDict,
    *,
    data_dir: str | None,
    split: str | None = None,
    limit: int | None = None,
) -> Iterator[Batch]:
  """Yields the first examples of the eval split in record order, as stored.

  What `inference.Segmenter` and the metrics take: every image at its own
  resolution, scored on its own grid (the CVPPP protocol).

  Each example has "image" float32 (H, W, 3) in [0, 1] (`transforms.to_float`,
  as in training), "instances" int32 (H, W) renumbered 1..N (the ignore label
  kept), "semantic" int32 (H, W), "num_instances", "index" and "id" (str).

  Args:
    config: the experiment config.
    data_dir: overrides config.data.data_dir.
    split: defaults to config.data.eval_split.
    limit: at most this many examples; defaults to data.num_eval_images
      (0 or less = the whole split).
  """
  ds = _decoded_eval_split(config, data_dir=data_dir, split=split, limit=limit)
  ds = ds.map(functools.partial(_finalize, keep_id=True))
  yield from ds.to_iter_dataset(_eval_read_options(config))
