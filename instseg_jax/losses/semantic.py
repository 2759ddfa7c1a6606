"""Semantic (foreground / class) loss: softmax cross-entropy plus an optional soft Dice term."""

import jax
import jax.numpy as jnp


def semantic_loss(
    logits: jax.Array,
    semantic_labels: jax.Array,
    *,
    ignore_label: int | None = None,
    dice_weight: float = 0.0,
    dice_smooth: float = 1.0,
) -> jax.Array:
  """Softmax cross-entropy averaged over the valid pixels, plus dice_weight * soft Dice loss.

  Args:
    logits: (B, H, W, K) class logits (any float dtype; computed in float32).
    semantic_labels: (B, H, W) int classes in [0, K).
    ignore_label: pixels with this label (and any label outside [0, K)) are left out.
    dice_weight: weight of the soft Dice loss, 1 - mean over classes of
      (2 sum p y + smooth) / (sum p + sum y + smooth) over the valid pixels of the batch.
    dice_smooth: the additive smoothing of the Dice ratio; keeps a class absent from both the
      prediction and the labels at a ratio of 1.

  Returns:
    Scalar float32 loss; 0 when no pixel is valid.
  """
  num_classes = logits.shape[-1]
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  labels = semantic_labels.astype(jnp.int32)
  valid = (labels >= 0) & (labels < num_classes)
  if ignore_label is not None:
    valid &= labels != ignore_label
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  weight = valid.astype(logits.dtype)
  loss = -jnp.sum(picked * weight) / jnp.maximum(jnp.sum(weight), 1.0)
  if dice_weight:
    probs = jnp.exp(log_probs) * weight[..., None]
    onehot = jax.nn.one_hot(safe_labels, num_classes, dtype=logits.dtype) * weight[..., None]
    axes = tuple(range(logits.ndim - 1))
    overlap = jnp.sum(probs * onehot, axis=axes)
    total = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
    dice = (2.0 * overlap + dice_smooth) / (total + dice_smooth)
    loss = loss + dice_weight * (1.0 - jnp.mean(dice))
  return loss
