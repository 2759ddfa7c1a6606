"""DeepLabV3 (Chen et al. 2017): a dilated ResNet and atrous spatial pyramid pooling."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.models import base
from instseg_jax.models import layers
from instseg_jax.models import resnet


class ASPP(nn.Module):
  """Parallel 1x1, dilated 3x3 and image-pooling branches, concatenated and projected."""

  features: int
  rates: Sequence[int] = (12, 24, 36)
  norm: str = "group"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda kernel, dilation, name: layers.ConvNormAct(
        self.features,
        kernel_size=kernel,
        dilation=dilation,
        norm=self.norm,
        dtype=self.dtype,
        name=name,
    )
    branches = [conv(1, 1, "branch_1x1")(x)]
    branches += [conv(3, rate, f"branch_rate{rate}")(x) for rate in self.rates]
    pooled = conv(1, 1, "branch_pool")(jnp.mean(x, axis=(1, 2), keepdims=True))
    branches.append(jnp.broadcast_to(pooled, x.shape[:-1] + (self.features,)))
    return conv(1, 1, "project")(jnp.concatenate(branches, axis=-1))


class DeepLabV3(base.SegmentationModel):
  """ResNet encoder at output stride 8, ASPP, bilinear upsampling to the input size.

  `features` are the ResNet stage widths (the stem has features[0]); the ASPP
  has features[-1] channels. The rates are the paper's for output stride 8.

  Attributes:
    blocks: residual blocks per stage.
    rates: dilation rates of the ASPP's 3x3 branches.
  """

  blocks: Sequence[int] = resnet.RESNET18_BLOCKS
  rates: Sequence[int] = (12, 24, 36)

  @property
  def stride(self) -> int:
    return 8 if len(self.features) > 1 else 4

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Maps images (B,H,W,C) to the output dict at (B,H,W)."""
    batch, height, width, _ = images.shape
    stages = resnet.ResNetEncoder(
        tuple(self.features), tuple(self.blocks), norm=self.norm, dtype=self.dtype, name="encoder"
    )(self.prepare_input(images))
    deepest = stages[-1]
    x = ASPP(self.features[-1], tuple(self.rates), norm=self.norm, dtype=self.dtype, name="aspp")(
        deepest
    )
    x = layers.ConvNormAct(self.features[-1], norm=self.norm, dtype=self.dtype, name="head")(x)
    x = jax.image.resize(x, (batch, height, width, x.shape[-1]), method="bilinear")
    return self.outputs(x, deepest)
