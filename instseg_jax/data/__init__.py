"""Data: TFDS builders write array_record files; grain reads and augments."""

from instseg_jax.data.builders import BUILDERS, DataError, get_builder
from instseg_jax.data.pipeline import (
    eval_records,
    prepare,
    train_dataset,
    train_iterator,
)

__all__ = [
    "BUILDERS",
    "DataError",
    "eval_records",
    "get_builder",
    "prepare",
    "train_dataset",
    "train_iterator",
]
