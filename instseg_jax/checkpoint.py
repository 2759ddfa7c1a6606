"""A thin wrapper over orbax's CheckpointManager.

Each checkpoint holds two items: "state" (the train state pytree) and, when a
data iterator is given, "data" (the grain iterator position, one small file
per process) so that a resumed run sees exactly the batches it would have
seen. orbax writes into a temporary folder and renames it when complete, so a
run killed during a save never leaves a checkpoint that looks complete.
"""

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores (state, data iterator) under <workdir>/checkpoints."""

  def __init__(self, workdir: str, *, max_to_keep: int = 2, read_only: bool = False):
    # orbax refuses relative paths.
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if read_only and not os.path.isdir(self.directory):
      raise FileNotFoundError(
          f"no checkpoint in {self.directory}: train first (--mode=train)")
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any = None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: Any, data_iterator: Any = None,
              step: int | None = None) -> Any:
    """The state at `step` (default latest); also rewinds `data_iterator`."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
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


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Shape/dtype/sharding skeleton of `tree`, the target orbax restores into."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
