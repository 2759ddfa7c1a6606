"""JAX's persistent compilation cache, so that a run compiles what an earlier run compiled once.

A train step takes tens of seconds to compile on CPU and the mean shift about a second per image
shape; with the cache, a later process (a resumed run, an evaluation, a prediction) loads the
compiled programs from disk instead.
"""

import os

import jax

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "instseg_jax", "xla")


def enable(directory: str | None = None, *, min_compile_seconds: float = 0.5) -> str:
  """Turns the cache on; returns its folder.

  Args:
    directory: where compiled programs are kept; default $JAX_COMPILATION_CACHE_DIR, else
      DEFAULT_DIR.
    min_compile_seconds: programs that compile faster than this are not worth a file.
  """
  directory = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_DIR
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  return directory
