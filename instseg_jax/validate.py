"""Checks a config before any work starts, so a typo costs seconds, not an hour.

Each problem is reported as one ConfigError whose message names the field and the fix.
"""

import os
from typing import Any

import ml_collections

from instseg_jax.registry import ConfigError
from instseg_jax.registry import check_choice

__all__ = ["ConfigError", "check_batch_split", "validate"]


def _value(config: ml_collections.ConfigDict, path: str) -> Any:
  value = config
  for part in path.split("."):
    value = value[part]
  return value


def _choice(config: ml_collections.ConfigDict, path: str, choices) -> None:
  check_choice(f"config.{path}", _value(config, path), choices)


def _positive(config: ml_collections.ConfigDict, path: str) -> None:
  value = _value(config, path)
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f"config.{path}={value!r} must be a positive integer")


def _at_least(
    config: ml_collections.ConfigDict, path: str, bound: float, *, strict: bool = False
) -> None:
  """Checks a number against its bound: value > bound (strict) or value >= bound."""
  value = _value(config, path)
  ok = (
      isinstance(value, (int, float))
      and not isinstance(value, bool)
      and (value > bound if strict else value >= bound)
  )
  if not ok:
    raise ConfigError(f"config.{path}={value!r} must be {'>' if strict else '>='} {bound}")


def check_batch_split(batch_size: int, parts: int, what: str) -> int:
  """The share of each of `parts` devices (or processes) in the global config.train.batch_size.

  Raises:
    ConfigError: the batch does not split evenly (or is not positive).
  """
  if batch_size <= 0 or batch_size % parts:
    raise ConfigError(
        f"config.train.batch_size={batch_size} is not divisible by the {parts} {what}; "
        f"use a positive multiple of {parts}"
    )
  return batch_size // parts


def validate(config: ml_collections.ConfigDict, *, num_devices: int) -> None:
  """Raises ConfigError on the first field the run cannot use.

  A stored config (an exported bundle's) is checked after `configs.default.with_defaults`
  filled in the fields its version lacked, so every field is there.
  """
  # Imported here: the registries pull in jax, flax and tfds.
  from instseg_jax import cluster  # pylint: disable=g-import-not-at-top
  from instseg_jax import evaluate  # pylint: disable=g-import-not-at-top
  from instseg_jax import inference  # pylint: disable=g-import-not-at-top
  from instseg_jax import losses  # pylint: disable=g-import-not-at-top
  from instseg_jax import models  # pylint: disable=g-import-not-at-top
  from instseg_jax import optim  # pylint: disable=g-import-not-at-top
  from instseg_jax.data import builders  # pylint: disable=g-import-not-at-top
  from instseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from instseg_jax.data import transforms  # pylint: disable=g-import-not-at-top

  _choice(config, "data.name", builders.BUILDERS)
  # "" means the builder's default config.
  if config.data.builder_config:
    _choice(config, "data.builder_config", builders.builder_config_names(config.data.name))
  pipeline.size_mode(config)
  _choice(config, "data.normalize", transforms.INTENSITY_NORMALIZATIONS)
  _choice(config, "loss.seed_target", losses.SEED_TARGETS)
  # The owners of these choices check them as they build from the config, naming the valid
  # ones: the model (name, dtype, norm, cell, position_encoding), the optimizer and its
  # schedule, the clustering method. Built here, a wrong name fails before any work.
  model = models.create_model(config)
  optim.make_optimizer(config)
  inference.PostProcess.from_config(config)
  if (
      config.cluster.method == "kmeans"
      and not config.cluster.num_clusters
      and not config.model.counter
  ):
    raise ConfigError(
        "config.cluster.method='kmeans' needs config.cluster.num_clusters > 0 "
        "or config.model.counter=True to predict the count"
    )
  if cluster.METHODS[config.cluster.method].needs_seed and not config.model.seed_head:
    raise ConfigError(
        f"config.cluster.method={config.cluster.method!r} needs the seed head: set "
        "config.model.seed_head=True"
    )
  pretrained = config.model.pretrained
  if pretrained and not os.path.isfile(pretrained):
    raise ConfigError(f"config.model.pretrained={pretrained!r}: no such file")
  if config.loss.preset:
    _choice(config, "loss.preset", losses.LOSS_PRESETS)
  for path in (
      "train.batch_size",
      "train.num_steps",
      "train.log_every",
      "train.checkpoint_every",
      "data.max_instances",
      "model.embedding_dim",
      *(f"data.repeat_by_kind.{kind}" for kind in transforms.IMAGE_KINDS),
  ):
    _positive(config, path)
  # A bandwidth of 0 gives degenerate labels, a negative side shrinks every image to one
  # pixel, and keeping no checkpoint leaves nothing to resume or evaluate.
  _at_least(config, "cluster.bandwidth", 0, strict=True)
  _at_least(config, "loss.seed_sigma", 0, strict=True)
  _at_least(config, "model.pixels_per_unit", 0, strict=True)
  _at_least(config, "predict.max_side", 0)
  _at_least(config, "cluster.tune_images", 0)
  _at_least(config, "cluster.min_confidence", 0)
  _at_least(config, "train.keep_checkpoints", 1)
  _at_least(config, "train.eval_every", 0)
  _at_least(config, "train.checkpoint_every_seconds", 0)
  _at_least(config, "train.profile_steps", 0)
  _choice(config, "eval.checkpoint", evaluate.CHECKPOINTS)
  _choice(config, "eval.metric", evaluate.ranked_metrics(config))
  if config.data.num_classes < 2:
    raise ConfigError(
        f"config.data.num_classes={config.data.num_classes} must count background and at "
        "least one foreground class (>= 2)"
    )

  check_batch_split(config.train.batch_size, num_devices, "devices")
  size = tuple(config.data.image_size)
  if len(size) != 2 or any(not isinstance(s, int) or s <= 0 for s in size):
    raise ConfigError(f"config.data.image_size={size!r} must be two positive integers (H, W)")
  stride = model.stride
  if size[0] % stride or size[1] % stride:
    fixed = tuple(-(-s // stride) * stride for s in size)
    raise ConfigError(
        f"config.data.image_size={size} is not divisible by the network's stride {stride}; "
        f"use e.g. {fixed}"
    )
