"""When the training loop does what: triggers every N steps or seconds, action timing, a profile.

clu.periodic_actions does this job in big_vision and the flax examples, but imports
TensorFlow; these are the few parts the loop needs.

Step triggers are the same in every process, so they may start collective work (a
checkpoint, a fetch that agrees on a stop). Clocks differ between processes: a trigger by
seconds must be agreed on (`parallel.any_process`) before collective work follows it.
"""

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator

import jax


@dataclasses.dataclass
class Every:
  """Due every `steps` steps (0 = never by steps) or once `seconds` passed since it was last due.

  Usage:
    save = Every(steps=500, seconds=600.0)
    if save(step): ...
  """

  steps: int = 0
  seconds: float = 0.0
  clock: Callable[[], float] = time.monotonic
  _last: float | None = None

  def __call__(self, step: int) -> bool:
    now = self.clock()
    if self._last is None:
      self._last = now  # The first interval starts with the first call.
    due = bool(self.steps) and step % self.steps == 0
    due = due or (self.seconds > 0 and now - self._last >= self.seconds)
    if due:
      self._last = now
    return due

  def restart(self) -> None:
    """Starts the interval in seconds again now (the action ran for another reason)."""
    self._last = self.clock()


class ActionTimer:
  """Wall time spent in each named action, reported per window as clu's ReportProgress does.

  The time of a window not spent in a named action counts as "train".

  Usage:
    timer = ActionTimer()
    with timer("eval"): ...
    seconds = timer.window()   # {"train": 9.0, "eval": 1.0, ...}; starts the next window
  """

  TRAIN = "train"

  def __init__(
      self,
      names: tuple[str, ...] = ("eval", "checkpoint"),
      *,
      clock: Callable[[], float] = time.perf_counter,
  ):
    self._clock = clock
    self.names = names
    self._window = dict.fromkeys(names, 0.0)
    self._total = dict.fromkeys((self.TRAIN, *names), 0.0)
    self._window_start = clock()

  @contextlib.contextmanager
  def __call__(self, name: str) -> Iterator[None]:
    start = self._clock()
    try:
      yield
    finally:
      self._window[name] += self._clock() - start

  def window(self) -> dict[str, float]:
    """Seconds of "train" and of every named action since the last call; starts the next."""
    now = self._clock()
    elapsed = now - self._window_start
    spent = {self.TRAIN: max(elapsed - sum(self._window.values()), 0.0), **self._window}
    for name, seconds in spent.items():
      self._total[name] += seconds
    self._window = dict.fromkeys(self.names, 0.0)
    self._window_start = now
    return spent

  def summary(self) -> str:
    """One line for the end of a run: seconds in all and the share of each action."""
    self.window()
    total = max(sum(self._total.values()), 1e-9)
    shares = ", ".join(
        f"{name} {100 * seconds / total:.0f}%" for name, seconds in self._total.items()
    )
    return f"{total:.0f} s: {shares}"


def fractions(seconds: dict[str, float]) -> dict[str, float]:
  """{"time/NAME": share of the window} from `ActionTimer.window`'s seconds."""
  total = max(sum(seconds.values()), 1e-9)
  return {f"time/{name}": value / total for name, value in seconds.items()}


class Profile:
  """A jax.profiler trace of `num_steps` steps after `first_step`, into `logdir`.

  TensorBoard shows it in its profile tab (with the tensorboard-plugin-profile package).
  Called after every step; does nothing once the trace is written or when num_steps is 0.
  """

  def __init__(self, logdir: str, *, first_step: int, num_steps: int):
    self.logdir = logdir
    self.first_step = first_step
    self.last_step = first_step + num_steps
    self.enabled = num_steps > 0
    self.tracing = False

  def __call__(self, step: int) -> None:
    """Starts the trace after step `first_step` and stops it after step `last_step`."""
    if not self.enabled:
      return
    if step == self.first_step and not self.tracing:
      os.makedirs(self.logdir, exist_ok=True)
      jax.profiler.start_trace(self.logdir)
      self.tracing = True
    elif step >= self.last_step and self.tracing:
      self.stop()

  def stop(self) -> None:
    """Ends a trace in progress (a run that stops early still writes what it traced)."""
    if self.tracing:
      jax.profiler.stop_trace()
      self.tracing = False
      self.enabled = False
