"""A ResNet-18/34 style encoder (He et al. 2016) with dilated late stages, loadable from torch."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.models import layers

RESNET18_BLOCKS = (2, 2, 2, 2)


def _conv(
    features: int, kernel: int, *, strides: int = 1, dilation: int = 1, dtype: Any, name: str
) -> nn.Conv:
  # Explicit symmetric padding, as torch pads: "SAME" would pad a strided
  # convolution asymmetrically and shift the features against torch's.
  pad = dilation * (kernel - 1) // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=strides,
      kernel_dilation=dilation,
      padding=((pad, pad), (pad, pad)),
      use_bias=False,
      dtype=dtype,
      name=name,
  )


class BasicBlock(nn.Module):
  """Two 3x3 convolutions and a residual; a 1x1 projection when the shape changes."""

  features: int
  strides: int = 1
  dilation: int = 1
  norm: str = "group"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    norm = lambda name: layers.norm_layer(self.norm, self.features, dtype=self.dtype, name=name)
    y = _conv(
        self.features,
        3,
        strides=self.strides,
        dilation=self.dilation,
        dtype=self.dtype,
        name="conv1",
    )(x)
    y = nn.relu(norm("norm1")(y))
    y = _conv(self.features, 3, dilation=self.dilation, dtype=self.dtype, name="conv2")(y)
    y = norm("norm2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = _conv(self.features, 1, strides=self.strides, dtype=self.dtype, name="downsample_conv")(x)
      x = norm("downsample_norm")(x)
    return nn.relu(y + x)


class ResNetEncoder(nn.Module):
  """Stem (7x7 stride-2 convolution, 3x3 stride-2 max pooling), then residual stages.

  Stage s has `widths[s]` channels and `blocks[s]` BasicBlocks, named
  `stage{s}_block{b}`. Stage 1 halves the resolution; later stages keep it and
  dilate instead (2, 4, ...), so the output stride is 8 as in DeepLabV3 and
  ResNet weights still fit. ResNet-18 is widths (64, 128, 256, 512), blocks
  (2, 2, 2, 2); ResNet-34 blocks (3, 4, 6, 3).

  Returns:
    The output of every stage.
  """

  widths: Sequence[int] = (64, 128, 256, 512)
  blocks: Sequence[int] = RESNET18_BLOCKS
  norm: str = "group"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    if len(self.blocks) < len(self.widths):
      raise ValueError(
          f"blocks={tuple(self.blocks)} gives no block count for every stage of "
          f"widths={tuple(self.widths)}"
      )
    x = _conv(self.widths[0], 7, strides=2, dtype=self.dtype, name="stem_conv")(x)
    x = nn.relu(layers.norm_layer(self.norm, self.widths[0], dtype=self.dtype, name="stem_norm")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    outputs = []
    for stage, (width, count) in enumerate(zip(self.widths, self.blocks)):
      dilation = 2 ** (stage - 1) if stage > 1 else 1
      for block in range(count):
        strides = 2 if stage == 1 and block == 0 else 1
        x = BasicBlock(
            width, strides, dilation, self.norm, self.dtype, name=f"stage{stage}_block{block}"
        )(x)
      outputs.append(x)
    return outputs
