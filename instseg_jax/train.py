"""train_and_evaluate: mesh, state, loop, checkpoints, logging."""

import contextlib
import functools
import json
import os
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from instseg_jax import checkpoint
from instseg_jax import models
from instseg_jax import parallel
from instseg_jax import state as state_lib
from instseg_jax import train_step as train_step_lib
from instseg_jax import validate
from instseg_jax.data import builders
from instseg_jax.data import pipeline


class NonFiniteLossError(RuntimeError):
  """Training met a non-finite loss or gradient and stopped."""


@contextlib.contextmanager
def stop_requests():
  """Turns SIGTERM/SIGINT into a flag the loop polls between steps.

  The step in flight finishes and a checkpoint is written before exit, so a
  preempted run loses nothing. One process stops after the next step; several
  processes stop together at the next step that logs or saves (`stop_agreed`).
  """
  requested = {"signal": None}

  def handler(signum, frame):
    del frame
    requested["signal"] = signal.Signals(signum).name

  previous = {}
  # Python only lets the main thread install signal handlers.
  if threading.current_thread() is threading.main_thread():
    for signum in (signal.SIGTERM, signal.SIGINT):
      previous[signum] = signal.signal(signum, handler)
  try:
    yield requested
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)


def say(message: str) -> None:
  """A line for the user, from process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


def data_dir(config: ml_collections.ConfigDict) -> str | None:
  return config.data.data_dir or None


def _write_metrics(workdir: str, step: int, metrics: dict[str, float]) -> None:
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": step, **metrics}) + "\n")


def _logged_step(line: str) -> float:
  """The step of a metrics.jsonl row; infinite for a row cut short by a kill, so it goes."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return float("inf")


