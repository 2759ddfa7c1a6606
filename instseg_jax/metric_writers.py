"""Where a run's numbers and pictures go: metrics.jsonl and TensorBoard event files.

Every writer takes the same four calls, so the training loop writes once and does not know
where it lands:

    writer = create_writer(workdir, process_index=jax.process_index(), start_step=step)
    writer.write_scalars(step, {"loss": 0.31, "learning_rate": 1e-3})
    writer.write_images(step, {"eval/panels": panel})     # (H, W, 3) uint8
    writer.write_hparams({"optim.learning_rate": 1e-3})
    writer.flush()

Only process 0 writes: the other processes get a writer with no destinations. TensorBoard
files come from tensorboardX, which needs no TensorFlow (clu's and flax's writers import it).
"""

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import ml_collections
import numpy as np

METRICS_FILE = "metrics.jsonl"
HPARAMS_FILE = "hparams.json"

Scalar = float | int
HParam = bool | int | float | str


class MetricWriter(Protocol):
  """What the training loop writes to."""

  def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
    ...

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    ...

  def write_hparams(self, hparams: Mapping[str, HParam]) -> None:
    ...

  def flush(self) -> None:
    ...

  def close(self) -> None:
    ...


def _logged_step(line: str) -> float:
  """The step of a metrics.jsonl row; infinite for a row cut short by a kill, so it goes."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return float("inf")


def drop_rows_after(path: str, step: int) -> None:
  """Removes the rows of metrics.jsonl at `path` logged for steps after `step`.

  A run stopped between a log and the next checkpoint logged steps that the resumed
  run trains and logs again; without this their rows would appear twice.
  """
  if not os.path.isfile(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line for line in lines if _logged_step(line) <= step]
  if len(kept) == len(lines):
    return
  # Written aside and renamed, so a kill now cannot leave half a file.
  with open(path + ".tmp", "w") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)


def _write_json(path: str, value: Any) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


class JsonlWriter:
  """Scalars as one JSON row per call in WORKDIR/metrics.jsonl: {"step": 100, "loss": ...}.

  The file scripts read (evaluate, tune and the tests do). Pictures have no place in it:
  evaluate writes them as PNG files and TensorBoard shows them. Hyperparameters go to
  hparams.json beside it, for scripts that compare runs.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, METRICS_FILE)
    self._hparams_path = os.path.join(workdir, HPARAMS_FILE)

  def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
    if not scalars:
      return
    row = {"step": int(step), **{name: float(value) for name, value in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    del step, images  # See the class docstring: pictures are files or TensorBoard's.

  def write_hparams(self, hparams: Mapping[str, HParam]) -> None:
    _write_json(self._hparams_path, dict(hparams))

  def flush(self) -> None:
    pass  # Every row is written and closed at once.

  def close(self) -> None:
    pass


def tensorboard_tag(name: str) -> str:
  """A metric's name as a TensorBoard tag: letters, digits and "_-/." only.

  "|DiC|" becomes "abs_DiC" and "accuracy@0.5" "accuracy_0.5"; tensorboardX would
  otherwise make "_DiC_" of the first.
  """
  name = re.sub(r"\|([^|]+)\|", r"abs_\1", name)
  return re.sub(r"[^-/\w.]", "_", name)


class TensorBoardWriter:
  """Event files in `logdir` for `tensorboard --logdir`; tags spelled by `tensorboard_tag`.

  Args:
    logdir: the folder of this run's event files (the workdir: one run per workdir).
    purge_step: events a previous run wrote at this step or later are hidden by
      TensorBoard; a resumed run passes the step after its checkpoint, so the steps it
      trains again are not drawn twice.
  """

  def __init__(self, logdir: str, *, purge_step: int | None = None):
    # Imported here: tensorboardX loads torch when it is installed, a second of start-up
    # that the processes that write nothing should not pay.
    import tensorboardX  # pylint: disable=g-import-not-at-top

    self._writer = tensorboardX.SummaryWriter(logdir, purge_step=purge_step, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
    for name, value in scalars.items():
      self._writer.add_scalar(tensorboard_tag(name), float(value), int(step))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    for name, image in images.items():
      self._writer.add_image(tensorboard_tag(name), np.asarray(image), int(step), dataformats="HWC")

  def write_hparams(self, hparams: Mapping[str, HParam]) -> None:
    """The HParams dashboard's record of this run, in its own event file.

    Only the session start is written (as clu does): TensorBoard takes the metrics of the
    table from the run's scalars.
    """
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top

    _, session_start, _ = summary.hparams(dict(hparams), {})
    self._writer._get_file_writer().add_summary(session_start)  # pylint: disable=protected-access

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MultiWriter:
  """Writes to each of `writers`; with none, writes nothing (processes other than 0)."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers = tuple(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
    for writer in self.writers:
      writer.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    for writer in self.writers:
      writer.write_images(step, images)

  def write_hparams(self, hparams: Mapping[str, HParam]) -> None:
    for writer in self.writers:
      writer.write_hparams(hparams)

  def flush(self) -> None:
    for writer in self.writers:
      writer.flush()

  def close(self) -> None:
    for writer in self.writers:
      writer.close()


def create_writer(workdir: str, *, process_index: int, start_step: int = 0) -> MultiWriter:
  """The writer of a training run that starts (or resumes) at `start_step`.

  Rows and events of steps after `start_step` left by an earlier run are dropped (JSONL) or
  hidden (TensorBoard): the run trains those steps again.
  """
  if process_index != 0:
    return MultiWriter([])
  jsonl = JsonlWriter(workdir)
  drop_rows_after(jsonl.path, start_step)
  return MultiWriter(
      [jsonl, TensorBoardWriter(workdir, purge_step=start_step + 1 if start_step else None)]
  )


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, HParam]:
  """{"optim.learning_rate": 0.001, ...}: every config leaf as a value the dashboard can show.

  Tuples and other values become strings; NaN stays a float.
  """
  flat = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, (ml_collections.ConfigDict, dict)):
      for key in sorted(node.keys()):
        visit(f"{prefix}{key}.", node[key])
      return
    name = prefix[:-1]
    if isinstance(node, (bool, int, str)) or (isinstance(node, float) and not math.isinf(node)):
      flat[name] = node
    else:
      flat[name] = str(node)

  visit("", config)
  return flat


def read_events(logdir: str) -> dict[str, list[tuple[int, float | np.ndarray]]]:
  """{tag: [(step, value)]} of the scalars and images in logdir's event files, in write order.

  Scalars come back as floats, images as (H, W, C) uint8. Read with tensorboardX's protos
  and the record framing (length, CRC, data, CRC), so neither TensorFlow nor tensorboard is
  needed; CRCs are not checked. For scripts that compare runs, and for the tests.
  """
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  found: dict[str, list[tuple[int, float | np.ndarray]]] = {}
  paths = sorted(
      os.path.join(root, name)
      for root, _, names in os.walk(logdir)
      for name in names
      if name.startswith("events.out.tfevents")
  )
  for path in paths:
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset + 12 <= len(data):
      length = int.from_bytes(data[offset : offset + 8], "little")
      record = data[offset + 12 : offset + 12 + length]
      offset += 12 + length + 4
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          found.setdefault(value.tag, []).append((event.step, value.simple_value))
        elif value.HasField("image"):
          image = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
          found.setdefault(value.tag, []).append((event.step, image))
  return found
