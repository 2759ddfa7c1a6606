"""The optimizer and its learning-rate schedule, from config.optim.

A new optimizer or schedule is one function and one entry of OPTIMIZERS or SCHEDULES: the
config check (validate) and the error message naming the valid ones read these registries.
"""

from collections.abc import Callable

import ml_collections
import optax

from instseg_jax.registry import lookup


def _constant(optim: ml_collections.ConfigDict, decay_steps: int) -> optax.Schedule:
  del decay_steps  # a constant rate does not decay
  return optax.constant_schedule(optim.learning_rate)


def _cosine(optim: ml_collections.ConfigDict, decay_steps: int) -> optax.Schedule:
  return optax.cosine_decay_schedule(optim.learning_rate, decay_steps)


# config.optim.schedule -> the schedule after warm-up, from config.optim and the steps it spans.
SCHEDULES: dict[str, Callable[[ml_collections.ConfigDict, int], optax.Schedule]] = {
    "constant": _constant,
    "cosine": _cosine,
}


def _adam(
    schedule: optax.Schedule, optim: ml_collections.ConfigDict
) -> optax.GradientTransformation:
  del optim  # no options beyond the learning rate
  return optax.adam(schedule)


def _adamw(
    schedule: optax.Schedule, optim: ml_collections.ConfigDict
) -> optax.GradientTransformation:
  return optax.adamw(schedule, weight_decay=optim.weight_decay)


def _sgd(
    schedule: optax.Schedule, optim: ml_collections.ConfigDict
) -> optax.GradientTransformation:
  del optim  # no options beyond the learning rate
  return optax.sgd(schedule, momentum=0.9)


# config.optim.name -> the optax optimizer, from the learning-rate schedule and config.optim.
OPTIMIZERS: dict[
    str, Callable[[optax.Schedule, ml_collections.ConfigDict], optax.GradientTransformation]
] = {
    "adam": _adam,
    "adamw": _adamw,
    "sgd": _sgd,
}


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up, then config.optim.schedule (a key of SCHEDULES) to num_steps."""
  optim = config.optim
  warmup = min(optim.warmup_steps, max(config.train.num_steps - 1, 0))
  after = lookup(SCHEDULES, optim.schedule, "config.optim.schedule")(
      optim, max(config.train.num_steps - warmup, 1)
  )
  if warmup == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, optim.learning_rate, warmup), after], [warmup]
  )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """config.optim.name (a key of OPTIMIZERS) with clipping and the schedule."""
  optim = config.optim
  make = lookup(OPTIMIZERS, optim.name, "config.optim.name")
  base = make(make_schedule(config), optim)
  if optim.grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), base)
  return base
