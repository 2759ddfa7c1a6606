"""Faults of the real training loop on configs/tiny.py: stop requests, skipped steps, resumes.

Every test here runs train.train_and_evaluate in this process, many times; a persistent
compilation cache (a fresh folder for this module) makes every run after the first one
load the compiled train step instead of compiling it again, so a run costs about a second.
"""

import contextlib
import os
import shutil
import signal
import threading

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache
import numpy as np
import pytest

import helpers
from instseg_jax import checkpoint
from instseg_jax import parallel
from instseg_jax import train
from instseg_jax.data import builders


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  names = (
      "jax_compilation_cache_dir",
      "jax_persistent_cache_min_compile_time_secs",
      "jax_persistent_cache_min_entry_size_bytes",
  )
  before = {name: getattr(jax.config, name) for name in names}
  jax.config.update(names[0], str(tmp_path_factory.mktemp("xla")))
  jax.config.update(names[1], 0.0)
  jax.config.update(names[2], 0)
  # The cache is set up once per process; earlier tests may have set it up without a folder.
  jax_cache.reset_cache()
  yield
  for name, value in before.items():
    jax.config.update(name, value)
  jax_cache.reset_cache()


@pytest.fixture(autouse=True)
def harmless_sigterm():
  # A SIGTERM that arrives after the trainer gave its handler back must not end pytest.
  previous = signal.signal(signal.SIGTERM, lambda *_: None)
  yield
  signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def no_evaluation(monkeypatch):
  """Runs that reach their last step skip the final evaluation, which is not under test."""
  from instseg_jax import evaluate  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(evaluate, "evaluate", lambda *args, **kwargs: {})


def _config(data_dir, **train_overrides):
  """tiny.py with a log fetch every step and no periodic checkpoint: only a stop saves."""
  config = helpers.tiny_config(
      data_dir,
      **{"num_steps": 10_000, "log_every": 1, "checkpoint_every": 100_000, **train_overrides},
  )
  config.data.num_eval_images = 2
  return config


def _steps(workdir):
  return [row["step"] for row in helpers.metric_rows(workdir)]


def _latest(workdir):
  return checkpoint.Checkpointer(workdir).latest_step()


def _sigterm_self():
  os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_a_logging_fetch_saves_the_step_and_says_so(
    data_dir, tmp_path, monkeypatch, capsys
):
  fetch = parallel.to_host
  calls = []

  def fetch_then_signal(tree):
    calls.append(1)
    if len(calls) == 3:  # While the loop waits for step 3's metrics.
      _sigterm_self()
    return fetch(tree)

  monkeypatch.setattr(parallel, "to_host", fetch_then_signal)
  workdir = str(tmp_path)
  with pytest.raises(train.StoppedError) as stopped:
    train.train_and_evaluate(_config(data_dir), workdir)
  assert stopped.value.exit_code == 128 + signal.SIGTERM
  saved = _latest(workdir)
  assert saved is not None and saved >= 3
  out = capsys.readouterr().out
  assert f"Stopped by SIGTERM after step {saved}; checkpoint of step {saved} saved in" in out
  assert _steps(workdir) == list(range(1, saved + 1))


@contextlib.contextmanager
def _sigterm_after(delay: float):
  """train.stop_requests, with SIGTERM sent `delay` seconds after its handler is in place."""
  with _ORIGINAL_STOP_REQUESTS() as requested:
    timer = threading.Timer(delay, _sigterm_self)
    timer.start()
    try:
      yield requested
    finally:
      # Within the trainer's handler, so a late signal only sets a flag nobody reads.
      timer.cancel()
      timer.join()


_ORIGINAL_STOP_REQUESTS = train.stop_requests


def test_sigterm_at_20_random_moments_always_leaves_a_checkpoint_that_resumes(
    data_dir, tmp_path, monkeypatch, capsys
):
  rng = np.random.default_rng(12)
  workdir = str(tmp_path)
  config = _config(data_dir)
  previous = 0
  for attempt in range(20):
    # With the compiled step from the cache a run reaches its first step in about 0.8 s and
    # makes one step every 0.1 s: the moments fall in the first ten steps of each run.
    delay = float(rng.uniform(0.0, 1.5))
    monkeypatch.setattr(train, "stop_requests", lambda d=delay: _sigterm_after(d))
    with pytest.raises(train.StoppedError):  # Every run stops on its signal.
      train.train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    saved = _latest(workdir)
    assert saved is not None and saved > previous, (attempt, delay, out)
    if previous:
      assert f"resumed from step {previous} in" in out
    assert f"checkpoint of step {saved} saved in" in out, out
    # Rows of every step once, in order, however often the run was stopped.
    assert _steps(workdir) == list(range(1, saved + 1))
    previous = saved
  from instseg_jax import evaluate  # pylint: disable=g-import-not-at-top

  params = evaluate.load_params(config, workdir)
  assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(params))


