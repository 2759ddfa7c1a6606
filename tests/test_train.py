"""The real trainer end to end on configs/tiny.py: train, kill, resume, evaluate, predict."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tiny
import helpers
from instseg_jax import checkpoint
from instseg_jax import predict
from instseg_jax import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("run"))
  summary = train.train_and_evaluate(helpers.tiny_config(data_dir), workdir)
  return workdir, summary


def test_train_writes_metrics_checkpoint_results_and_panels(trained):
  workdir, summary = trained
  assert set(["SBD", "FBD", "DiC", "|DiC|", "AP", "AP50", "AP75"]) <= set(summary)
  assert 0.0 <= summary["SBD"] <= 1.0 and 0.0 <= summary["AP50"] <= 1.0
  rows = [r for r in helpers.metric_rows(workdir) if "loss" in r]
  assert [r["step"] for r in rows] == [2, 3, 4, 6]
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert checkpoint.Checkpointer(workdir).latest_step() == 6
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert len(results["per_image"]) == tiny.get_config().data.num_eval_images
  assert Image.open(os.path.join(workdir, "panels.png")).size[0] > 3 * 32


def test_second_run_reuses_the_checkpoint(trained, data_dir):
  workdir, summary = trained
  rows_before = len(helpers.metric_rows(workdir))
  again = train.train_and_evaluate(helpers.tiny_config(data_dir), workdir)
  assert len(helpers.metric_rows(workdir)) == rows_before  # no step was trained
  assert again == pytest.approx(summary)


def test_predict_writes_16bit_labels_and_overlays(trained, data_dir, tmp_path):
  workdir, _ = trained
  inputs = tmp_path / "in"
  inputs.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray((rng.random((40, 36, 3)) * 255).astype(np.uint8)).save(inputs / "a.png")
  Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(inputs / "grey.png")
  (inputs / "broken.png").write_bytes(b"not a png")
  failures = predict.predict(
      helpers.tiny_config(data_dir), workdir, str(inputs), str(tmp_path / "out")
  )
  assert list(failures) == [str(inputs / "broken.png")]
  labels = Image.open(tmp_path / "out" / "a_labels.png")
  assert labels.size == (36, 40) and np.asarray(labels).dtype == np.uint16
  assert Image.open(tmp_path / "out" / "grey_overlay.png").size == (32, 32)


def _main_command(workdir, data_dir, *extra):
  return [
      sys.executable,
      "-m",
      "instseg_jax.main",
      "--config=configs/tiny.py",
      f"--workdir={workdir}",
      f"--config.data.data_dir={data_dir}",
      *extra,
  ]


def _cli_env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")


def _wait_for(predicate, process, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if predicate():
      return True
    time.sleep(0.01)
  return False


def _saving(checkpoints):
  # orbax writes a step into "<step>.orbax-checkpoint-tmp..." and renames it when complete.
  return os.path.isdir(checkpoints) and any("tmp" in n for n in os.listdir(checkpoints))


def _params(workdir, data_dir):
  from instseg_jax import evaluate  # pylint: disable=g-import-not-at-top

  params = evaluate.load_params(helpers.tiny_config(data_dir), workdir)
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


STEPS = [
    "--config.train.num_steps=40",
    "--config.train.checkpoint_every=5",
    "--config.train.log_every=5",
    "--config.data.num_eval_images=2",
]


def test_killed_during_saves_resumes_to_the_final_step(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  checkpoints = os.path.join(workdir, "checkpoints")
  kills = 0
  for _ in range(2):
    process = subprocess.Popen(
        _main_command(workdir, data_dir, *STEPS),
        cwd=helpers.REPO,
        env=_cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # SIGKILL while orbax is writing a checkpoint: the half-written step must be ignored.
    if _wait_for(lambda: _saving(checkpoints), process):
      process.send_signal(signal.SIGKILL)
      kills += 1
    process.wait()
    latest = checkpoint.Checkpointer(workdir).latest_step()
    assert latest is None or latest % 5 == 0
  assert kills >= 1, "no run could be killed during a save"
  resumed = subprocess.run(
      _main_command(workdir, data_dir, *STEPS),
      cwd=helpers.REPO,
      env=_cli_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert checkpoint.Checkpointer(workdir).latest_step() == 40
  assert helpers.metric_rows(workdir)[-1]["step"] == 40
  assert "SBD " in resumed.stdout


def test_sigterm_then_resume_matches_an_uninterrupted_run_bitwise(tmp_path, data_dir):
  straight = str(tmp_path / "straight")
  subprocess.run(
      _main_command(straight, data_dir, *STEPS),
      cwd=helpers.REPO,
      env=_cli_env(),
      check=True,
      capture_output=True,
      timeout=300,
  )

  interrupted = str(tmp_path / "interrupted")
  checkpoints = os.path.join(interrupted, "checkpoints")
  process = subprocess.Popen(
      _main_command(interrupted, data_dir, *STEPS),
      cwd=helpers.REPO,
      env=_cli_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      text=True,
  )
  assert _wait_for(
      lambda: os.path.isdir(checkpoints) and "5" in os.listdir(checkpoints), process
  ), "the run ended before it could be interrupted"
  process.send_signal(signal.SIGTERM)
  stdout, _ = process.communicate(timeout=120)
  # Unfinished, so not 0: a script's next command (tune, predict) must not run on it.
  assert process.returncode == 128 + signal.SIGTERM
  assert "Stopped by SIGTERM" in stdout and "resume" in stdout
  stopped_at = checkpoint.Checkpointer(interrupted).latest_step()
  assert 5 <= stopped_at < 40

  subprocess.run(
      _main_command(interrupted, data_dir, *STEPS),
      cwd=helpers.REPO,
      env=_cli_env(),
      check=True,
      capture_output=True,
      timeout=300,
  )
  for a, b in zip(_params(straight, data_dir), _params(interrupted, data_dir)):
    np.testing.assert_array_equal(a, b)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, data_dir):
  config = helpers.tiny_config(data_dir)
  config.loss.embedding_weight = float("nan")
  with pytest.raises(train.NonFiniteLossError, match=r"step 1 \(batch ids"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpoint.Checkpointer(str(tmp_path)).latest_step() is None


def test_non_finite_steps_can_be_skipped_and_counted(tmp_path, data_dir):
  config = helpers.tiny_config(data_dir)
  config.loss.embedding_weight = float("nan")
  config.train.skip_nonfinite = True
  config.data.num_eval_images = 2
  train.train_and_evaluate(config, str(tmp_path))
  training_rows = [r for r in helpers.metric_rows(str(tmp_path)) if "loss" in r]
  assert sum(r["skipped"] for r in training_rows) == 6
  params = _params(str(tmp_path), data_dir)
  assert all(np.all(np.isfinite(p)) for p in params)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.train.num_stepz=5", "num_steps"),
        ("--config.train.num_steps=abc", "num_steps"),
        ("--config.data.image_size=(30,31)", "stride"),
        ("--config.model.name=resnet9000", "config.model.name"),
        ("--config.data.size_mode=fitt", "config.data.size_mode"),
        ("--config.data.builder_config=tinny", "config.data.builder_config"),
        ("--config.train.keep_checkpoints=0", "config.train.keep_checkpoints"),
    ],
)
def test_config_mistakes_exit_2_with_one_line(tmp_path, flag, message):
  result = subprocess.run(
      _main_command(str(tmp_path), str(tmp_path), flag),
      cwd=helpers.REPO,
      env=_cli_env(),
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode == 2
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], result.stderr
  assert "Traceback" not in result.stderr


def test_evaluation_with_several_classes_scores_class_aware_ap(data_dir, tmp_path, monkeypatch):
  from instseg_jax import evaluate, models, state as state_lib  # pylint: disable=g-import-not-at-top
  from instseg_jax.metrics import aggregation  # pylint: disable=g-import-not-at-top

  config = helpers.tiny_config(data_dir)
  config.data.num_classes = 3  # circles' discs are class 1; the model may also predict 2
  config.cluster.fg_threshold = 0.0  # an untrained model: cluster every pixel
  params = state_lib.create_train_state(
      models.create_model(config), config, jax.random.key(0)
  ).params
  seen = []
  add = aggregation.MetricAccumulator.add

  def recording_add(self, image_id, pred, gt, **kwargs):
    seen.append(kwargs)
    return add(self, image_id, pred, gt, **kwargs)

  monkeypatch.setattr(aggregation.MetricAccumulator, "add", recording_add)
  summary = evaluate.evaluate(config, str(tmp_path), params=params, verbose=False)
  assert len(seen) == config.data.num_eval_images
  for kwargs in seen:
    assert set(np.unique(kwargs["pred_classes"])) <= {1, 2}
    assert set(np.unique(kwargs["gt_classes"])) <= {0, 1}
  assert 0.0 <= summary["AP50"] <= 1.0
