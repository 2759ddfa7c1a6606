"""The optimizer and its learning-rate schedule, from config.optim."""

import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up, then constant or cosine decay to zero at num_steps."""
  optim = config.optim
  warmup = min(optim.warmup_steps, max(config.train.num_steps - 1, 0))
  if optim.schedule == "constant":
    after = optax.constant_schedule(optim.learning_rate)
  elif optim.schedule == "cosine":
    after = optax.cosine_decay_schedule(
        optim.learning_rate, max(config.train.num_steps - warmup, 1))
  else:
    raise ValueError(f"config.optim.schedule={optim.schedule!r}; choose 'constant' or 'cosine'")
  if warmup == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, optim.learning_rate, warmup), after], [warmup])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """config.optim.name ('adam' | 'adamw' | 'sgd') with clipping and the schedule."""
  optim = config.optim
  schedule = make_schedule(config)
  if optim.name == "adam":
    base = optax.adam(schedule)
  elif optim.name == "adamw":
    base = optax.adamw(schedule, weight_decay=optim.weight_decay)
  elif optim.name == "sgd":
    base = optax.sgd(schedule, momentum=0.9)
  else:
    raise ValueError(f"config.optim.name={optim.name!r}; choose 'adam', 'adamw' or 'sgd'")
  if optim.grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), base)
  return base
