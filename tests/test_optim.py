"""The optimizer and its schedule, against numbers worked out by hand."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from instseg_jax import optim


def _config(**fields):
  """configs/default.py with config.optim fields and config.train.num_steps set."""
  config = default.get_config()
  config.train.num_steps = fields.pop("num_steps", 1100)
  config.optim.update(fields)
  return config


def _schedule(config, steps):
  return [float(optim.make_schedule(config)(step)) for step in steps]


def test_warmup_rises_linearly_then_the_cosine_falls_to_zero_at_the_last_step():
  config = _config(learning_rate=1e-3, warmup_steps=100, schedule="cosine", num_steps=1100)
  # Warm-up: 0 -> 1e-3 over 100 steps; then a cosine over the remaining 1000 steps, at its
  # half-way point (step 600) at half the rate, 0.5 * (1 + cos(pi / 2)) = 0.5.
  assert _schedule(config, [0, 50, 100, 600, 1100]) == pytest.approx(
      [0.0, 5e-4, 1e-3, 5e-4, 0.0], abs=1e-9
  )
  # A quarter of the way: 0.5 * (1 + cos(pi / 4)) = 0.8536.
  assert _schedule(config, [350]) == pytest.approx([8.5355339e-4])


def test_constant_schedule_and_a_warmup_longer_than_the_run():
  constant = _config(learning_rate=0.1, warmup_steps=10, schedule="constant", num_steps=100)
  assert _schedule(constant, [0, 5, 10, 99]) == pytest.approx([0.0, 0.05, 0.1, 0.1])
  # 100 warm-up steps in a run of 10: the warm-up ends at step 9, where the rate is reached.
  short = _config(learning_rate=0.1, warmup_steps=100, schedule="constant", num_steps=10)
  assert _schedule(short, [0, 3, 9]) == pytest.approx([0.0, 0.1 / 3, 0.1])


def _first_update(config, params, grads):
  optimizer = optim.make_optimizer(config)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  return np.asarray(optax.apply_updates(params, updates))


def test_adamw_decays_the_weights_and_adam_does_not():
  params, zero = jnp.ones(2), jnp.zeros(2)
  # With zero gradients Adam's step is 0, so only the decay moves the weights:
  # 1 - learning_rate * weight_decay * 1 = 1 - 0.1 * 0.5 = 0.95.
  adamw = _config(
      name="adamw",
      learning_rate=0.1,
      weight_decay=0.5,
      warmup_steps=0,
      schedule="constant",
      grad_clip_norm=0.0,
  )
  np.testing.assert_allclose(_first_update(adamw, params, zero), [0.95, 0.95], rtol=1e-6)
  adam = _config(
      name="adam",
      learning_rate=0.1,
      weight_decay=0.5,
      warmup_steps=0,
      schedule="constant",
      grad_clip_norm=0.0,
  )
  np.testing.assert_allclose(_first_update(adam, params, zero), [1.0, 1.0])


def test_gradients_are_clipped_to_the_global_norm_when_asked():
  params, grads = jnp.zeros(2), jnp.array([3.0, 4.0])  # norm 5
  # SGD's first step is -learning_rate * gradient; the clip scales (3, 4) to norm 1.
  clipped = _config(
      name="sgd", learning_rate=1.0, warmup_steps=0, schedule="constant", grad_clip_norm=1.0
  )
  np.testing.assert_allclose(_first_update(clipped, params, grads), [-0.6, -0.8], rtol=1e-6)
  unclipped = _config(
      name="sgd", learning_rate=1.0, warmup_steps=0, schedule="constant", grad_clip_norm=0.0
  )
  np.testing.assert_allclose(_first_update(unclipped, params, grads), [-3.0, -4.0])
