"""The convolutional blocks of VGG-16 (Simonyan and Zisserman 2015), loadable from torch."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.models import layers

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)


class VGGEncoder(nn.Module):
  """Blocks of 3x3 convolutions with bias and ReLU, as in VGG-16 (no normalisation).

  Block b has VGG16_CONVS[b] convolutions of widths[b] channels, named
  `block{b}_conv{c}`; VGG-16's own first three blocks are widths (64, 128, 256).
  Blocks are joined by 2x2 max pooling; pooling after the last is left to the caller.

  Returns:
    The output of every block, before its pooling, at 1, 1/2, 1/4, ... of the
    input resolution.
  """

  widths: Sequence[int] = VGG16_WIDTHS[:3]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    if len(self.widths) > len(VGG16_CONVS):
      raise ValueError(f"VGG-16 has {len(VGG16_CONVS)} blocks, asked for {len(self.widths)}")
    outputs = []
    for block, (width, convs) in enumerate(zip(self.widths, VGG16_CONVS)):
      if block:
        x = layers.max_pool_2x2(x)
      for conv in range(convs):
        x = nn.relu(
            nn.Conv(
                width,
                (3, 3),
                padding=((1, 1), (1, 1)),
                dtype=self.dtype,
                name=f"block{block}_conv{conv}",
            )(x)
        )
      outputs.append(x)
    return outputs
