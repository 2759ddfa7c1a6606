"""Building blocks shared by the backbones."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def num_groups(features: int, preferred: int = 8) -> int:
  """Largest group count <= preferred that divides `features`."""
  for groups in range(min(preferred, features), 0, -1):
    if features % groups == 0:
      return groups
  return 1


class ConvNormAct(nn.Module):
  """3x3 convolution, GroupNorm, ReLU.

  GroupNorm rather than BatchNorm: statistics per image keep the model a pure
  function of its parameters (no batch_stats to sync across devices or to
  carry in the train state), and small per-device batches do not hurt it.
  """
  features: int
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                use_bias=False, dtype=self.dtype)(x)
    x = nn.GroupNorm(num_groups=num_groups(self.features), dtype=self.dtype)(x)
    return nn.relu(x)


class DoubleConv(nn.Module):
  """Two ConvNormAct layers: the unit of every UNet stage."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ConvNormAct(self.features, dtype=self.dtype)(x)
    return ConvNormAct(self.features, dtype=self.dtype)(x)
