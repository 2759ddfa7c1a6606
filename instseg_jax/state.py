"""The train state and how it is created."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.training import train_state

from instseg_jax import optim

TrainState = train_state.TrainState


def create_train_state(
    model: nn.Module, config: ml_collections.ConfigDict, rng: jax.Array
) -> TrainState:
  """Fresh parameters and optimizer state for `model` at config.data.image_size."""
  height, width = config.data.image_size
  dummy = jnp.zeros((1, height, width, 3), jnp.float32)
  params = model.init(rng, dummy)["params"]
  return TrainState.create(apply_fn=model.apply, params=params, tx=optim.make_optimizer(config))


def parameter_count(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
