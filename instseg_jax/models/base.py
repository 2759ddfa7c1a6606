"""What every backbone shares: its options, its input and its named outputs."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.models import heads
from instseg_jax.models import layers


class SegmentationModel(nn.Module):
  """Options common to all backbones; subclasses define `stride` and `__call__`.

  Attributes:
    features: channels per resolution level, shallow to deep; each backbone
      reads them as its stage widths (see the subclass).
    embedding_dim: D, the size of each pixel's embedding.
    num_classes: K, semantic classes including background.
    dtype: compute dtype; parameters and outputs stay float32.
    norm: "group" (GroupNorm) or "affine" (per-channel scale and bias; what
      a pretrained BatchNorm becomes when frozen).
    coord_conv: append (y, x, r) coordinate channels to the input image.
    position_encoding: a key of layers.POSITION_ENCODINGS, added to the embedding.
    pixels_per_unit: position_encoding "pixels": image pixels per embedding unit.
    context_features: units per direction of the context ReNet layer before
      the embedding head; 0 = no context module.
    cell: "lstm" or "gru", for every recurrent sweep of the model.
    remat: recompute recurrent sweeps in the backward pass to save memory.
    counter: also predict "count" (B,), the instance count / max_instances.
    seed_head: also predict "seed_logits" (B, H, W), for cluster method "seeds".
  """

  features: Sequence[int] = (16, 32, 64, 128)
  embedding_dim: int = 8
  num_classes: int = 2
  dtype: Any = jnp.float32
  norm: str = "group"
  coord_conv: bool = False
  position_encoding: str = "none"
  pixels_per_unit: float = layers.PIXELS_PER_UNIT
  context_features: int = 0
  cell: str = "lstm"
  remat: bool = False
  counter: bool = False
  seed_head: bool = False

  def prepare_input(self, images: jax.Array) -> jax.Array:
    if self.coord_conv:
      batch, height, width, _ = images.shape
      images = jnp.concatenate(
          [images.astype(jnp.float32), layers.coordinate_channels(batch, height, width)], axis=-1
      )
    return images.astype(self.dtype)

  def outputs(self, features: jax.Array, deepest: jax.Array) -> dict[str, jax.Array]:
    """The output dict from full-resolution features and the deepest (coarsest) ones."""
    out = heads.InstanceHeads(
        self.embedding_dim,
        self.num_classes,
        context_features=self.context_features,
        cell=self.cell,
        remat=self.remat,
        position_encoding=self.position_encoding,
        pixels_per_unit=self.pixels_per_unit,
        seed=self.seed_head,
        dtype=self.dtype,
        name="heads",
    )(features)
    if self.counter:
      out["count"] = heads.CounterHead(
          self.features[-1], norm=self.norm, dtype=self.dtype, name="counter"
      )(deepest)
    return out
