"""Benchmark children: one framework per process, driven line by line, alternated by the driver.

Idle PyTorch OpenMP threads slow JAX in a shared process, and a machine's load drifts during a
long run; so each side of a comparison runs in a process of its own, pinned to the same cores
with the same thread count, and the driver alternates them request by request, so that the
ratio of each round compares runs that saw the same load.

A child is a script run with `--child=NAME ...`: it sets itself up, calls `serve(handlers)`,
and answers each request `{"call": HANDLER, ...kwargs}` with the handler's JSON result.
"""

from collections.abc import Callable
import json
import os
import subprocess
import sys
from typing import Any


def serve(handlers: dict[str, Callable[..., Any]]) -> None:
  """Says ready, then answers JSON requests on stdin until "quit" or end of input."""
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    if line.strip() == "quit":
      break
    request = json.loads(line)
    print(json.dumps(handlers[request.pop("call")](**request)), flush=True)


class Child:
  """A child process of `script`, pinned to the first `threads` cores, driven by `call`."""

  def __init__(self, script: str, args: list[str], threads: int):
    env = dict(os.environ)
    # Spinning OpenMP workers collapse on a shared machine; passive waiting is
    # PyTorch's best case there and costs it little otherwise.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = str(threads)
    cores = sorted(os.sched_getaffinity(0))[:threads]
    self.name = " ".join(args)
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    self._read()

  def _read(self) -> Any:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"child {self.name} died (exit {self.proc.wait()})")
    return json.loads(line)

  def call(self, handler: str, **kwargs) -> Any:
    self.proc.stdin.write(json.dumps({"call": handler, **kwargs}) + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    self.proc.stdin.write("quit\n")
    self.proc.stdin.close()
    self.proc.wait()


def machine() -> str:
  """The CPU model and core count, for the header of every benchmark's output."""
  model = "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model}, {len(os.sched_getaffinity(0))} cores available"
