"""Output heads: every backbone ends in the same named outputs."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instseg_jax.models import layers
from instseg_jax.models import renet

# The seed head's starting logit: sigmoid(-3) = 0.05.
SEED_BIAS_INIT = -3.0


class InstanceHeads(nn.Module):
  """Embedding and semantic heads on a full-resolution feature map.

  Returns float32 outputs whatever the compute dtype, because the loss and
  the clustering need the precision.

  Attributes:
    embedding_dim: D.
    num_classes: K.
    context_features: when > 0, a ReNet layer of this many units per direction
      sweeps the feature map and its per-pixel context vector is concatenated
      to the features the embedding head sees: the embedding of a pixel can
      then depend on the whole image, which convolutions alone reach only
      through depth.
    cell: "lstm" or "gru", for the context sweeps.
    remat: recompute the context sweeps in the backward pass.
    position_encoding: one of layers.POSITION_ENCODINGS, added to the embedding.
    pixels_per_unit: position_encoding "pixels": image pixels per embedding unit.
    seed: also return "seed_logits" (B, H, W), the logit of how near each pixel's embedding lies
      to its instance's centre (losses.seed_loss), from the features the embedding sees.
  """

  embedding_dim: int
  num_classes: int
  context_features: int = 0
  cell: str = "lstm"
  remat: bool = False
  position_encoding: str = "none"
  pixels_per_unit: float = layers.PIXELS_PER_UNIT
  seed: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> dict[str, jax.Array]:
    semantic = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="semantic")(features)
    if self.context_features:
      context = renet.ReNetLayer(
          self.context_features, self.cell, self.remat, dtype=self.dtype, name="context"
      )(features)
      features = jnp.concatenate([features, context.astype(features.dtype)], axis=-1)
    embedding = nn.Conv(self.embedding_dim, (1, 1), dtype=self.dtype, name="embedding")(
        features
    ).astype(jnp.float32)
    if self.position_encoding != "none":
      _, height, width, dim = embedding.shape
      embedding = embedding + layers.position_encoding(
          self.position_encoding, height, width, dim, self.pixels_per_unit
      )
    out = {"embedding": embedding, "semantic_logits": semantic.astype(jnp.float32)}
    if self.seed:
      # Most pixels are background (target 0): starting there, the head learns the centres
      # instead of spending its first thousand Adam steps walking the bias down.
      seed = nn.Conv(
          1,
          (1, 1),
          dtype=self.dtype,
          bias_init=nn.initializers.constant(SEED_BIAS_INIT),
          name="seed",
      )(features)
      out["seed_logits"] = seed[..., 0].astype(jnp.float32)
    return out


class CounterHead(nn.Module):
  """Predicted instance count / max_instances, in [0, 1], from the deepest features.

  Two ConvNormAct layers, global average pooling, one linear unit, sigmoid.
  """

  features: int
  norm: str = "group"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(2):
      x = layers.ConvNormAct(self.features, norm=self.norm, dtype=self.dtype)(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.sigmoid(nn.Dense(1, name="fraction")(x))[:, 0]
