"""Losses: discriminative (instance embeddings), semantic, counting, and their sum for training."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from instseg_jax.losses.counting import counting_loss
from instseg_jax.losses.discriminative import (
    LOSS_PRESETS,
    check_max_instances,
    discriminative_loss,
)
from instseg_jax.losses.semantic import semantic_loss

__all__ = [
    "LOSS_PRESETS", "check_max_instances", "counting_loss", "discriminative_loss",
    "discriminative_options", "semantic_loss", "total_loss",
]

# Optional config.loss fields passed through to `discriminative_loss` when set.
_DISCRIMINATIVE_OPTIONS = (
    "pull_margin", "push_margin", "pull_weight", "push_weight", "regularization_weight",
    "norm", "pull_distance", "push_distance", "regularization_distance", "pull_error",
    "push_error", "regularization_error", "normalization", "max_label_id", "ignore_label",
    "background_as_instance",
)


def discriminative_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`discriminative_loss` keyword arguments from a whole config.

  The paper fields of config.loss (delta_v, delta_d, alpha, beta, gamma) come first, then the
  preset named by config.loss.preset (a key of LOSS_PRESETS; "" or absent for none), then every
  optional field of config.loss that is set, so a config can start from a preset and change it.
  The ignore label is config.loss.ignore_label, else config.data.ignore_label.
  """
  loss = config.loss
  options: dict[str, Any] = {name: loss[name]
                             for name in ("delta_v", "delta_d", "alpha", "beta", "gamma")}
  preset = loss.get("preset", "")
  if preset:
    if preset not in LOSS_PRESETS:
      raise ValueError(f"config.loss.preset must be one of {tuple(LOSS_PRESETS)}, got {preset!r}")
    options.update(LOSS_PRESETS[preset])
  for name in _DISCRIMINATIVE_OPTIONS:
    value = loss.get(name, None)
    if value is not None:
      options[name] = value
  if options.get("ignore_label") is None:
    options["ignore_label"] = config.data.get("ignore_label", None)
  options["max_instances"] = config.data.max_instances
  return options


def total_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
               config: ml_collections.ConfigDict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of the losses of a model's outputs, for the train and eval steps.

  Args:
    outputs: model outputs: "embedding" (B, H, W, D), "semantic_logits" (B, H, W, K) and
      optionally "count" (B,) (predicted count / max_instances, in [0, 1]).
    batch: "instances" (B, H, W) int32 (0 = background), "semantic" (B, H, W) int32 and
      "num_instances" (B,) int32.
    config: the whole config; reads config.loss (delta_v, delta_d, alpha, beta, gamma,
      embedding_weight, semantic_weight; optional: preset, the `discriminative_loss` option names,
      class_aware (instances of different semantic classes never interact), dice_weight,
      count_weight (default 1)) and config.data (max_instances, num_classes, ignore_label).

  Returns:
    (loss, metrics): float32 scalars "loss", "variance", "distance", "regularization", "semantic",
    and "count" when the model predicts one.
  """
  loss_cfg = config.loss
  options = discriminative_options(config)
  semantic_labels = None
  if loss_cfg.class_aware:
    semantic_labels = batch["semantic"]
    options["num_classes"] = config.data.num_classes
  embedding_loss, aux = discriminative_loss(
      outputs["embedding"], batch["instances"], semantic_labels=semantic_labels, **options)
  sem_loss = semantic_loss(
      outputs["semantic_logits"], batch["semantic"], ignore_label=options["ignore_label"],
      dice_weight=loss_cfg.dice_weight)
  loss = loss_cfg.embedding_weight * embedding_loss + loss_cfg.semantic_weight * sem_loss
  metrics = {
      "variance": aux["variance"],
      "distance": aux["distance"],
      "regularization": aux["regularization"],
      "semantic": sem_loss,
  }
  if "count" in outputs:
    count = counting_loss(outputs["count"], batch["num_instances"],
                          max_count=config.data.max_instances)
    loss = loss + loss_cfg.count_weight * count
    metrics["count"] = count
  metrics["loss"] = loss
  return loss.astype(jnp.float32), {k: v.astype(jnp.float32) for k, v in metrics.items()}
