"""train_and_evaluate: mesh, state, loop, checkpoints, logging."""

import contextlib
import functools
import os
import signal
import threading

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from instseg_jax import checkpoint
from instseg_jax import evaluate
from instseg_jax import metric_writers
from instseg_jax import models
from instseg_jax import optim
from instseg_jax import parallel
from instseg_jax import periodic
from instseg_jax import state as state_lib
from instseg_jax import train_step as train_step_lib
from instseg_jax import validate
from instseg_jax.data import builders
from instseg_jax.data import pipeline


class NonFiniteLossError(RuntimeError):
  """Training met a non-finite loss or gradient and stopped."""


class StoppedError(Exception):
  """Training stopped on a signal before its last step, after saving a checkpoint.

  Raised rather than returned so that nothing downstream (a script's next command, a scheduler
  that restarts failed jobs) takes an unfinished run for a finished one.
  """

  def __init__(self, message: str, stopped_by: str):
    super().__init__(message)
    # The shell's status for a process ended by that signal; a stop asked by another process
    # (multi-host) reads as SIGTERM, what preemption sends.
    known = stopped_by in signal.Signals.__members__
    self.exit_code = 128 + int(signal.Signals[stopped_by] if known else signal.SIGTERM)


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


def prepare_data(config: ml_collections.ConfigDict, *, process_index: int, agree=None) -> None:
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
    raise builders.DataError("preparing the data failed on process 0; its output says why")


def _raise_if_nonfinite(pending, fetched, checkpointer) -> None:
  for (step, batch_ids, _), metrics in zip(pending, fetched):
    if not metrics["finite"]:
      checkpointer.wait()
      raise NonFiniteLossError(
          f"non-finite loss or gradient at step {step} (batch ids {batch_ids.tolist()} of "
          f"this process); the last good checkpoint is step {checkpointer.latest_step()} "
          f"in {checkpointer.directory}. Lower config.optim.learning_rate, or set "
          "config.train.skip_nonfinite=True to skip such steps"
      )


def training_scalars(
    fetched: list[dict], *, seconds: dict[str, float], batch_size: int, learning_rate: float
) -> dict[str, float]:
  """The row a logging step writes for the steps since the last one.

  Loss terms and gradient norm are averaged over the finite steps (skipped steps are
  counted, not averaged in); throughput is over the time spent training, so evaluations
  and checkpoints do not lower it: their share of the time is reported beside it.

  Args:
    fetched: each step's metrics, on the host.
    seconds: `periodic.ActionTimer.window()` of these steps.
    batch_size: images per step (the global batch).
    learning_rate: the rate of the last of these steps.
  """
  finite = [m for m in fetched if m["finite"]] or fetched
  row = {k: float(np.mean([m[k] for m in finite])) for k in fetched[-1]}
  row["skipped"] = float(sum(1 - m["finite"] for m in fetched))
  steps_per_second = len(fetched) / max(seconds[periodic.ActionTimer.TRAIN], 1e-9)
  row.update(
      learning_rate=learning_rate,
      steps_per_second=steps_per_second,
      images_per_second=steps_per_second * batch_size,
      **periodic.fractions(seconds),
  )
  return row


def time_to_save(clock: periodic.Every, step: int, *, sync_point: bool) -> bool:
  """Whether config.train.checkpoint_every_seconds passed; every process gets the same answer.

  Clocks differ between processes, so the answer is agreed on, at steps that are sync
  points anyway (`stop_agreed`).
  """
  if not clock.seconds or not sync_point:
    return False
  return parallel.any_process(clock(step))


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
    return (
        f"Stopped by {stopped_by} after step {step}; checkpoint of step {saved} saved in "
        f"{checkpointer.directory}. Run the same command again to resume."
    )
  if saved is None:
    return (
        f"Stopped by {stopped_by} after step {step}; no checkpoint is in "
        f"{checkpointer.directory}, so the same command starts again from step 0."
    )
  return (
      f"Stopped by {stopped_by} after step {step}; the latest checkpoint in "
      f"{checkpointer.directory} is step {saved}. Run the same command again to resume "
      f"from it."
  )


