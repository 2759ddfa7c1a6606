"""Models: output contract, shapes, parameter counts, gradients under jit."""

import jax
import jax.numpy as jnp
import pytest

from configs import default, tiny
from instseg_jax import models
from instseg_jax import state as state_lib


def _forward(config, shape=(2, 64, 64, 3)):
  model = models.create_model(config)
  images = jax.random.uniform(jax.random.key(0), shape)
  params = model.init(jax.random.key(1), images)["params"]
  return model, params, images


def test_unet_outputs_named_maps_at_input_resolution():
  config = default.get_config()
  model, params, images = _forward(config)
  outputs = jax.jit(model.apply)({"params": params}, images)
  assert outputs["embedding"].shape == (2, 64, 64, config.model.embedding_dim)
  assert outputs["semantic_logits"].shape == (2, 64, 64, config.data.num_classes)
  assert outputs["embedding"].dtype == jnp.float32


# tiny, by hand: down_0 216+16+576+16, down_1 1152+32+2304+32,
# upsample_0 16*8*4+8, up_0 1152+16+576+16, heads 8*4+4 + 8*2+2 = 6678.
@pytest.mark.parametrize("get_config, expected", [(tiny.get_config, 6678),
                                                 (default.get_config, 482890)])
def test_parameter_counts_are_pinned(get_config, expected):
  _, params, _ = _forward(get_config())
  assert state_lib.parameter_count(params) == expected


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  config = tiny.get_config()
  config.model.dtype = "bfloat16"
  model, params, images = _forward(config)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  outputs = model.apply({"params": params}, images)
  assert outputs["embedding"].dtype == jnp.float32


def test_gradients_are_finite_under_jit():
  model, params, images = _forward(tiny.get_config())

  def loss(p):
    return jnp.mean(model.apply({"params": p}, images)["embedding"] ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


def test_unknown_model_name_lists_the_choices():
  config = tiny.get_config()
  config.model.name = "resnet9000"
  with pytest.raises(ValueError, match="unet"):
    models.create_model(config)
