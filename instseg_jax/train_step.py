"""The pure train and predict steps, jitted once by their callers."""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from instseg_jax import losses
from instseg_jax.state import TrainState


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               config: ml_collections.ConfigDict
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a global batch.

  A step whose loss or gradient norm is not finite is reported through
  metrics["finite"] = 0; with config.train.skip_nonfinite it also leaves the
  state untouched (and counts as skipped) instead of poisoning the weights.
  """
  del rng  # No stochastic layers yet; kept so dropout needs no signature change.

  def loss_fn(params):
    outputs = state.apply_fn({"params": params}, batch["image"])
    return losses.total_loss(outputs, batch, config)

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  new_state = state.apply_gradients(grads=grads)
  if config.train.get("skip_nonfinite", False):
    new_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old), new_state, state)
  metrics = dict(metrics, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
  return new_state, metrics


def predict_step(params, images: jax.Array, *, apply_fn, fg_threshold: float
                 ) -> dict[str, jax.Array]:
  """Embeddings, foreground probability, mask and foreground class for images (B,H,W,3).

  "classes" is the likeliest class other than background (1..K-1) of every pixel, so
  that every clustered pixel has one.
  """
  outputs = apply_fn({"params": params}, images)
  logits = outputs["semantic_logits"]
  probs = jax.nn.softmax(logits, axis=-1)
  foreground = 1.0 - probs[..., 0]
  result = {"embedding": outputs["embedding"], "foreground": foreground,
            "mask": foreground > fg_threshold,
            "classes": 1 + jnp.argmax(logits[..., 1:], axis=-1).astype(jnp.int32)}
  if "count" in outputs:
    result["count"] = outputs["count"]
  return result
