"""The real trainer end to end on configs/tiny.py: train, kill, resume, evaluate, predict."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from instseg_jax import checkpoint
from instseg_jax import predict
from instseg_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, **train_overrides):
  config = tiny.get_config()
  config.data.data_dir = data_dir
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def _read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("run"))
  summary = train.train_and_evaluate(_config(data_dir), workdir)
  return workdir, summary


def test_train_writes_metrics_checkpoint_results_and_panels(trained):
  workdir, summary = trained
  assert set(["SBD", "FBD", "DiC", "|DiC|"]) <= set(summary)
  assert 0.0 <= summary["SBD"] <= 1.0
  rows = _read_metrics(workdir)
  assert [r["step"] for r in rows] == [2, 3, 4, 6]
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert checkpoint.Checkpointer(workdir).latest_step() == 6
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert len(results["per_image"]) == tiny.get_config().data.num_eval_images
  assert Image.open(os.path.join(workdir, "panels.png")).size[0] > 3 * 32


def test_second_run_reuses_the_checkpoint(trained, data_dir):
  workdir, summary = trained
  rows_before = len(_read_metrics(workdir))
  again = train.train_and_evaluate(_config(data_dir), workdir)
  assert len(_read_metrics(workdir)) == rows_before  # no step was trained
  assert again == pytest.approx(summary)


def test_predict_writes_16bit_labels_and_overlays(trained, data_dir, tmp_path):
  workdir, _ = trained
  inputs = tmp_path / "in"
  inputs.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray((rng.random((40, 36, 3)) * 255).astype(np.uint8)).save(inputs / "a.png")
  Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(inputs / "grey.png")
  (inputs / "broken.png").write_bytes(b"not a png")
  failures = predict.predict(_config(data_dir), workdir, str(inputs), str(tmp_path / "out"))
  assert list(failures) == [str(inputs / "broken.png")]
  labels = Image.open(tmp_path / "out" / "a_labels.png")
  assert labels.size == (36, 40) and np.asarray(labels).dtype == np.uint16
  assert Image.open(tmp_path / "out" / "grey_overlay.png").size == (32, 32)


def _main_command(workdir, data_dir, *extra):
  return [sys.executable, "-m", "instseg_jax.main", "--config=configs/tiny.py",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *extra]


def test_killed_after_first_checkpoint_resumes_to_the_final_step(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  args = ["--config.train.num_steps=100", "--config.train.checkpoint_every=10",
          "--config.train.log_every=4"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  process = subprocess.Popen(_main_command(workdir, data_dir, *args), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 120
  while time.time() < deadline and process.poll() is None:
    if os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints)):
      break
    time.sleep(0.2)
  assert process.poll() is None, "the run ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = checkpoint.Checkpointer(workdir).latest_step()
  assert killed_at is not None and killed_at < 100

  resumed = subprocess.run(_main_command(workdir, data_dir, *args), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resumed from step {killed_at}" in resumed.stdout
  assert checkpoint.Checkpointer(workdir).latest_step() == 100
  assert _read_metrics(workdir)[-1]["step"] == 100
  assert "SBD " in resumed.stdout
