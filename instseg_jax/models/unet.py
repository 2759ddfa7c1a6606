"""UNet backbone (Ronneberger et al. 2015) with GroupNorm."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.models import heads
from instseg_jax.models import layers


class UNet(nn.Module):
  """Encoder-decoder with skip connections.

  Attributes:
    features: channels per stage, shallow to deep; the input is downsampled
      len(features) - 1 times, so H and W must be divisible by
      2 ** (len(features) - 1).
    embedding_dim: D, the size of each pixel's embedding.
    num_classes: K, semantic classes including background.
    dtype: compute dtype; parameters stay float32.
  """
  features: Sequence[int] = (16, 32, 64, 128)
  embedding_dim: int = 8
  num_classes: int = 2
  dtype: Any = jnp.float32

  @property
  def stride(self) -> int:
    return 2 ** (len(self.features) - 1)

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Maps images (B,H,W,C) to {"embedding": (B,H,W,D), "semantic_logits": (B,H,W,K)}."""
    x = images.astype(self.dtype)
    skips = []
    for depth, width in enumerate(self.features):
      x = layers.DoubleConv(width, dtype=self.dtype, name=f"down_{depth}")(x)
      if depth < len(self.features) - 1:
        skips.append(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    for depth in reversed(range(len(self.features) - 1)):
      width = self.features[depth]
      x = nn.ConvTranspose(width, (2, 2), strides=(2, 2), dtype=self.dtype,
                           name=f"upsample_{depth}")(x)
      x = jnp.concatenate([x, skips[depth]], axis=-1)
      x = layers.DoubleConv(width, dtype=self.dtype, name=f"up_{depth}")(x)
    return heads.InstanceHeads(self.embedding_dim, self.num_classes,
                               dtype=self.dtype, name="heads")(x)
