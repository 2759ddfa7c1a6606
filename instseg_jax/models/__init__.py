"""Backbones by name; `create_model(config)` builds the configured one."""

import jax.numpy as jnp
import flax.linen as nn
import ml_collections

from instseg_jax.models.unet import UNet

MODELS = {"unet": UNet}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model named by config.model.name, sized by config.model and config.data."""
  name = config.model.name
  if name not in MODELS:
    raise ValueError(
        f"config.model.name={name!r} is not a model; choose one of {sorted(MODELS)}")
  if config.model.dtype not in DTYPES:
    raise ValueError(
        f"config.model.dtype={config.model.dtype!r}; choose one of {sorted(DTYPES)}")
  return MODELS[name](
      features=tuple(config.model.features),
      embedding_dim=config.model.embedding_dim,
      num_classes=config.data.num_classes,
      dtype=DTYPES[config.model.dtype],
  )
