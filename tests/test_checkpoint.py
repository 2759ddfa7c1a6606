"""The orbax wrapper: a checkpoint of another model, what killed saves leave behind, and the
data iterator saved beside the state."""

import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import tiny
import helpers
from instseg_jax import checkpoint
from instseg_jax import evaluate
from instseg_jax import models
from instseg_jax import parallel
from instseg_jax import state as state_lib
from instseg_jax import validate
from instseg_jax.data import pipeline


def _state(config, abstract=False):
  create = functools.partial(state_lib.create_train_state, models.create_model(config), config)
  if abstract:
    return jax.eval_shape(create, jax.random.key(0))
  return jax.jit(create)(jax.random.key(0))  # Compiled once: far faster than op by op.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir with a checkpoint (step 3) of configs/tiny.py's untrained model."""
  workdir = str(tmp_path_factory.mktemp("run"))
  checkpointer = checkpoint.Checkpointer(workdir)
  checkpointer.save(3, _state(tiny.get_config()))
  checkpointer.close()
  return workdir


def _other_model():
  config = tiny.get_config()
  config.model.embedding_dim = 5
  return config


def test_a_checkpoint_of_another_model_is_named_in_one_line(workdir):
  sharding = parallel.replicated(parallel.make_mesh())
  target = checkpoint.abstract_like(_state(_other_model(), abstract=True), sharding)
  checkpointer = checkpoint.Checkpointer(workdir)
  with pytest.raises(validate.ConfigError) as raised:
    checkpointer.restore(target)
  message = str(raised.value)
  assert "\n" not in message
  assert "another model" in message and "step 3" in message
  # The embedding head's kernel: 4 embedding channels stored, 5 in the config.
  assert "params/" in message and ", 4) vs (" in message and ", 5)" in message
  # The same config restores.
  same = checkpoint.abstract_like(_state(tiny.get_config(), abstract=True), sharding)
  assert int(checkpointer.restore(same).step) == 0
  checkpointer.close()


def test_evaluate_refuses_a_checkpoint_of_another_model(workdir):
  with pytest.raises(validate.ConfigError, match="another model"):
    evaluate.load_params(_other_model(), workdir)


def test_evaluate_cli_on_another_model_exits_2_with_one_line(workdir):
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "instseg_jax.main",
          "--config=configs/tiny.py",
          f"--workdir={workdir}",
          "--mode=evaluate",
          "--config.model.embedding_dim=5",
          f"--config.data.data_dir={workdir}/tfds",
      ],
      cwd=helpers.REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "another model" in lines[0], result.stderr[-3000:]
  assert "Traceback" not in result.stderr


def test_shape_differences_list_missing_and_different_arrays():
  stored = {"params/a": (3, 4), "params/b": (2,), "step": ()}
  target = {"params/a": (3, 5), "params/c": (1,), "step": ()}
  assert checkpoint.shape_differences(stored, target) == [
      "params/a (3, 4) vs (3, 5)",
      "params/b (2,) vs absent",
      "params/c absent vs (1,)",
  ]


def test_half_written_steps_of_a_killed_run_are_removed(tmp_path):
  checkpointer = checkpoint.Checkpointer(str(tmp_path))
  checkpointer.save(1, {"x": np.arange(3)})
  checkpointer.close()
  # What a run killed while saving step 2 leaves: orbax's temporary folder.
  leftover = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1700000000000000"
  (leftover / "state").mkdir(parents=True)
  read_only = checkpoint.Checkpointer(str(tmp_path), read_only=True)
  assert leftover.exists()  # An evaluation never deletes anything.
  read_only.close()
  # The next training run removes it (in the background, finished before its first save).
  checkpointer = checkpoint.Checkpointer(str(tmp_path))
  checkpointer.save(2, {"x": np.arange(3)})
  checkpointer.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_the_data_iterator_resumes_where_the_checkpoint_left_it(circles_dir, tmp_path):
  config = helpers.circles_config()
  iterator = pipeline.train_iterator(config, data_dir=circles_dir)
  for _ in range(3):
    next(iterator)
  checkpointer = checkpoint.Checkpointer(str(tmp_path))
  checkpointer.save(3, {"x": np.arange(3)}, data_iterator=iterator)
  checkpointer.wait()
  expected = next(iterator)
  resumed = pipeline.train_iterator(config, data_dir=circles_dir)
  checkpointer.restore({"x": np.arange(3)}, data_iterator=resumed)
  checkpointer.close()
  np.testing.assert_array_equal(next(resumed)["index"], expected["index"])
