"""The pure train and predict steps, jitted once by their callers."""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from instseg_jax import losses
from instseg_jax.state import TrainState


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a global batch.

  A step whose loss or gradient norm is not finite is reported through
  metrics["finite"] = 0; with config.train.skip_nonfinite it also leaves the
  parameters and optimizer state untouched (and counts as skipped) instead of
  poisoning the weights. The step counter always advances: it numbers the
  checkpoints, and a resumed run must not save a step number that exists.
  """
  del rng  # No stochastic layers yet; kept so dropout needs no signature change.

  def loss_fn(params):
    outputs = state.apply_fn({"params": params}, batch["image"])
    return losses.total_loss(outputs, batch, config)

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  new_state = state.apply_gradients(grads=grads)
  if config.train.skip_nonfinite:
    new_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old), new_state, state
    )
    new_state = new_state.replace(step=state.step + 1)
  metrics = dict(metrics, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
  return new_state, metrics


def predict_step(
    params, images: jax.Array, *, apply_fn, fg_threshold: float
) -> dict[str, jax.Array]:
  """The network's answers for images (B,H,W,3), as inference reads them.

  Embeddings, the semantic head's answers (see `semantic_outputs`) and, where the model has those
  heads, "count" and "seed" (the sigmoid of the seed logits).
  """
  outputs = apply_fn({"params": params}, images)
  result = {
      "embedding": outputs["embedding"],
      **semantic_outputs(
          jax.nn.softmax(outputs["semantic_logits"], axis=-1), fg_threshold=fg_threshold
      ),
  }
  if "count" in outputs:
    result["count"] = outputs["count"]
  if "seed_logits" in outputs:
    result["seed"] = jax.nn.sigmoid(outputs["seed_logits"])
  return result


def semantic_outputs(probabilities: jax.Array, *, fg_threshold: float) -> dict[str, jax.Array]:
  """Foreground probability, mask and foreground class from class probabilities (B,H,W,K).

  "classes" is the likeliest class other than background (1..K-1) of every pixel, so
  that every clustered pixel has one.
  """
  foreground = 1.0 - probabilities[..., 0]
  return {
      "probabilities": probabilities,
      "foreground": foreground,
      "mask": foreground > fg_threshold,
      "classes": 1 + jnp.argmax(probabilities[..., 1:], axis=-1).astype(jnp.int32),
  }