def _with_pretrained_encoder(
    state: state_lib.TrainState, config: ml_collections.ConfigDict, sharding
) -> state_lib.TrainState:
  """A fresh state whose encoder holds the weights of config.model.pretrained.

  Only for a fresh start: a resumed run has its trained weights in the checkpoint.
  """
  try:
    params = models.load_pretrained(jax.device_get(state.params), config)
  except (ImportError, ValueError) as error:
    raise validate.ConfigError(
        f"config.model.pretrained={config.model.pretrained!r}: {error}"
    ) from error
  fresh = state_lib.TrainState.create(apply_fn=state.apply_fn, params=params, tx=state.tx)
  return jax.device_put(fresh, sharding)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Trains to config.train.num_steps (resuming from workdir), then evaluates.

  Returns the evaluation summary on process 0 (None on the others).

  Raises:
    StoppedError: a signal stopped training; the checkpoint it saved resumes it.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  validate.check_batch_split(config.train.batch_size, mesh.devices.size, "devices")

  # One process writes the data set files; the others read them once written.
  prepare_data(config, process_index=jax.process_index())
  data_iterator = pipeline.train_iterator(
      config,
      data_dir=data_dir(config),
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )

  model = models.create_model(config)
  replicated = parallel.replicated(mesh)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  create = jax.jit(
      functools.partial(state_lib.create_train_state, model, config), out_shardings=replicated
  )
  state = create(init_rng)
  say(
      f"model {config.model.name}: {state_lib.parameter_count(state.params):,} parameters, "
      f"{jax.device_count()} devices, {jax.process_count()} processes"
  )

  checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(checkpoint.abstract_like(state, replicated), data_iterator)
    say(f"resumed from step {int(state.step)} in {checkpointer.directory}")
  elif config.model.pretrained:
    state = _with_pretrained_encoder(state, config, replicated)
    say(f"encoder weights from {config.model.pretrained}")

  step_fn = jax.jit(
      functools.partial(train_step_lib.train_step, config=config),
      in_shardings=(replicated, parallel.batch_sharded(mesh), replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
      compiler_options=models.compiler_options(),
  )

  start_step = int(state.step)
  num_steps = config.train.num_steps
  writer = metric_writers.create_writer(
      workdir, process_index=jax.process_index(), start_step=start_step
  )
  if start_step == 0:
    writer.write_hparams(metric_writers.flat_hparams(config))
  best = evaluate.best_checkpoint(config, workdir, read_only=False)
  learning_rate = optim.make_schedule(config)
  save_clock = periodic.Every(seconds=config.train.checkpoint_every_seconds)
  # The trace starts after the first logging window, past compilation; process 0 only.
  profile = periodic.Profile(
      workdir,
      first_step=start_step + config.train.log_every,
      num_steps=config.train.profile_steps if jax.process_index() == 0 else 0,
  )
  timer = periodic.ActionTimer(("eval", "checkpoint"))
  last_eval = None
  stopped_by = None
  try:
    with (
        stop_requests() as requested,
        tqdm(
            total=num_steps,
            initial=start_step,
            desc="train",
            unit="step",
            disable=jax.process_index() != 0 or start_step >= num_steps,
        ) as bar,
    ):
      pending = []
      for step in range(start_step, num_steps):
        batch = next(data_iterator)
        batch_ids = batch.pop("index")
        state, metrics = step_fn(state, parallel.global_batch(batch, mesh), step_rng)
        pending.append((step + 1, batch_ids, metrics))
        bar.update(1)
        done = step + 1
        is_last = done == num_steps
        # What happens after this step. Every process decides the same: saves and stops are
        # collective.
        logs = done % config.train.log_every == 0
        saves = (
            done % config.train.checkpoint_every == 0
            or is_last
            or time_to_save(save_clock, done, sync_point=logs)
        )
        # Decided once per step, so that a stop is always a save: a signal that comes
        # later in this step (while waiting on the fetch, say) stops the next one.
        stop = stop_agreed(requested, sync_point=logs or saves)
        evaluates = not stop and (
            is_last or (config.train.eval_every and done % config.train.eval_every == 0)
        )
        profile(done)
        # Metrics are checked before every save so a non-finite state is never saved.
        if logs or saves or stop:
          fetched = parallel.to_host([m for _, _, m in pending])
          if not config.train.skip_nonfinite:
            _raise_if_nonfinite(pending, fetched, checkpointer)
          pending = []
          row = training_scalars(
              fetched,
              seconds=timer.window(),
              batch_size=config.train.batch_size,
              learning_rate=float(learning_rate(done - 1)),
          )
          writer.write_scalars(done, row)
          bar.set_postfix(loss=f"{row['loss']:.4f}")
        if saves or stop:
          with timer("checkpoint"):
            checkpointer.save(done, state, data_iterator)
          save_clock.restart()
        if evaluates:
          with timer("eval"):
            last_eval = done, evaluate_and_keep_best(
                config, workdir, state.params, done, writer=writer, best=best
            )
        if stop:
          stopped_by = requested["signal"] or "a stop request of another process"
          break
  finally:
    # Also when a non-finite loss ends the run: what was traced and logged is kept.
    profile.stop()
    writer.close()
  checkpointer.wait()
  stop_message = _stop_message(stopped_by, int(state.step), checkpointer) if stopped_by else ""
  if stopped_by:
    print(stop_message, flush=True)
  checkpointer.close()
  best.close()
  if start_step < num_steps:
    say(f"time: {timer.summary()}")
  if stopped_by:
    raise StoppedError(stop_message, stopped_by)
  # Every process: opening checkpoint folders is a collective under orbax.
  in_use = evaluate.checkpoint_in_use(config, workdir)
  if jax.process_index() != 0:
    return None
  return final_evaluation(config, workdir, last_eval, in_use)


def evaluate_and_keep_best(
    config: ml_collections.ConfigDict,
    workdir: str,
    params,
    step: int,
    *,
    writer: metric_writers.MetricWriter,
    best: checkpoint.BestCheckpoint,
) -> dict[str, float] | None:
  """Scores params on the eval split (the evaluate path), logs them, keeps them if the best.

  The evaluation is host work on process 0, on its local devices; the other processes
  wait for its verdict on the best checkpoint (a collective), then all save it together.

  Returns:
    The evaluation summary on process 0, None on the others.
  """
  summary, value, improved = None, float("nan"), False
  if jax.process_index() == 0:
    summary = evaluate.evaluate(
        config, workdir, params=parallel.to_host(params), verbose=False, writer=writer, step=step
    )
    value = summary.get(best.metric, float("nan"))
    improved = best.improves(value)
    if best.metric in summary:
      say(
          f"step {step}: validation {best.metric} {value:.3f}"
          + (" (best so far, kept)" if improved else "")
      )
  if parallel.any_process(improved):
    best.save(step, params, value)
  return summary


def final_evaluation(
    config: ml_collections.ConfigDict,
    workdir: str,
    last_eval: tuple[int, dict] | None,
    in_use: tuple[str, int] | None,
) -> dict[str, float]:
  """The scores of `in_use` (`evaluate.checkpoint_in_use`), the checkpoint evaluate uses.

  That checkpoint is evaluated again only when it is not the one the loop evaluated last.
  """
  if last_eval is None or in_use is None or in_use[1] != last_eval[0]:
    return evaluate.evaluate(config, workdir)
  say(f"checkpoint: {in_use[0]}, step {in_use[1]}")
  evaluate.report(last_eval[1], config)
  return last_eval[1]
