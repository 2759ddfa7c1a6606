"""A thin wrapper over orbax's CheckpointManager.

Each checkpoint holds two items: "state" (the train state pytree) and, when a
data iterator is given, "data" (the grain iterator position, one small file
per process) so that a resumed run sees exactly the batches it would have
seen. orbax writes into a temporary folder and renames it when complete, so a
run killed during a save never leaves a checkpoint that looks complete; the
temporary folders such a run leaves are removed when the next run opens the
folder for writing.

Beside them, <workdir>/best holds the parameters of the best evaluation so far
(`BestCheckpoint`), which evaluate, predict and export load by default.
"""

import contextlib
import os
from typing import Any

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp

from instseg_jax import validate

# How many differing parameter shapes a mismatch error names before "and N more".
_NAMED_MISMATCHES = 3


@contextlib.contextmanager
def _orbax_warnings_off():
  """absl logging (orbax's) at ERROR for the block, for warnings that need no action."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


class Checkpointer:
  """Saves and restores (state, data iterator) under <workdir>/checkpoints."""

  def __init__(self, workdir: str, *, max_to_keep: int = 2, read_only: bool = False):
    # orbax refuses relative paths.
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if read_only and not os.path.isdir(self.directory):
      raise FileNotFoundError(f"no checkpoint in {self.directory}: train first (--mode=train)")
    # A read-only manager warns that it is read-only, which is what was asked for.
    with _orbax_warnings_off():
      self._manager = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(
              max_to_keep=max_to_keep,
              create=not read_only,
              read_only=read_only,
              # Half-written steps of a killed run would otherwise stay forever.
              cleanup_tmp_directories=not read_only,
              # Writing root metadata is a barrier of all processes; a reader may be alone
              # (process 0 evaluating at the end of a multi-process run).
              save_root_metadata=not read_only,
          ),
      )

  def latest_step(self, *, reload: bool = False) -> int | None:
    """The newest complete step; with `reload`, read from disk, not remembered."""
    if reload:
      self._manager.reload()
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any = None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: Any, data_iterator: Any = None, step: int | None = None) -> Any:
    """The state at `step` (default latest); also rewinds `data_iterator`."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    check_stored_shapes(
        os.path.join(self.directory, str(step), "state"),
        abstract_state,
        name=f"checkpoint step {step} in {self.directory}",
    )
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def check_stored_shapes(item_dir: str, target: Any, *, name: str) -> None:
  """Raises ConfigError naming the arrays whose shape in item_dir differs from the target's.

  orbax would fail deep inside the restore with a long traceback that does not
  say that the checkpoint comes from another model.
  """
  try:
    # orbax warns that an item of a composite checkpoint has no metadata file of its
    # own, which is how CheckpointManager writes them; the shapes are read all the same.
    with _orbax_warnings_off():
      stored = ocp.StandardCheckpointer().metadata(item_dir).item_metadata
  except (FileNotFoundError, ValueError):
    return  # No readable metadata: orbax's restore says what is wrong.
  differences = shape_differences(_shapes(stored), _shapes(target))
  if not differences:
    return
  named = "; ".join(differences[:_NAMED_MISMATCHES])
  more = len(differences) - _NAMED_MISMATCHES
  named += f"; and {more} more" if more > 0 else ""
  raise validate.ConfigError(
      f"{name} holds another model than the config describes (checkpoint vs config): "
      f"{named}. Use the config it was trained with, or another --workdir"
  )


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Shape/dtype/sharding skeleton of `tree`, the target orbax restores into."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
  )


def _key_name(key: Any) -> str:
  # Saved trees are plain dicts and lists; targets are dataclasses and named
  # tuples: both spell a path the same way once keys are reduced to names.
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{"params/down_0/.../kernel": shape} of every array leaf of a tree."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
      "/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
      for path, leaf in leaves
  }


def shape_differences(
    stored: dict[str, tuple[int, ...]], target: dict[str, tuple[int, ...]]
) -> list[str]:
  """One line per array that is missing on one side or has another shape.

  The parameters come first: the optimizer's moments repeat their differences.
  """
  lines = []
  for path in sorted(stored.keys() | target.keys(), key=lambda p: (not p.startswith("params/"), p)):
    if path not in target:
      lines.append(f"{path} {stored[path]} vs absent")
    elif path not in stored:
      lines.append(f"{path} absent vs {target[path]}")
    elif stored[path] != target[path]:
      lines.append(f"{path} {stored[path]} vs {target[path]}")
  return lines


BEST_DIR = "best"


class BestCheckpoint:
  """The parameters of the best evaluation so far, under <workdir>/best, beside the latest.

  One checkpoint: "params" and "score" ({"step", "metric", "value"}); a better evaluation
  replaces it. Only parameters: evaluate, predict and export need nothing else, and a
  resumed run starts from the latest checkpoint, not from this one.

  Args:
    workdir: the run's folder.
    metric: the evaluation summary's key that ranks checkpoints (config.eval.metric).
    higher_is_better: whether a larger value of `metric` is better.
    read_only: for evaluate, predict and export; the folder need not exist.
  """

  def __init__(
      self, workdir: str, *, metric: str, higher_is_better: bool = True, read_only: bool = False
  ):
    self.directory = os.path.join(os.path.abspath(workdir), BEST_DIR)
    self.metric = metric
    self.higher_is_better = higher_is_better
    self._manager = None
    if read_only and not os.path.isdir(self.directory):
      return
    with _orbax_warnings_off():
      self._manager = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(
              max_to_keep=1,
              create=not read_only,
              read_only=read_only,
              cleanup_tmp_directories=not read_only,
              save_root_metadata=not read_only,
          ),
      )
    self._score = self._read_score()

  def _read_score(self) -> dict | None:
    step = self._manager.latest_step()
    if step is None:
      return None
    with _orbax_warnings_off():
      restored = self._manager.restore(step, args=ocp.args.Composite(score=ocp.args.JsonRestore()))
    return dict(restored["score"])

  @property
  def score(self) -> dict | None:
    """{"step", "metric", "value"} of the kept checkpoint, or None when there is none."""
    return None if self._manager is None else self._score

  def improves(self, value: float) -> bool:
    """Whether an evaluation scoring `value` is better than the kept one (NaN never is).

    A kept checkpoint ranked by another metric (the config changed) is replaced.
    """
    if value is None or value != value:
      return False
    kept = self.score
    if kept is None or kept["metric"] != self.metric:
      return True
    return value > kept["value"] if self.higher_is_better else value < kept["value"]

  def save(self, step: int, params: Any, value: float) -> None:
    """Keeps `params` of `step`, which scored `value`, in place of the kept checkpoint.

    A collective with several processes: every process calls it with the same step.
    """
    self._score = {"step": int(step), "metric": self.metric, "value": float(value)}
    self._manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), score=ocp.args.JsonSave(self._score)
        ),
        force=True,
    )

  def restore(self, abstract_params: Any) -> Any:
    """The kept parameters, restored into the shapes and shardings of `abstract_params`."""
    step = self.score["step"]
    check_stored_shapes(
        os.path.join(self.directory, str(step), "params"),
        abstract_params,
        name=f"the best checkpoint (step {step}) in {self.directory}",
    )
    restored = self._manager.restore(
        step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
    )
    return restored["params"]

  def wait(self) -> None:
    if self._manager is not None:
      self._manager.wait_until_finished()

  def close(self) -> None:
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()
