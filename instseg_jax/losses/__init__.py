"""Losses: discriminative (instance embeddings), semantic, counting, and their sum for training."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from instseg_jax import registry
from instseg_jax.losses.counting import counting_loss
from instseg_jax.losses.discriminative import (
    LOSS_PRESETS,
    check_max_instances,
    discriminative_loss,
)
from instseg_jax.losses.seed import SEED_TARGETS
from instseg_jax.losses.seed import seed_loss
from instseg_jax.losses.semantic import semantic_loss

__all__ = [
    "LOSS_PRESETS",
    "check_max_instances",
    "counting_loss",
    "discriminative_loss",
    "discriminative_options",
    "SEED_TARGETS",
    "seed_loss",
    "semantic_loss",
    "total_loss",
]

# config.loss fields of earlier versions, and what replaced them.
_RENAMED_FIELDS = {
    "delta_v": "pull_margin",
    "delta_d": "push_margin (= 2 * delta_d)",
    "alpha": "pull_weight",
    "beta": "push_weight",
    "gamma": "regularization_weight",
    "norm": "pull_distance, push_distance and regularization_distance",
    "ignore_label": "config.data.ignore_label",
}


def discriminative_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`discriminative_loss` keyword arguments from a whole config.

  Every option of the loss (the names of LOSS_PRESETS["paper"]) is the config.loss field of the
  same name. config.loss.preset, when not "", names a preset of LOSS_PRESETS: the options it names
  come from the preset and their config.loss fields are not read; the other options come from
  their fields. A field the preset replaces must keep its default (or the preset's value), so
  that no setting is silently ignored. config.loss.max_label_id 0 means none; the ignore label is
  config.data.ignore_label, the slot count config.data.max_instances.

  Raises:
    ValueError: for an unknown preset, a field set against the preset, or a field of an earlier
      version (delta_v, delta_d, alpha, beta, gamma, norm, ignore_label).
  """
  loss = config.loss
  for old, new in _RENAMED_FIELDS.items():
    if old in loss:
      raise ValueError(f"config.loss.{old} is no longer read; set {new} instead")
  preset = loss.preset
  named = registry.lookup(LOSS_PRESETS, preset, "config.loss.preset") if preset else {}
  defaults = LOSS_PRESETS["paper"]
  for name, value in named.items():
    if loss[name] not in (defaults[name], value):
      raise ValueError(
          f"config.loss.{name}={loss[name]!r} would be ignored: preset {preset!r} sets "
          f"{name}={value!r}; drop the preset or leave {name} at {defaults[name]!r}"
      )
  options = {name: named.get(name, loss[name]) for name in defaults}
  options["max_label_id"] = loss.max_label_id or None
  options["ignore_label"] = config.data.ignore_label
  options["max_instances"] = config.data.max_instances
  return options


def total_loss(
    outputs: dict[str, jax.Array], batch: dict[str, jax.Array], config: ml_collections.ConfigDict
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of the losses of a model's outputs, for the train and eval steps.

  Args:
    outputs: model outputs: "embedding" (B, H, W, D), "semantic_logits" (B, H, W, K) and
      optionally "count" (B,) (predicted count / max_instances, in [0, 1]) and "seed_logits"
      (B, H, W).
    batch: "instances" (B, H, W) int32 (0 = background), "semantic" (B, H, W) int32 and
      "num_instances" (B,) int32.
    config: the whole config; reads config.loss (the options of `discriminative_options`,
      embedding_weight, semantic_weight, class_aware, dice_weight, count_weight, seed_weight,
      seed_sigma) and config.data (max_instances, num_classes, ignore_label);
      configs/default.py says what each means.

  Returns:
    (loss, metrics): float32 scalars "loss", "variance", "distance", "regularization", "semantic",
    and "count" and "seed" when the model predicts them.
  """
  loss_cfg = config.loss
  options = discriminative_options(config)
  semantic_labels = None
  if loss_cfg.class_aware:
    semantic_labels = batch["semantic"]
    options["num_classes"] = config.data.num_classes
  embedding_loss, aux = discriminative_loss(
      outputs["embedding"], batch["instances"], semantic_labels=semantic_labels, **options
  )
  sem_loss = semantic_loss(
      outputs["semantic_logits"],
      batch["semantic"],
      ignore_label=options["ignore_label"],
      dice_weight=loss_cfg.dice_weight,
  )
  loss = loss_cfg.embedding_weight * embedding_loss + loss_cfg.semantic_weight * sem_loss
  metrics = {
      "variance": aux["variance"],
      "distance": aux["distance"],
      "regularization": aux["regularization"],
      "semantic": sem_loss,
  }
  if "count" in outputs:
    count = counting_loss(
        outputs["count"], batch["num_instances"], max_count=config.data.max_instances
    )
    loss = loss + loss_cfg.count_weight * count
    metrics["count"] = count
  if "seed_logits" in outputs:
    seed = seed_loss(
        outputs["seed_logits"],
        outputs["embedding"],
        batch["instances"],
        sigma=loss_cfg.seed_sigma,
        max_instances=config.data.max_instances,
        ignore_label=options["ignore_label"],
        target=loss_cfg.seed_target,
    )
    loss = loss + loss_cfg.seed_weight * seed
    metrics["seed"] = seed
  metrics["loss"] = loss
  return loss.astype(jnp.float32), {k: v.astype(jnp.float32) for k, v in metrics.items()}
