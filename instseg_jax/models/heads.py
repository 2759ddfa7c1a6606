"""Output heads: every backbone ends in the same named outputs."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class InstanceHeads(nn.Module):
  """Embedding and semantic heads on a full-resolution feature map.

  Returns float32 outputs whatever the compute dtype, because the loss and
  the clustering need the precision.
  """
  embedding_dim: int
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> dict[str, jax.Array]:
    embedding = nn.Conv(self.embedding_dim, (1, 1), dtype=self.dtype,
                        name="embedding")(features)
    semantic = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype,
                       name="semantic")(features)
    return {
        "embedding": embedding.astype(jnp.float32),
        "semantic_logits": semantic.astype(jnp.float32),
    }
