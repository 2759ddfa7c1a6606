"""Data parallelism: 8 devices == 1 device; 2 processes x 2 devices == 1 process x 4 devices."""

import functools
import os
import subprocess
import sys

import jax
import numpy as np

import helpers
from instseg_jax import evaluate
from instseg_jax import models
from instseg_jax import parallel
from instseg_jax import state as state_lib
from instseg_jax import train_step
from instseg_jax.data import pipeline


def _train(config, devices, steps=3):
  """`steps` sharded train steps over `devices`; returns (params, losses) on the host."""
  mesh = parallel.make_mesh(devices)
  model = models.create_model(config)
  replicated = parallel.replicated(mesh)
  state = jax.jit(
      functools.partial(state_lib.create_train_state, model, config), out_shardings=replicated
  )(jax.random.key(0))
  step_fn = jax.jit(
      functools.partial(train_step.train_step, config=config),
      in_shardings=(replicated, parallel.batch_sharded(mesh), replicated),
      out_shardings=(replicated, replicated),
  )
  iterator = pipeline.train_iterator(config, data_dir=config.data.data_dir)
  losses = []
  for _ in range(steps):
    batch = next(iterator)
    batch.pop("index")
    state, metrics = step_fn(state, parallel.global_batch(batch, mesh), jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return parallel.to_host(state.params), losses


def test_eight_devices_match_one_device(data_dir):
  config = helpers.tiny_config(data_dir)
  assert jax.device_count() == 8
  params_8, losses_8 = _train(config, jax.devices())
  params_1, losses_1 = _train(config, jax.devices()[:1])
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(params_8), jax.tree_util.tree_leaves(params_1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_process_shards_together_form_the_single_process_batches(data_dir):
  config = helpers.tiny_config(data_dir)
  single = pipeline.train_iterator(config, data_dir=data_dir)
  shards = [
      pipeline.train_iterator(config, data_dir=data_dir, process_index=i, process_count=2)
      for i in range(2)
  ]
  for _ in range(5):  # More than one epoch of the 32 tiny examples.
    whole = next(single)
    parts = [next(shard) for shard in shards]
    order = np.argsort(whole["index"])
    joined = {k: np.concatenate([p[k] for p in parts]) for k in whole}
    joined_order = np.argsort(joined["index"])
    for key in ("index", "image", "instances"):
      np.testing.assert_array_equal(joined[key][joined_order], whole[key][order])


def _run(args, devices, env_extra=None):
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      **(env_extra or {}),
  )
  result = subprocess.run(
      args, cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=400
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result


def test_two_processes_match_one_process_and_their_checkpoint_restores_in_one(tmp_path, data_dir):
  common = [
      "--config=configs/tiny.py",
      f"--config.data.data_dir={data_dir}",
      "--config.train.num_steps=3",
      "--config.data.num_eval_images=2",
  ]
  two = str(tmp_path / "two_processes")
  one = str(tmp_path / "one_process")
  _run(
      ["bash", "launch/local_multiprocess.sh", "2", f"--workdir={two}", *common],
      2,
      {"DEVICES_PER_PROCESS": "2", "PORT": str(20000 + os.getpid() % 20000)},
  )
  _run([sys.executable, "-m", "instseg_jax.main", f"--workdir={one}", *common], 4)
  config = helpers.tiny_config(data_dir)
  # This test process has 8 devices: the 2-process checkpoint restores here too.
  params_two = evaluate.load_params(config, two)
  params_one = evaluate.load_params(config, one)
  leaves_two = jax.tree_util.tree_leaves(parallel.to_host(params_two))
  leaves_one = jax.tree_util.tree_leaves(parallel.to_host(params_one))
  assert len(leaves_two) == len(leaves_one)
  for a, b in zip(leaves_two, leaves_one):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert sorted(os.listdir(os.path.join(two, "checkpoints", "3", "data"))) == [
      "commit_success.txt",
      "process_0-of-2.json",
      "process_1-of-2.json",
  ]
