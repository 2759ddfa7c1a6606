"""ReSeg (Visin et al. 2016): VGG-16 blocks, ReNet layers, a transposed-convolution decoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.models import base
from instseg_jax.models import layers
from instseg_jax.models import renet
from instseg_jax.models import vgg


class ReSeg(base.SegmentationModel):
  """VGG encoder, two ReNet layers on its pooled output, decoder with skip connections.

  `features[:-1]` are the widths of the VGG blocks (VGG-16's first three:
  (64, 128, 256), which pretrained weights need) and `features[-1]` is the
  number of recurrent units per direction of each ReNet layer. The decoder
  climbs back one level at a time: a 2x2 transposed convolution, the encoder
  block of that level concatenated, a ConvNormAct.
  """

  num_renet_layers: int = 2

  @property
  def stride(self) -> int:
    return 2 ** (len(self.features) - 1)

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Maps images (B,H,W,C) to the output dict at (B,H,W)."""
    if len(self.features) < 2:
      raise ValueError(
          f"ReSeg needs at least one VGG block and the ReNet width, got "
          f"features={tuple(self.features)}"
      )
    widths = tuple(self.features[:-1])
    skips = vgg.VGGEncoder(widths, dtype=self.dtype, name="encoder")(self.prepare_input(images))
    x = layers.max_pool_2x2(skips[-1])
    for i in range(self.num_renet_layers):
      x = renet.ReNetLayer(
          self.features[-1], self.cell, self.remat, dtype=self.dtype, name=f"renet_{i}"
      )(x)
    deepest = x
    for depth in reversed(range(len(widths))):
      x = nn.relu(layers.Upsample2x(widths[depth], dtype=self.dtype, name=f"upsample_{depth}")(x))
      x = jnp.concatenate([x, skips[depth]], axis=-1)
      x = layers.ConvNormAct(widths[depth], norm=self.norm, dtype=self.dtype, name=f"up_{depth}")(x)
    return self.outputs(x, deepest)
