"""export: checkpoint -> an evaluation bundle that needs neither the workdir nor the config file.

A bundle is a folder:

    config.json    the whole config (model, geometry, tuned post-processing, data)
    params/        the inference parameters (orbax)
    predict.jax    (optional) the serialized predict function (jax.export), batch size free,
                   at data.image_size, so the network runs without the model code: see
                   `load_serialized_predict`.
    manifest.json  every file the export wrote, so a later export knows the folder is its own.

The bundle is written into a fresh folder beside the target and moved into place at the end;
an existing folder is replaced only if it holds exactly what an earlier export wrote.
"""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from configs import default as default_config
from instseg_jax import evaluate
from instseg_jax import inference
from instseg_jax import models
from instseg_jax import tune
from instseg_jax import validate

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
SERIALIZED_FILE = "predict.jax"
MANIFEST_FILE = "manifest.json"
# Bundles shipped inside the package, named by --model=NAME.
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


def resolve_bundle(model: str) -> str:
  """The bundle folder --model names: a folder, or the packaged bundle PRETRAINED_DIR/NAME.

  Raises:
    FileNotFoundError: neither exists; the message lists the packaged names.
  """
  if os.path.isdir(model):
    return model
  packaged = os.path.join(PRETRAINED_DIR, model)
  if os.sep not in model and os.path.isdir(packaged):
    return packaged
  names = sorted(os.listdir(PRETRAINED_DIR)) if os.path.isdir(PRETRAINED_DIR) else []
  raise FileNotFoundError(
      f"--model={model} is neither a bundle folder nor a packaged model ("
      + (", ".join(names) if names else "none is packaged")
      + ")"
  )


def _files_under(folder: str) -> list[str]:
  return sorted(
      os.path.relpath(os.path.join(root, name), folder)
      for root, _, names in os.walk(folder)
      for name in names
  )


def check_replaceable(bundle_dir: str) -> None:
  """Raises ConfigError unless bundle_dir is absent, empty, or exactly an earlier bundle."""
  if not os.path.exists(bundle_dir):
    return
  if not os.path.isdir(bundle_dir):
    raise validate.ConfigError(f"--output={bundle_dir} is a file, not a folder for a bundle")
  present = _files_under(bundle_dir)
  if not present:
    return
  manifest = os.path.join(bundle_dir, MANIFEST_FILE)
  written = []
  if os.path.isfile(manifest):
    with open(manifest) as f:
      written = json.load(f)
  foreign = sorted(set(present) - set(written) - {MANIFEST_FILE})
  if not written or foreign:
    named = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise validate.ConfigError(
        f"--output={bundle_dir} holds files an export did not write ({named}); "
        "choose an empty or new folder"
    )


def bundle_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The config a bundle carries: tuned post-processing in, no pretrained-weights file needed."""
  config = tune.with_tuned(config, workdir, verbose=False)
  if config.model.pretrained:
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.pretrained = ""  # its weights are in the bundle's parameters
  return config


def export(
    config: ml_collections.ConfigDict, workdir: str, bundle_dir: str, *, serialize: bool = True
) -> str:
  """Writes the bundle of the checkpoint in use (`evaluate.checkpoint_in_use`) to bundle_dir."""
  bundle_dir = os.path.abspath(bundle_dir.rstrip("/"))
  check_replaceable(bundle_dir)
  params = jax.tree_util.tree_map(np.asarray, evaluate.load_params(config, workdir))
  config = bundle_config(config, workdir)
  staging = f"{bundle_dir}.tmp-{os.getpid()}"
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  try:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(staging, PARAMS_DIR), params)
    checkpointer.wait_until_finished()
    if serialize:
      _write(os.path.join(staging, SERIALIZED_FILE), _serialized_predict(config, params))
    _write(os.path.join(staging, CONFIG_FILE), config.to_json(indent=1).encode())
    _write(os.path.join(staging, MANIFEST_FILE), json.dumps(_files_under(staging)).encode())
    _move_into_place(staging, bundle_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return bundle_dir


def _serialized_predict(config: ml_collections.ConfigDict, params) -> bytes:
  model = models.create_model(config)
  predict = functools.partial(
      inference.network_outputs,
      apply_fn=model.apply,
      flip_average=bool(config.cluster.flip_average),
  )
  height, width = config.data.image_size
  (batch,) = jax.export.symbolic_shape("b")
  exported = jax.export.export(jax.jit(predict))(
      params, jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
  )
  return exported.serialize()


def _move_into_place(staging: str, bundle_dir: str) -> None:
  """Replaces bundle_dir by staging; the old bundle is removed only once the new one is there."""
  old = f"{bundle_dir}.old-{os.getpid()}"
  if os.path.exists(bundle_dir):
    os.replace(bundle_dir, old)
  os.replace(staging, bundle_dir)
  shutil.rmtree(old, ignore_errors=True)


def _write(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)


def load_bundle(bundle_dir: str) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, params) of a bundle written by `export`, or of a packaged one by name."""
  bundle_dir = os.path.abspath(resolve_bundle(bundle_dir))
  config_path = os.path.join(bundle_dir, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(
        f"{bundle_dir} is not a complete bundle: {CONFIG_FILE} is missing "
        "(write one with --mode=export)"
    )
  with open(config_path) as f:
    # Bundles of older versions lack newer fields: they take their defaults.
    config = default_config.with_defaults(json.load(f))
  # No target tree: the saved structure is the params tree, so no model code is needed.
  params = ocp.StandardCheckpointer().restore(os.path.join(bundle_dir, PARAMS_DIR))
  return config, params


def load_serialized_predict(bundle_dir: str):
  """The bundle's predict function, runnable without the model code: fn(images) -> outputs."""
  with open(os.path.join(bundle_dir, SERIALIZED_FILE), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  _, params = load_bundle(bundle_dir)
  return lambda images: exported.call(params, images)
