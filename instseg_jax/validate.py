"""Checks a config before any work starts, so a typo costs seconds, not an hour.

Each problem is reported as one ConfigError whose message names the field and the fix.
"""

import os

import ml_collections


class ConfigError(ValueError):
  """A config field holds a value the run cannot use."""


def _choice(config: ml_collections.ConfigDict, path: str, choices) -> None:
  value = config
  for part in path.split("."):
    value = value[part]
  if value not in choices:
    raise ConfigError(f"config.{path}={value!r} is not one of {sorted(choices)}")


def _positive(config: ml_collections.ConfigDict, path: str) -> None:
  value = config
  for part in path.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f"config.{path}={value!r} must be a positive integer")


def _at_least(config: ml_collections.ConfigDict, path: str, bound: float, *,
              strict: bool = False) -> None:
  """Checks a number against its bound: value > bound (strict) or value >= bound.

  A field the config lacks (a bundle exported by an older version) is left alone.
  """
  value = config
  for part in path.split("."):
    if part not in value:
      return
    value = value[part]
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
        and (value > bound if strict else value >= bound))
  if not ok:
    raise ConfigError(f"config.{path}={value!r} must be {'>' if strict else '>='} {bound}")


def validate(config: ml_collections.ConfigDict, *, num_devices: int) -> None:
  """Raises ConfigError on the first field the run cannot use."""
  # Imported here: the registries pull in jax, flax and tfds.
  from instseg_jax import cluster  # pylint: disable=g-import-not-at-top
  from instseg_jax import losses  # pylint: disable=g-import-not-at-top
  from instseg_jax import models  # pylint: disable=g-import-not-at-top
  from instseg_jax.data import builders  # pylint: disable=g-import-not-at-top
  from instseg_jax.data import transforms  # pylint: disable=g-import-not-at-top

  _choice(config, "data.name", builders.BUILDERS)
  # "" (or no field) means the builder's default config.
  if config.data.get("builder_config", ""):
    _choice(config, "data.builder_config", builders.builder_config_names(config.data.name))
  if "size_mode" in config.data:  # Older bundles lack it: the pipeline's default applies.
    _choice(config, "data.size_mode", transforms.SIZE_MODES)
  if "normalize" in config.data:  # Older bundles lack it: no normalization.
    _choice(config, "data.normalize", transforms.INTENSITY_NORMALIZATIONS)
  _choice(config, "model.name", models.MODELS)
  _choice(config, "model.dtype", models.DTYPES)
  _choice(config, "cluster.method", cluster.METHODS)
  model_choices = {"norm": models.layers.NORMS, "cell": tuple(models.renet.GATES),
                   "position_encoding": models.layers.POSITION_ENCODINGS}
  for field, choices in model_choices.items():
    if field in config.model:
      _choice(config, f"model.{field}", choices)
  if (config.cluster.method == "kmeans" and not config.cluster.get("num_clusters", 0)
      and not config.model.get("counter", False)):
    raise ConfigError("config.cluster.method='kmeans' needs config.cluster.num_clusters > 0 "
                      "or config.model.counter=True to predict the count")
  pretrained = config.model.get("pretrained", "")
  if pretrained and not os.path.isfile(pretrained):
    raise ConfigError(f"config.model.pretrained={pretrained!r}: no such file")
  _choice(config, "optim.name", ("adam", "adamw", "sgd"))
  _choice(config, "optim.schedule", ("constant", "cosine"))
  preset = config.loss.get("preset", "")
  if preset and preset not in losses.LOSS_PRESETS:
    raise ConfigError(f"config.loss.preset={preset!r} is not one of {sorted(losses.LOSS_PRESETS)}")
  for path in ("train.batch_size", "train.num_steps", "train.log_every",
               "train.checkpoint_every", "data.max_instances", "model.embedding_dim"):
    _positive(config, path)
  # A bandwidth of 0 gives degenerate labels, a negative side shrinks every image to one
  # pixel, and keeping no checkpoint leaves nothing to resume or evaluate.
  _at_least(config, "cluster.bandwidth", 0, strict=True)
  _at_least(config, "predict.max_side", 0)
  _at_least(config, "train.keep_checkpoints", 1)
  _at_least(config, "train.eval_every", 0)
  _at_least(config, "train.checkpoint_every_seconds", 0)
  _at_least(config, "train.profile_steps", 0)
  if "checkpoint" in config.get("eval", {}):
    _choice(config, "eval.checkpoint", ("best", "latest"))
  if "metric" in config.get("eval", {}):
    from instseg_jax import evaluate  # pylint: disable=g-import-not-at-top
    _choice(config, "eval.metric", evaluate.ranked_metrics(config))
  if config.data.num_classes < 2:
    raise ConfigError(
        f"config.data.num_classes={config.data.num_classes} must count background and at "
        "least one foreground class (>= 2)")

  batch_size = config.train.batch_size
  if batch_size % num_devices:
    raise ConfigError(
        f"config.train.batch_size={batch_size} is not divisible by the {num_devices} devices; "
        f"use a multiple of {num_devices}")
  size = tuple(config.data.image_size)
  if len(size) != 2 or any(not isinstance(s, int) or s <= 0 for s in size):
    raise ConfigError(f"config.data.image_size={size!r} must be two positive integers (H, W)")
  stride = models.create_model(config).stride
  if size[0] % stride or size[1] % stride:
    fixed = tuple(-(-s // stride) * stride for s in size)
    raise ConfigError(
        f"config.data.image_size={size} is not divisible by the network's stride {stride}; "
        f"use e.g. {fixed}")
