"""Building blocks shared by the backbones."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.registry import check_choice

NORMS = ("group", "affine")  # the choices of `norm_layer` (config.model.norm)


def num_groups(features: int, preferred: int = 8) -> int:
  """Largest group count <= preferred that divides `features`."""
  for groups in range(min(preferred, features), 0, -1):
    if features % groups == 0:
      return groups
  return 1


class Affine(nn.Module):
  """Per-channel scale and bias without statistics.

  This is what a BatchNorm of a pretrained network becomes once its running
  statistics are frozen and folded in, so torch ResNet weights load into it
  exactly; trained from scratch it is a plain learned affine.
  """

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return x * scale.astype(self.dtype) + bias.astype(self.dtype)


class GroupNorm(nn.Module):
  """GroupNorm (Wu and He 2018) over (H, W, channels of a group) of (B, H, W, C).

  Same parameters ("scale", "bias") and same result as nn.GroupNorm with
  epsilon 1e-6, computed another way: per-channel sums of x and x^2 in one
  pass, group statistics from those (B, C) sums, then one multiply-add with a
  per-(image, channel) scale and shift. nn.GroupNorm reduces over a
  (B, H, W, G, C/G) view in two passes and normalises in a third; on CPU this
  form costs half as much, forward and backward.
  """

  num_groups: int
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, channels = x.shape[0], x.shape[-1]
    groups = self.num_groups
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    x32 = x.astype(jnp.float32).reshape(batch, -1, channels)
    count = x32.shape[1] * (channels // groups)
    sums = jnp.sum(x32, axis=1).reshape(batch, groups, -1).sum(-1)
    squares = jnp.sum(jnp.square(x32), axis=1).reshape(batch, groups, -1).sum(-1)
    mean = sums / count
    # E[x^2] - E[x]^2 as nn.GroupNorm's fast variance; clipped where rounding makes it negative.
    var = jnp.maximum(squares / count - jnp.square(mean), 0.0)
    inv = jax.lax.rsqrt(var + self.epsilon)
    per_channel = lambda v: jnp.repeat(v, channels // groups, axis=1)
    mul = per_channel(inv) * scale
    add = bias - per_channel(mean) * mul
    shape = (batch,) + (1,) * (x.ndim - 2) + (channels,)
    return (
        x * mul.reshape(shape).astype(self.dtype) + add.reshape(shape).astype(self.dtype)
    ).astype(self.dtype)


def norm_layer(norm: str, features: int, *, dtype: Any, name: str | None = None) -> nn.Module:
  """The normalisation named by `norm` (one of NORMS) for `features` channels."""
  check_choice("norm", norm, NORMS)
  if norm == "group":
    return GroupNorm(num_groups(features), dtype=dtype, name=name)
  return Affine(dtype=dtype, name=name)


class ConvNormAct(nn.Module):
  """3x3 convolution, GroupNorm, ReLU.

  GroupNorm rather than BatchNorm: statistics per image keep the model a pure
  function of its parameters (no batch_stats to sync across devices or to
  carry in the train state), and small per-device batches do not hurt it.
  """

  features: int
  kernel_size: int = 3
  dilation: int = 1
  norm: str = "group"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(
        self.features,
        (self.kernel_size, self.kernel_size),
        kernel_dilation=self.dilation,
        use_bias=False,
        dtype=self.dtype,
    )(x)
    x = norm_layer(self.norm, self.features, dtype=self.dtype)(x)
    return nn.relu(x)


class CBAM(nn.Module):
  """Convolutional block attention (Woo et al. 2018): channel, then spatial gating.

  Attributes:
    reduction: the channel MLP's bottleneck is features // reduction wide.
    kernel_size: of the convolution over the pooled [mean, max] channel maps.
  """

  reduction: int = 16
  kernel_size: int = 7
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    hidden = nn.Dense(max(channels // self.reduction, 1), dtype=self.dtype, name="mlp_in")
    out = nn.Dense(channels, dtype=self.dtype, name="mlp_out")
    mlp = lambda v: out(nn.relu(hidden(v)))
    pooled_avg = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled_max = jnp.max(x, axis=(1, 2), keepdims=True)
    x = x * nn.sigmoid(mlp(pooled_avg) + mlp(pooled_max))
    maps = jnp.concatenate(
        [jnp.mean(x, axis=-1, keepdims=True), jnp.max(x, axis=-1, keepdims=True)], axis=-1
    )
    gate = nn.Conv(1, (self.kernel_size, self.kernel_size), dtype=self.dtype, name="spatial")(maps)
    return x * nn.sigmoid(gate)


class DoubleConv(nn.Module):
  """Two ConvNormAct layers, optionally followed by CBAM: the unit of every UNet stage."""

  features: int
  norm: str = "group"
  attention: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ConvNormAct(self.features, norm=self.norm, dtype=self.dtype)(x)
    x = ConvNormAct(self.features, norm=self.norm, dtype=self.dtype)(x)
    if self.attention:
      x = CBAM(dtype=self.dtype, name="cbam")(x)
    return x


class Upsample2x(nn.Module):
  """A 2x2, stride-2 transposed convolution, written as one matmul and a pixel shuffle.

  Same parameters and same result as nn.ConvTranspose(features, (2, 2),
  strides=(2, 2)), whose kernel it reads flipped as that layer does. XLA's CPU
  backend lowers the transposed convolution to a convolution over a
  zero-dilated input, which does four times the work; with nn.max_pool's
  gradient it made a UNet train step 25-45% slower (benchmarks/model_bench.py).
  """

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, channels, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    kernel = kernel[::-1, ::-1].astype(self.dtype)
    y = jnp.einsum("bhwc,ijco->bhiwjo", x.astype(self.dtype), kernel)
    return y.reshape(batch, 2 * height, 2 * width, self.features) + bias.astype(self.dtype)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, on (B,H,W,C) with H and W even.

  A reshape and a max rather than nn.max_pool: the gradient is then
  elementwise instead of XLA's select-and-scatter, several times faster on CPU.
  """
  batch, height, width, channels = x.shape
  return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def max_pool_2x2_with_indices(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """2x2 max pooling that also returns where each maximum was (0..3 in its window).

  Returns:
    pooled (B,H/2,W/2,C) and int32 indices of the same shape, for `unpool_2x2`.
  """
  batch, height, width, channels = x.shape
  windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(batch, height // 2, width // 2, channels, 4)
  indices = jnp.argmax(windows, axis=-1).astype(jnp.int32)
  return jnp.max(windows, axis=-1), indices


def unpool_2x2(x: jax.Array, indices: jax.Array) -> jax.Array:
  """Puts each value of x (B,h,w,C) where `max_pool_2x2_with_indices` found it, zeros elsewhere."""
  batch, height, width, channels = x.shape
  placed = jax.nn.one_hot(indices, 4, dtype=x.dtype) * x[..., None]
  placed = placed.reshape(batch, height, width, channels, 2, 2).transpose(0, 1, 4, 2, 5, 3)
  return placed.reshape(batch, 2 * height, 2 * width, channels)


def coordinate_channels(batch: int, height: int, width: int, dtype: Any = jnp.float32) -> jax.Array:
  """CoordConv channels (Liu et al. 2018): y, x in [-1, 1] and the radius r in [0, 1].

  Returns:
    (batch, height, width, 3).
  """
  y = jnp.linspace(-1.0, 1.0, height, dtype=jnp.float32)
  x = jnp.linspace(-1.0, 1.0, width, dtype=jnp.float32)
  yy, xx = jnp.meshgrid(y, x, indexing="ij")
  r = jnp.sqrt(yy**2 + xx**2) / jnp.sqrt(2.0)
  coords = jnp.stack([yy, xx, r], axis=-1).astype(dtype)
  return jnp.broadcast_to(coords, (batch, height, width, 3))


POSITION_ENCODINGS = ("none", "xy", "pixels", "sine")  # the kinds of `position_encoding`
# "pixels": pixels per embedding unit, unless config.model.pixels_per_unit says otherwise.
# configs/dsb2018.py uses 8, about a nucleus's radius: at 32 touching nuclei started too close
# in embedding space and merged.
PIXELS_PER_UNIT = 32.0


def position_encoding(
    kind: str, height: int, width: int, dim: int, pixels_per_unit: float = PIXELS_PER_UNIT
) -> jax.Array:
  """A fixed (H, W, dim) float32 map to add to the embeddings.

  "xy" puts y and x in [-1, 1] on the first two channels (the semi-convolutional
  embedding of Novotny et al. 2018: instances far apart in the image start far
  apart in embedding space). "sine" is the 2D sinusoidal encoding: the first
  dim - dim // 2 channels encode y, the rest x, as cosines then sines at
  wavelengths from twice the image size (so that one channel alone already
  orders the pixels) down to 4 pixels. "pixels" is "xy" in units of `pixels_per_unit` pixels from
  the top-left corner: unlike "xy" it does not depend on the image size, so a model trained on
  crops at the images' own scale ("native") sees the same encoding on a whole image. "none" is
  zeros.
  """
  check_choice("position_encoding", kind, POSITION_ENCODINGS)
  if kind == "none":
    return jnp.zeros((height, width, dim), jnp.float32)
  if kind in ("xy", "pixels"):
    if kind == "xy":
      coords = coordinate_channels(1, height, width)[0, ..., :2]
    else:
      yy, xx = jnp.meshgrid(
          jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
      )
      coords = jnp.stack([yy, xx], axis=-1) / pixels_per_unit
    return jnp.pad(coords[..., :dim], ((0, 0), (0, 0), (0, max(dim - 2, 0))))
  maps = []
  for size, axis_len, axis in ((dim - dim // 2, height, 0), (dim // 2, width, 1)):  # "sine"
    if size == 0:
      continue
    num_freqs = (size + 1) // 2
    longest = 2.0 * max(axis_len, 2)
    wavelengths = longest * (4.0 / longest) ** (jnp.arange(num_freqs) / max(num_freqs - 1, 1))
    angles = 2 * jnp.pi * jnp.arange(axis_len, dtype=jnp.float32)[:, None] / wavelengths
    enc = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)[:, :size]
    enc = enc[:, None, :] if axis == 0 else enc[None, :, :]
    maps.append(jnp.broadcast_to(enc, (height, width, size)))
  return jnp.concatenate(maps, axis=-1)
