"""TFDS builders, one per data set, named by `config.data.name`."""

from __future__ import annotations

import tensorflow_datasets as tfds

from instseg_jax.data.builders.circles import Circles, CirclesConfig

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "circles": Circles,
}


def get_builder(
    name: str,
    *,
    data_dir: str | None,
    config: str | tfds.core.BuilderConfig | None = None,
    manual_dir: str | None = None,
) -> tfds.core.DatasetBuilder:
  """Instantiates the builder registered under `name`.

  Args:
    name: a key of `BUILDERS`.
    data_dir: where the array_record files live; None = the TFDS default.
    config: a builder config name, a builder config object, or None for the
      builder's default.
    manual_dir: raw data for builders that cannot download; remembered on the
      builder as `manual_dir` and handed to TFDS when the data are prepared.

  Raises:
    ValueError: `name` is not a key of `BUILDERS`.
  """
  if name not in BUILDERS:
    raise ValueError(
        f"Unknown data set {name!r}; known: {sorted(BUILDERS)}."
    )
  builder = BUILDERS[name](
      data_dir=data_dir or None,
      config=config or None,
      file_format="array_record",
  )
  # TFDS takes the manual directory at prepare time, not at construction; keep
  # it with the builder so callers need not carry it separately.
  builder.manual_dir = manual_dir or None
  return builder


__all__ = ["BUILDERS", "Circles", "CirclesConfig", "get_builder"]