def test_a_stop_agreed_with_other_processes_saves_and_stops_every_process(
    data_dir, tmp_path, monkeypatch, capsys
):
  # One process cannot run another here; the agreement says another process was asked to stop.
  agreed = []

  def another_process_stops(flag):
    agreed.append(flag)
    return len(agreed) >= 4

  monkeypatch.setattr(parallel, "any_process", another_process_stops)
  workdir = str(tmp_path)
  with pytest.raises(train.StoppedError) as stopped:
    train.train_and_evaluate(_config(data_dir), workdir)
  assert stopped.value.exit_code == 128 + signal.SIGTERM  # What preemption would have sent.
  assert not any(agreed)  # No signal came to this process.
  assert _latest(workdir) == 3  # The data-prepared agreement was the first one.
  assert "checkpoint of step 3 saved in" in capsys.readouterr().out


def test_any_process_on_one_process_is_the_flag():
  assert parallel.any_process(True) is True
  assert parallel.any_process(False) is False


_TWO_PROCESSES = """
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid = int(sys.argv[1])
jax.distributed.initialize(coordinator_address="localhost:" + sys.argv[2], num_processes=2,
                           process_id=pid)
from configs import tiny
from instseg_jax import parallel, train
from instseg_jax.data import builders
print("stop", parallel.any_process(pid == 1), parallel.any_process(False), flush=True)
config = tiny.get_config()
config.data.name = "instance_folder"
config.data.builder_config = "default"
config.data.manual_dir = sys.argv[3]  # No such folder: the build fails on process 0.
try:
  train.prepare_data(config, process_index=pid)
except builders.DataError as error:
  print("error", error, flush=True)
"""


def test_two_real_processes_agree_on_a_stop_and_on_a_failed_build(tmp_path):
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=helpers.REPO)
  processes = [
      subprocess.Popen(
          [sys.executable, "-c", _TWO_PROCESSES, str(pid), port, str(tmp_path / "missing")],
          cwd=helpers.REPO,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for pid in range(2)
  ]
  outputs = ["".join(p.communicate(timeout=120)) for p in processes]
  for out in outputs:
    # Only process 1 was asked to stop; both stop.
    assert "stop True False" in out, outputs
  assert "missing: folder not found" in outputs[0], outputs
  assert "failed on process 0" in outputs[1], outputs


def test_a_failed_data_build_on_process_0_reaches_the_other_processes(data_dir, monkeypatch):
  config = _config(data_dir)
  verdicts = []

  def agree(flag):
    verdicts.append(flag)
    return True

  with pytest.raises(builders.DataError, match="process 0"):
    train.prepare_data(config, process_index=1, agree=agree)
  assert verdicts == [False]

  def broken(*args, **kwargs):
    raise builders.DataError("img0.png: not an image")

  monkeypatch.setattr(train.pipeline, "prepare", broken)
  with pytest.raises(builders.DataError, match="img0.png"):
    train.prepare_data(config, process_index=0, agree=agree)
  # Process 0 told the others before it gave up.
  assert verdicts == [False, True]


def test_resumed_skip_nonfinite_runs_continue(data_dir, tmp_path, no_evaluation):
  config = _config(data_dir, num_steps=4, checkpoint_every=2, skip_nonfinite=True)
  config.loss.embedding_weight = float("nan")
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  assert _latest(workdir) == 4
  config.train.num_steps = 6
  train.train_and_evaluate(config, workdir)
  assert _latest(workdir) == 6
  assert _steps(workdir) == [1, 2, 3, 4, 5, 6]


def test_metrics_logged_after_the_last_checkpoint_are_not_repeated(
    data_dir, tmp_path, no_evaluation
):
  config = _config(data_dir, num_steps=4, checkpoint_every=2)
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  assert _steps(workdir) == [1, 2, 3, 4]
  # As if the run had been killed after logging step 4 but before its save was complete,
  # while writing a row.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "lo')
  train.train_and_evaluate(config, workdir)
  assert _steps(workdir) == [1, 2, 3, 4]
