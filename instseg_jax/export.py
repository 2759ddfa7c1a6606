"""export: checkpoint -> an evaluation bundle that needs neither the workdir nor the config file.

A bundle is a folder:

    config.json   the whole config (model, preprocessing, clustering, data)
    params/       the inference parameters (orbax)
    predict.jax   (optional) the serialized predict function (jax.export), batch size free,
                  so the network runs without the model code: see `load_serialized_predict`.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from instseg_jax import evaluate
from instseg_jax import models
from instseg_jax import train_step

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
SERIALIZED_FILE = "predict.jax"


def _predict_fn(config: ml_collections.ConfigDict):
  model = models.create_model(config)
  return functools.partial(train_step.predict_step, apply_fn=model.apply,
                           fg_threshold=config.cluster.fg_threshold)


def export(config: ml_collections.ConfigDict, workdir: str, bundle_dir: str, *,
           serialize: bool = True) -> str:
  """Writes the bundle of the latest checkpoint in workdir to bundle_dir; returns its path."""
  bundle_dir = os.path.abspath(bundle_dir)
  params = jax.tree_util.tree_map(np.asarray, evaluate.load_params(config, workdir))
  os.makedirs(bundle_dir, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(bundle_dir, PARAMS_DIR), params, force=True)
  checkpointer.wait_until_finished()
  if serialize:
    height, width = config.data.image_size
    batch, = jax.export.symbolic_shape("b")
    exported = jax.export.export(jax.jit(_predict_fn(config)))(
        params, jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32))
    _write_atomically(os.path.join(bundle_dir, SERIALIZED_FILE), exported.serialize())
  # Written last: a bundle without its config is visibly incomplete.
  _write_atomically(os.path.join(bundle_dir, CONFIG_FILE), config.to_json(indent=1).encode())
  return bundle_dir


def _write_atomically(path: str, data: bytes) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def load_bundle(bundle_dir: str) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, params) of a bundle written by `export`."""
  bundle_dir = os.path.abspath(bundle_dir)
  config_path = os.path.join(bundle_dir, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{bundle_dir} is not a complete bundle: {CONFIG_FILE} is missing "
                            "(write one with --mode=export)")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  # No target tree: the saved structure is the params tree, so no model code is needed.
  params = ocp.StandardCheckpointer().restore(os.path.join(bundle_dir, PARAMS_DIR))
  return config, params


def load_serialized_predict(bundle_dir: str):
  """The bundle's predict function, runnable without the model code: fn(images) -> outputs."""
  with open(os.path.join(bundle_dir, SERIALIZED_FILE), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  _, params = load_bundle(bundle_dir)
  return lambda images: exported.call(params, images)
