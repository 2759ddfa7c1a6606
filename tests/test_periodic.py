"""The training loop's periodic actions: intervals in steps or seconds, time shares, profiles."""

import os

import jax
import jax.numpy as jnp
import pytest

from instseg_jax import periodic


class _Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_every_steps_or_seconds():
  clock = _Clock()
  by_steps = periodic.Every(steps=3, clock=clock)
  assert [s for s in range(1, 10) if by_steps(s)] == [3, 6, 9]
  by_time = periodic.Every(seconds=10.0, clock=clock)
  due = []
  for step in range(1, 8):
    clock.now = 4.0 * step
    if by_time(step):
      due.append(step)
  # First call at t=4 starts the interval; due at t=16 (12 s later) and t=28.
  assert due == [4, 7]
  by_time.restart()
  clock.now += 9.0
  assert not by_time(8)


def test_action_timer_shares_a_window_between_train_and_named_actions():
  clock = _Clock()
  timer = periodic.ActionTimer(("eval", "checkpoint"), clock=clock)
  clock.now = 6.0
  with timer("eval"):
    clock.now = 9.0
  with timer("checkpoint"):
    clock.now = 10.0
  seconds = timer.window()
  assert seconds == {"train": 6.0, "eval": 3.0, "checkpoint": 1.0}
  assert periodic.fractions(seconds) == pytest.approx(
      {"time/train": 0.6, "time/eval": 0.3, "time/checkpoint": 0.1}
  )
  clock.now = 20.0
  assert timer.window() == {"train": 10.0, "eval": 0.0, "checkpoint": 0.0}
  assert timer.summary() == "20 s: train 80%, eval 15%, checkpoint 5%"


def test_profile_traces_the_chosen_steps_into_the_logdir(tmp_path):
  profile = periodic.Profile(str(tmp_path), first_step=2, num_steps=2)
  double = jax.jit(lambda x: 2 * x)
  tracing = []
  for step in range(1, 6):
    double(jnp.ones(3)).block_until_ready()
    profile(step)
    tracing.append(profile.tracing)
  assert tracing == [False, True, True, False, False]
  traces = [n for _, _, names in os.walk(tmp_path) for n in names if n.endswith(".xplane.pb")]
  assert len(traces) == 1
  off = periodic.Profile(str(tmp_path / "off"), first_step=1, num_steps=0)
  off(1)
  assert not off.tracing and not os.path.exists(tmp_path / "off")
