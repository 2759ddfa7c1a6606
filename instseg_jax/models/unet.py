"""UNet backbone (Ronneberger et al. 2015) with GroupNorm, and its CBAM variant."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.models import base
from instseg_jax.models import layers


class UNet(base.SegmentationModel):
  """Encoder-decoder with skip connections.

  `features` are the channels per stage, shallow to deep; the input is
  downsampled len(features) - 1 times, so H and W must be divisible by
  2 ** (len(features) - 1).

  Attributes:
    attention: put CBAM after every stage (UNet-CBAM).
  """

  attention: bool = False

  @property
  def stride(self) -> int:
    return 2 ** (len(self.features) - 1)

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Maps images (B,H,W,C) to the output dict at (B,H,W)."""
    x = self.prepare_input(images)
    stage = lambda width, name: layers.DoubleConv(
        width, norm=self.norm, attention=self.attention, dtype=self.dtype, name=name
    )
    skips = []
    for depth, width in enumerate(self.features):
      x = stage(width, f"down_{depth}")(x)
      if depth < len(self.features) - 1:
        skips.append(x)
        x = layers.max_pool_2x2(x)
    deepest = x
    for depth in reversed(range(len(self.features) - 1)):
      x = layers.Upsample2x(self.features[depth], dtype=self.dtype, name=f"upsample_{depth}")(x)
      x = jnp.concatenate([x, skips[depth]], axis=-1)
      x = stage(self.features[depth], f"up_{depth}")(x)
    return self.outputs(x, deepest)


class UNetCBAM(UNet):
  """UNet with convolutional block attention after every stage."""

  attention: bool = True
