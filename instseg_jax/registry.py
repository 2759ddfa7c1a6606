"""The one check of a named choice (a model, optimizer, clustering method, ...).

Each choice lives in a registry of the module that owns it (models.MODELS, optim.OPTIMIZERS,
cluster.METHODS, ...), and code takes entries out of it with `lookup` or `check_choice`, so a
wrong name fails the same way wherever it is used, naming the valid ones. Without dependencies,
so that every module can use it.
"""

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
  """A config field holds a value the run cannot use."""


def check_choice(field: str, value: Any, choices: Collection[str]) -> None:
  """Raises ConfigError naming `field` and the valid names unless `value` is one of `choices`.

  field: how the caller names the value: "config.optim.name" on the config path, the
    argument's name for direct callers of a library function.
  """
  try:
    known = value in choices
  except TypeError:  # an unhashable value (a list from the command line) is no name
    known = False
  if not known:
    raise ConfigError(f"{field}={value!r} is not one of {sorted(choices)}")


def lookup(registry: Mapping[str, T], name: str, field: str) -> T:
  """registry[name], or a ConfigError naming `field` and the registry's names."""
  check_choice(field, name, registry)
  return registry[name]
