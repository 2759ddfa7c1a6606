"""SegNet (Badrinarayanan et al. 2017): a VGG-shaped encoder, decoded by max-unpooling."""

import flax.linen as nn
import jax

from instseg_jax.models import base
from instseg_jax.models import layers
from instseg_jax.models import vgg


class SegNet(base.SegmentationModel):
  """Encoder-decoder that upsamples with the encoder's pooling indices, without skips.

  Level l has `features[l]` channels and VGG-16's number of convolutions for
  that block (2, 2, 3, 3, 3); every level but the deepest ends in 2x2 max
  pooling whose argmax positions the mirrored decoder level unpools into, so
  boundaries come back sharp without concatenating encoder features.
  """

  @property
  def stride(self) -> int:
    return 2 ** (len(self.features) - 1)

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Maps images (B,H,W,C) to the output dict at (B,H,W)."""
    if len(self.features) > len(vgg.VGG16_CONVS):
      raise ValueError(
          f"SegNet has at most {len(vgg.VGG16_CONVS)} levels, got "
          f"features={tuple(self.features)}"
      )
    conv = lambda width, name: layers.ConvNormAct(
        width, norm=self.norm, dtype=self.dtype, name=name
    )
    x = self.prepare_input(images)
    indices = []
    for level, width in enumerate(self.features):
      for i in range(vgg.VGG16_CONVS[level]):
        x = conv(width, f"encode_{level}_{i}")(x)
      if level < len(self.features) - 1:
        x, where = layers.max_pool_2x2_with_indices(x)
        indices.append(where)
    deepest = x
    for level in reversed(range(len(self.features) - 1)):
      # The first convolution narrows to the width the pooling indices were taken at.
      x = conv(self.features[level], f"decode_{level}_0")(x)
      x = layers.unpool_2x2(x, indices[level])
      for i in range(1, vgg.VGG16_CONVS[level]):
        x = conv(self.features[level], f"decode_{level}_{i}")(x)
    return self.outputs(x, deepest)
