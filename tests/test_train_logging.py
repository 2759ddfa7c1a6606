"""What a run shows while training: TensorBoard tags, evaluations at their steps, the best one."""

import os

import jax
import numpy as np
import pytest

import helpers
from instseg_jax import checkpoint
from instseg_jax import evaluate
from instseg_jax import metric_writers
from instseg_jax import train

LOSS_TERMS = ("loss", "variance", "distance", "regularization", "semantic")
TRAINING_TAGS = LOSS_TERMS + (
    "grad_norm",
    "learning_rate",
    "steps_per_second",
    "images_per_second",
    "time/train",
    "time/eval",
    "time/checkpoint",
)
EVAL_TAGS = ("eval/SBD", "eval/FBD", "eval/abs_DiC", "eval/AP", "eval/accuracy_0.5")
IMAGE_TAGS = ("eval/panels", "eval/embedding_pca", "eval/embedding_scatter")


def _config(data_dir):
  config = helpers.tiny_config(data_dir, eval_every=2)
  config.data.num_eval_images = 2
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("run"))
  summary = train.train_and_evaluate(_config(data_dir), workdir)
  return workdir, summary


def test_event_files_hold_every_scalar_and_image_tag_at_its_steps(run):
  workdir, _ = run
  events = metric_writers.read_events(workdir)
  for tag in TRAINING_TAGS:
    assert [step for step, _ in events[tag]] == [2, 3, 4, 6], tag
    assert all(np.isfinite(value) for _, value in events[tag]), tag
  for tag in EVAL_TAGS + IMAGE_TAGS:
    assert [step for step, _ in events[tag]] == [2, 4, 6], tag
  config = _config("")
  assert [v for _, v in events["learning_rate"]] == pytest.approx(
      [float(train.optim.make_schedule(config)(s - 1)) for s in (2, 3, 4, 6)]
  )
  height, width = config.data.image_size  # circles "tiny" images are 32 x 32
  panels = events["eval/panels"][0][1]
  assert panels.shape[:2] == (config.eval.num_panels * (height + 4) - 4, 3 * width + 8)
  assert events["eval/embedding_pca"][0][1].shape[:2] == (height, width)
  assert (
      events["eval/embedding_scatter"][0][1].shape[0]
      == events["eval/embedding_scatter"][0][1].shape[1]
  )
  shares = [events[f"time/{n}"][i][1] for i in range(4) for n in ("train", "eval", "checkpoint")]
  assert all(0.0 <= s <= 1.0 for s in shares)


def test_validation_scores_at_eval_every_steps_and_the_best_checkpoint_kept(run):
  workdir, summary = run
  rows = helpers.metric_rows(workdir)
  scores = {r["step"]: r["eval/SBD"] for r in rows if "eval/SBD" in r}
  assert list(scores) == [2, 4, 6]
  assert [r["step"] for r in rows if "loss" in r] == [2, 3, 4, 6]
  best_step = max(scores, key=lambda s: (scores[s], -s))  # the first of equal scores
  best = evaluate.best_checkpoint(_config(""), workdir)
  assert best.score == {
      "step": best_step,
      "metric": "SBD",
      "value": pytest.approx(scores[best_step]),
  }
  best.close()
  assert evaluate.checkpoint_in_use(_config(""), workdir) == ("best", best_step)
  assert summary["SBD"] == pytest.approx(scores[best_step])


def test_evaluation_writes_per_image_scores_and_the_worst_images(run):
  workdir, _ = run
  with open(os.path.join(workdir, "per_image.csv")) as f:
    lines = f.read().splitlines()
  header = lines[0].split(",")
  assert header[:2] == ["image_id", "SBD"] and "accuracy@0.5" in header
  assert len(lines) == 1 + 2
  for name in ("worst.png", "embedding.png", "panels.png", "hparams.json"):
    assert os.path.isfile(os.path.join(workdir, name)), name


def test_the_best_checkpoint_is_what_evaluate_predict_and_export_load(
    data_dir, tmp_path, monkeypatch
):
  scores = {2: 0.5, 4: 0.9, 6: 0.7}
  seen = {}

  def scripted_evaluate(config, workdir, *, params=None, step=None, **kwargs):
    del config, workdir, kwargs
    if params is not None:
      seen[step] = [np.array(x) for x in jax.tree_util.tree_leaves(params)]
    return {"SBD": scores.get(step, 0.0)}

  monkeypatch.setattr(evaluate, "evaluate", scripted_evaluate)
  config = _config(data_dir)
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  assert sorted(seen) == [2, 4, 6]
  assert evaluate.checkpoint_in_use(config, workdir) == ("best", 4)
  for a, b in zip(jax.tree_util.tree_leaves(evaluate.load_params(config, workdir)), seen[4]):
    np.testing.assert_array_equal(a, b)
  config.eval.checkpoint = "latest"
  assert evaluate.checkpoint_in_use(config, workdir) == ("latest", 6)
  for a, b in zip(jax.tree_util.tree_leaves(evaluate.load_params(config, workdir)), seen[6]):
    np.testing.assert_array_equal(a, b)


def test_best_checkpoint_ranks_by_its_metric_and_survives_reopening(tmp_path):
  params = {"w": np.ones(3, np.float32)}
  best = checkpoint.BestCheckpoint(str(tmp_path), metric="|DiC|", higher_is_better=False)
  assert best.score is None and best.improves(5.0) and not best.improves(float("nan"))
  best.save(3, params, 1.5)
  best.close()
  again = checkpoint.BestCheckpoint(
      str(tmp_path), metric="|DiC|", higher_is_better=False, read_only=True
  )
  assert again.score == {"step": 3, "metric": "|DiC|", "value": 1.5}
  assert again.improves(1.0) and not again.improves(2.0)
  np.testing.assert_array_equal(again.restore({"w": np.zeros(3, np.float32)})["w"], params["w"])
  again.close()
  other = checkpoint.BestCheckpoint(str(tmp_path), metric="SBD", read_only=True)
  assert other.improves(0.0)  # ranked by another metric: the next evaluation replaces it
  other.close()
  assert (
      checkpoint.BestCheckpoint(str(tmp_path / "none"), metric="SBD", read_only=True).score is None
  )
