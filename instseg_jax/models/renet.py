"""Bidirectional recurrent sweeps over feature maps (ReNet, Visin et al. 2015).

A sweep runs one LSTM or GRU along every row of a map, forwards and backwards;
a ReNet layer sweeps the rows, then the columns of the result, so every output
pixel sees the whole image. The sequence loop is `nn.scan`; rows (and the batch)
share the cell's parameters, and the input-to-hidden products of all positions
are one matmul outside the scan, so the scan body holds only the recurrent
matmul. Both directions advance in the same scan step: half as many sequential
steps as sweeping one direction after the other.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.registry import check_choice

Carry = tuple[jax.Array, ...]

GATES = {"lstm": 4, "gru": 3}  # the cells (config.model.cell) and their gates per unit


def _recurrent(h: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """h (2,N,H) times the per-direction kernel (2,H,G*H) plus bias (2,G*H), in the kernel dtype."""
  out = jnp.einsum("dnh,dhg->dng", h.astype(kernel.dtype), kernel) + bias[:, None, :]
  return out.astype(jnp.float32)


def lstm_step(carry: Carry, x_gates: jax.Array, kernel: jax.Array, bias: jax.Array) -> Carry:
  """One LSTM step for both directions.

  Args:
    carry: (h, c), each (2, N, H) float32.
    x_gates: (2, N, 4H) input projections of this position, gates ordered i, f, g, o.
    kernel: (2, H, 4H) recurrent kernel per direction.
    bias: (2, 4H) recurrent bias.

  Returns:
    The new (h, c).
  """
  h, c = carry
  gates = x_gates.astype(jnp.float32) + _recurrent(h, kernel, bias)
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
  return nn.sigmoid(o) * jnp.tanh(c), c


def gru_step(carry: Carry, x_gates: jax.Array, kernel: jax.Array, bias: jax.Array) -> Carry:
  """One GRU step for both directions; carry is (h,), gates ordered r, z, n as in torch."""
  (h,) = carry
  xr, xz, xn = jnp.split(x_gates.astype(jnp.float32), 3, axis=-1)
  hr, hz, hn = jnp.split(_recurrent(h, kernel, bias), 3, axis=-1)
  r = nn.sigmoid(xr + hr)
  z = nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  return ((1.0 - z) * n + z * h,)


STEPS: dict[str, Callable[..., Carry]] = {"lstm": lstm_step, "gru": gru_step}


def initial_carry(cell: str, num_sequences: int, hidden: int) -> Carry:
  zeros = jnp.zeros((2, num_sequences, hidden), jnp.float32)
  return (zeros, zeros) if cell == "lstm" else (zeros,)


class _Step(nn.Module):
  """The scan body: one position of both directions."""

  cell: str
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry: Carry, x_gates: jax.Array) -> tuple[Carry, jax.Array]:
    width = GATES[self.cell] * self.hidden
    kernel = self.param("kernel", nn.initializers.orthogonal(), (2, self.hidden, width))
    bias = self.param("bias", nn.initializers.zeros, (2, width))
    carry = STEPS[self.cell](carry, x_gates, kernel.astype(self.dtype), bias.astype(self.dtype))
    return carry, carry[0].astype(self.dtype)


class BiSweep(nn.Module):
  """A bidirectional LSTM/GRU over the middle axis of (N, L, C): (N, L, 2 * hidden).

  Channels [:hidden] are the forward direction, [hidden:] the backward one.

  Attributes:
    hidden: state size per direction.
    cell: "lstm" or "gru".
    remat: recompute each step's gates in the backward pass instead of
      storing them; only the carries are kept.
    dtype: compute dtype of the matmuls; the recurrent state stays float32.
  """

  hidden: int
  cell: str = "lstm"
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_choice("cell", self.cell, GATES)
    num_seq, length, _ = x.shape
    width = GATES[self.cell] * self.hidden
    gates = nn.Dense(2 * width, dtype=self.dtype, name="input")(x)
    gates = gates.reshape(num_seq, length, 2, width)
    # Time-major, directions stacked; the backward direction reads the sequence reversed.
    gates = jnp.stack([gates[:, :, 0], gates[:, ::-1, 1]], axis=0).transpose(2, 0, 1, 3)
    step = nn.remat(_Step, prevent_cse=False) if self.remat else _Step
    scan = nn.scan(
        step,
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=0,
        out_axes=0,
        length=length,
    )
    _, hs = scan(self.cell, self.hidden, dtype=self.dtype, name="step")(
        initial_carry(self.cell, num_seq, self.hidden), gates
    )
    out = jnp.concatenate([hs[:, 0], hs[::-1, 1]], axis=-1)  # (L, N, 2H)
    return out.transpose(1, 0, 2)


class ReNetLayer(nn.Module):
  """A bidirectional sweep along the rows, then one along the columns of its output.

  Maps (B, H, W, C) to (B, H, W, 2 * hidden).
  """

  hidden: int
  cell: str = "lstm"
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    sweep = lambda name: BiSweep(self.hidden, self.cell, self.remat, self.dtype, name=name)
    # Rows (and the batch) become independent sequences of one shared cell.
    x = sweep("rows")(x.reshape(batch * height, width, channels))
    x = x.reshape(batch, height, width, -1).transpose(0, 2, 1, 3)
    x = sweep("columns")(x.reshape(batch * width, height, -1))
    return x.reshape(batch, width, height, -1).transpose(0, 2, 1, 3)
