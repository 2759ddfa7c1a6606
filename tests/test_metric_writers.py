"""Metric writers: metrics.jsonl, TensorBoard events, hyperparameters; process 0 alone writes."""

import json
import os

import numpy as np
import pytest

from configs import tiny
import helpers
from instseg_jax import metric_writers


def test_jsonl_rows_keep_the_metrics_file_format_and_drop_rows_a_resume_repeats(tmp_path):
  writer = metric_writers.JsonlWriter(str(tmp_path))
  for step in (1, 2, 3):
    writer.write_scalars(step, {"loss": np.float32(step / 10), "eval/|DiC|": 2})
  writer.write_scalars(4, {})  # nothing to write: no row
  writer.write_images(3, {"eval/panels": np.zeros((2, 2, 3), np.uint8)})  # not its job
  rows = helpers.metric_rows(tmp_path)
  assert rows == [{"step": s, "loss": pytest.approx(s / 10), "eval/|DiC|": 2.0} for s in (1, 2, 3)]
  with open(writer.path, "a") as f:
    f.write('{"step": 4, "lo')  # a row cut short by a kill
  metric_writers.drop_rows_after(writer.path, 2)
  assert [r["step"] for r in helpers.metric_rows(tmp_path)] == [1, 2]


def test_tensorboard_events_read_back_with_their_steps(tmp_path):
  writer = metric_writers.TensorBoardWriter(str(tmp_path))
  image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
  writer.write_scalars(10, {"loss": 0.5, "eval/|DiC|": 1.25, "eval/accuracy@0.5": 0.75})
  writer.write_scalars(20, {"loss": 0.25})
  writer.write_images(20, {"eval/panels": image})
  writer.write_hparams(metric_writers.flat_hparams(tiny.get_config()))
  writer.close()
  events = metric_writers.read_events(str(tmp_path))
  assert events["loss"] == [(10, 0.5), (20, 0.25)]
  assert events["eval/abs_DiC"] == [(10, 1.25)]
  assert events["eval/accuracy_0.5"] == [(10, 0.75)]
  ((step, read),) = events["eval/panels"]
  assert step == 20
  np.testing.assert_array_equal(read[..., :3], image)


def test_a_resumed_run_hides_the_events_of_steps_it_trains_again(tmp_path):
  first = metric_writers.TensorBoardWriter(str(tmp_path))
  first.write_scalars(5, {"loss": 1.0})
  first.close()
  # TensorBoard drops events at or after purge_step from earlier files: the marker is there.
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  resumed = metric_writers.TensorBoardWriter(str(tmp_path / "resumed"), purge_step=4)
  resumed.close()
  (path,) = [os.path.join(tmp_path / "resumed", n) for n in os.listdir(tmp_path / "resumed")]
  with open(path, "rb") as f:
    data = f.read()
  starts = []
  offset = 0
  while offset < len(data):
    length = int.from_bytes(data[offset : offset + 8], "little")
    event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
    offset += 16 + length
    if event.HasField("session_log"):
      starts.append(event.step)
  assert starts == [4]


def test_only_process_0_writes(tmp_path):
  quiet = metric_writers.create_writer(str(tmp_path / "p1"), process_index=1)
  quiet.write_scalars(1, {"loss": 1.0})
  quiet.close()
  assert not os.path.exists(tmp_path / "p1")
  os.makedirs(tmp_path / "p0")
  writer = metric_writers.create_writer(str(tmp_path / "p0"), process_index=0)
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_hparams({"optim.learning_rate": 0.1})
  writer.close()
  assert helpers.metric_rows(tmp_path / "p0") == [{"step": 1, "loss": 1.0}]
  assert metric_writers.read_events(str(tmp_path / "p0"))["loss"] == [(1, 1.0)]
  with open(tmp_path / "p0" / "hparams.json") as f:
    assert json.load(f) == {"optim.learning_rate": 0.1}


def test_flat_hparams_name_every_config_leaf_with_values_the_dashboard_shows():
  config = tiny.get_config()
  flat = metric_writers.flat_hparams(config)
  assert flat["optim.learning_rate"] == config.optim.learning_rate
  assert flat["data.image_size"] == "(32, 32)"
  assert flat["eval.metric"] == "SBD"
  assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