def _drop_metrics_after(workdir: str, step: int) -> None:
  """Removes the metrics.jsonl rows of steps after `step`, the step a run starts from.

  A run stopped between a log and the next checkpoint logged steps that the resumed
  run trains and logs again; without this their rows would appear twice.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.isfile(path):
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


def prepare_data(config: ml_collections.ConfigDict, *, process_index: int,
                 agree=None) -> None:
  """Writes the data set files on process 0 and checks what the run will read.

  Every process learns whether process 0 succeeded, so that a failed build ends
  every process with an error instead of leaving the others waiting for it.

  Args:
    config: the experiment config.
    process_index: this JAX process.
    agree: fn(flag) -> whether any process set it, called once by every process
      (a barrier); default parallel.any_process.

  Raises:
    builders.DataError, validate.ConfigError: process 0's error on process 0; on
      the other processes a DataError that points to process 0's log.
  """
  agree = agree or parallel.any_process
  error = None
  if process_index == 0:
    try:
      builder = pipeline.prepare(config, data_dir=data_dir(config))
      pipeline.check_prepared(config, builder)
    except Exception as caught:  # pylint: disable=broad-except
      # Re-raised below, once the other processes know.
      error = caught
  failed = agree(error is not None)
  if error is not None:
    raise error
  if failed:
    raise builders.DataError(
        "preparing the data failed on process 0; its output says why")


def _raise_if_nonfinite(pending, fetched, checkpointer) -> None:
  for (step, batch_ids, _), metrics in zip(pending, fetched):
    if not metrics["finite"]:
      checkpointer.wait()
      raise NonFiniteLossError(
          f"non-finite loss or gradient at step {step} (batch ids {batch_ids.tolist()} of "
          f"this process); the last good checkpoint is step {checkpointer.latest_step()} "
          f"in {checkpointer.directory}. Lower config.optim.learning_rate, or set "
          "config.train.skip_nonfinite=True to skip such steps")


def stop_agreed(requested: dict, *, sync_point: bool) -> bool:
  """Whether the loop stops after this step; every process gets the same answer.

  A process that stopped alone would leave the others waiting in the next step's
  collectives. Processes agree at steps that fetch metrics or save anyway
  (`sync_point`, the same in every process), so the loop adds no host round trip
  of its own; a single process needs no agreement and stops at the next step.
  """
  local = requested["signal"] is not None
  if sync_point:
    return parallel.any_process(local)
  return local and jax.process_count() == 1


def _stop_message(stopped_by: str, step: int, checkpointer: checkpoint.Checkpointer) -> str:
  """What a stopped run tells the user, from what is on disk rather than what was meant."""
  saved = checkpointer.latest_step(reload=True)
  if saved == step:
    return (f"Stopped by {stopped_by} after step {step}; checkpoint of step {saved} saved in "
            f"{checkpointer.directory}. Run the same command again to resume.")
  if saved is None:
    return (f"Stopped by {stopped_by} after step {step}; no checkpoint is in "
            f"{checkpointer.directory}, so the same command starts again from step 0.")
  return (f"Stopped by {stopped_by} after step {step}; the latest checkpoint in "
          f"{checkpointer.directory} is step {saved}. Run the same command again to resume "
          f"from it.")


def _with_pretrained_encoder(state: state_lib.TrainState, config: ml_collections.ConfigDict,
                             sharding) -> state_lib.TrainState:
  """A fresh state whose encoder holds the weights of config.model.pretrained.

  Only for a fresh start: a resumed run has its trained weights in the checkpoint.
  """
  try:
    params = models.load_pretrained(jax.device_get(state.params), config)
  except (ImportError, ValueError) as error:
    raise validate.ConfigError(f"config.model.pretrained={config.model.pretrained!r}: {error}"
                               ) from error
  fresh = state_lib.TrainState.create(apply_fn=state.apply_fn, params=params, tx=state.tx)
  return jax.device_put(fresh, sharding)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Trains to config.train.num_steps (resuming from workdir), then evaluates.

  Returns the evaluation summary, or None when training stopped on a signal.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh)

  # One process writes the data set files; the others read them once written.
  prepare_data(config, process_index=jax.process_index())
  data_iterator = pipeline.train_iterator(
      config, data_dir=data_dir(config), process_index=jax.process_index(),
      process_count=jax.process_count())

  model = models.create_model(config)
  replicated = parallel.replicated(mesh)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  create = jax.jit(functools.partial(state_lib.create_train_state, model, config),
                   out_shardings=replicated)
  state = create(init_rng)
  say(f"model {config.model.name}: {state_lib.parameter_count(state.params):,} parameters, "
      f"{jax.device_count()} devices, {jax.process_count()} processes")

  checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(checkpoint.abstract_like(state, replicated), data_iterator)
    say(f"resumed from step {int(state.step)} in {checkpointer.directory}")
  elif config.model.get("pretrained", ""):
    state = _with_pretrained_encoder(state, config, replicated)
    say(f"encoder weights from {config.model.pretrained}")
  _drop_metrics_after(workdir, int(state.step))

  step_fn = jax.jit(
      functools.partial(train_step_lib.train_step, config=config),
      in_shardings=(replicated, parallel.batch_sharded(mesh), replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
      compiler_options=models.compiler_options())

  start_step = int(state.step)
  num_steps = config.train.num_steps
  stopped_by = None
  with stop_requests() as requested, tqdm(
      total=num_steps, initial=start_step, desc="train", unit="step",
      disable=jax.process_index() != 0 or start_step >= num_steps) as bar:
    window_start = time.perf_counter()
    pending = []
    for step in range(start_step, num_steps):
      batch = next(data_iterator)
      batch_ids = batch.pop("index")
      state, metrics = step_fn(state, parallel.global_batch(batch, mesh), step_rng)
      pending.append((step + 1, batch_ids, metrics))
      bar.update(1)
      done = step + 1
      is_last = done == num_steps
      logs = done % config.train.log_every == 0
      saves = done % config.train.checkpoint_every == 0 or is_last
      # Decided once per step, so that a stop is always a save: a signal that comes
      # later in this step (while waiting on the fetch, say) stops the next one.
      stop = stop_agreed(requested, sync_point=logs or saves)
      will_save = saves or stop
      # Metrics are checked before every save so a non-finite state is never saved.
      if logs or will_save:
        fetched = parallel.to_host([m for _, _, m in pending])
        if not config.train.skip_nonfinite:
          _raise_if_nonfinite(pending, fetched, checkpointer)
        pending = []
        # Skipped steps are counted, not averaged in.
        finite = [m for m in fetched if m["finite"]] or fetched
        summary = {k: float(np.mean([m[k] for m in finite])) for k in fetched[-1]}
        summary["skipped"] = float(sum(1 - m["finite"] for m in fetched))
        elapsed = time.perf_counter() - window_start
        summary["steps_per_second"] = len(fetched) / max(elapsed, 1e-9)
        window_start = time.perf_counter()
        _write_metrics(workdir, done, summary)
        bar.set_postfix(loss=f"{summary['loss']:.4f}")
      if will_save:
        checkpointer.save(done, state, data_iterator)
      if (config.train.eval_every and done % config.train.eval_every == 0 and not is_last
          and not stop and jax.process_index() == 0):
        evaluate_and_log(config, workdir, parallel.to_host(state.params), done)
      if stop:
        stopped_by = requested["signal"] or "a stop request of another process"
        break
  checkpointer.wait()
  if stopped_by:
    print(_stop_message(stopped_by, int(state.step), checkpointer), flush=True)
  checkpointer.close()
  if stopped_by:
    return None

  if jax.process_index() != 0:
    return None
  # Evaluation is host work on process 0, on its local devices; its scores are in results.json.
  from instseg_jax import evaluate  # pylint: disable=g-import-not-at-top
  return evaluate.evaluate(config, workdir, params=parallel.to_host(state.params))


def evaluate_and_log(config: ml_collections.ConfigDict, workdir: str, params, step: int
                     ) -> dict[str, float]:
  """Scores params on the eval split (the evaluate path) and logs them as "eval/NAME".

  Host work on process 0, on its local devices; the other processes go on to the
  next step and wait for it there.
  """
  from instseg_jax import evaluate  # pylint: disable=g-import-not-at-top
  summary = evaluate.evaluate(config, workdir, params=params, verbose=False)
  _write_metrics(workdir, step, {f"eval/{name}": float(value) for name, value in summary.items()})
  say(f"step {step}: validation SBD {summary['SBD']:.3f}, |DiC| {summary['|DiC|']:.3f}")
  return summary
