"""Backbones by name; `create_model(config)` builds the configured one.

Every model maps images (B,H,W,C) to {"embedding": (B,H,W,D), "semantic_logits":
(B,H,W,K)} (float32), plus "count" (B,) in [0, 1] with config.model.counter and
"seed_logits" (B,H,W) with config.model.seed_head, and has a `stride` that H and W
must be divisible by.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from instseg_jax.models import layers
from instseg_jax.models import renet
from instseg_jax.models.deeplab import DeepLabV3
from instseg_jax.models.pretrained import load_pretrained
from instseg_jax.models.pretrained import merge_pretrained
from instseg_jax.models.pretrained import resnet_encoder_params
from instseg_jax.models.pretrained import vgg16_encoder_params
from instseg_jax.models.reseg import ReSeg
from instseg_jax.models.segnet import SegNet
from instseg_jax.models.unet import UNet
from instseg_jax.models.unet import UNetCBAM
from instseg_jax.registry import check_choice
from instseg_jax.registry import lookup

MODELS = {
    "unet": UNet,
    "unet_cbam": UNetCBAM,
    "reseg": ReSeg,
    "segnet": SegNet,
    "deeplabv3": DeepLabV3,
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# compiler_options for jax.jit of a train or predict step on the CPU backend. XLA's CPU
# backend hands convolutions to YNNPACK by default, whose convolutions (weight gradients
# above all) run slower than XLA's own: with these options a UNet train step at batch 8,
# 256x256 takes 1.5 s instead of 2.2 s on 2 cores (benchmarks/model_bench.py).
XLA_CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options() -> dict[str, str] | None:
  """compiler_options for jax.jit of model code on the default backend (None off CPU)."""
  return dict(XLA_CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


__all__ = [
    "DTYPES",
    "DeepLabV3",
    "MODELS",
    "ReSeg",
    "SegNet",
    "UNet",
    "UNetCBAM",
    "create_model",
    "XLA_CPU_COMPILER_OPTIONS",
    "compiler_options",
    "load_pretrained",
    "merge_pretrained",
    "resnet_encoder_params",
    "vgg16_encoder_params",
]


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model named by config.model.name, sized by config.model and config.data.

  Raises:
    ConfigError: a config.model field names no entry of its registry (MODELS, DTYPES,
      layers.NORMS, renet.GATES, layers.POSITION_ENCODINGS); the message lists the valid ones.
  """
  cfg = config.model
  model = lookup(MODELS, cfg.name, "config.model.name")
  dtype = lookup(DTYPES, cfg.dtype, "config.model.dtype")
  # The layers check these too, but only when the model is first run: here a wrong name fails
  # as the model is built, and names the config field.
  check_choice("config.model.norm", cfg.norm, layers.NORMS)
  check_choice("config.model.cell", cfg.cell, renet.GATES)
  check_choice("config.model.position_encoding", cfg.position_encoding, layers.POSITION_ENCODINGS)
  options = dict(
      features=tuple(cfg.features),
      embedding_dim=cfg.embedding_dim,
      num_classes=config.data.num_classes,
      dtype=dtype,
      norm=cfg.norm,
      coord_conv=cfg.coord_conv,
      position_encoding=cfg.position_encoding,
      pixels_per_unit=float(cfg.pixels_per_unit),
      context_features=cfg.context_features,
      cell=cfg.cell,
      remat=cfg.remat,
      counter=cfg.counter,
      seed_head=cfg.seed_head,
  )
  if cfg.name == "deeplabv3":
    options["blocks"] = tuple(cfg.resnet_blocks)
  return model(**options)
