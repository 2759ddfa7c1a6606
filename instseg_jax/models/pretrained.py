"""ImageNet-pretrained encoder weights from a local PyTorch state_dict.

Nothing is downloaded: the user saves the state_dict once, e.g.
`torch.save(torchvision.models.vgg16(weights="DEFAULT").state_dict(), "vgg16.pth")`,
and sets config.model.pretrained to the path. torch is imported only here, only
when a file is read, and the file is read with `weights_only=True`, so it
cannot run code.

VGG-16 (`features.N.weight/bias`) loads into ReSeg's encoder; ResNet-18/34
(`conv1`, `bn1`, `layerS.B.*`) loads into DeepLabV3's encoder, whose norm must
be "affine": BatchNorm's running statistics are folded into a per-channel
scale and bias, the usual frozen BatchNorm of fine-tuning with small batches.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from instseg_jax.models import vgg

Params = Mapping[str, Any]


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torch state_dict file as name -> float32 NumPy array.

  Raises:
    ImportError: torch is not installed.
    ValueError: the file is not a plain state_dict of tensors.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "reading pretrained weights needs torch (pip install torch); "
        f"it is only used to read {path}"
    ) from e
  if not os.path.isfile(path):
    raise ValueError(f"no such file: {path}")
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... by content
    raise ValueError(
        f"{path} is not a plain state_dict readable with " f"torch.load(weights_only=True): {e}"
    ) from e
  if not isinstance(loaded, Mapping):
    raise ValueError(
        f"{path} holds a {type(loaded).__name__}, not a state_dict "
        "(a mapping of parameter names to tensors); save model.state_dict()"
    )
  state = {}
  for name, value in loaded.items():
    if not isinstance(name, str) or not isinstance(value, torch.Tensor):
      raise ValueError(
          f"{path} is not a plain state_dict: entry {name!r} is a "
          f"{type(value).__name__}, not a tensor"
      )
    state[name] = value.detach().to(torch.float32).numpy()
  return state


def _take(state: Mapping[str, np.ndarray], key: str) -> np.ndarray:
  if key not in state:
    raise ValueError(f"the state_dict has no {key!r} (it has e.g. {sorted(state)[:4]})")
  return state[key]


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
  """torch OIHW -> flax HWIO."""
  return np.transpose(weight, (2, 3, 1, 0))


def vgg16_encoder_params(
    state: Mapping[str, np.ndarray], *, num_blocks: int = 3
) -> dict[str, dict[str, np.ndarray]]:
  """Maps a torchvision VGG-16 state_dict onto `vgg.VGGEncoder` parameters.

  Args:
    state: `features.N.weight` / `features.N.bias` tensors, as in
      torchvision's vgg16().state_dict(); a bare `N.weight` (the state_dict of
      the `features` Sequential alone) is accepted too. Other keys are ignored.
    num_blocks: how many leading blocks the encoder has.

  Returns:
    {"block{b}_conv{c}": {"kernel": (3,3,I,O), "bias": (O,)}}.
  """
  if not any(k.startswith("features.") for k in state):
    state = {f"features.{k}": v for k, v in state.items()}
  params = {}
  index = 0  # torchvision numbers every layer: conv, ReLU, ..., MaxPool
  for block, convs in enumerate(vgg.VGG16_CONVS[:num_blocks]):
    for conv in range(convs):
      params[f"block{block}_conv{conv}"] = {
          "kernel": _conv_kernel(_take(state, f"features.{index}.weight")),
          "bias": _take(state, f"features.{index}.bias"),
      }
      index += 2
    index += 1
  return params


def _frozen_batchnorm(
    state: Mapping[str, np.ndarray], prefix: str, eps: float
) -> dict[str, np.ndarray]:
  scale = _take(state, f"{prefix}.weight") / np.sqrt(_take(state, f"{prefix}.running_var") + eps)
  bias = _take(state, f"{prefix}.bias") - _take(state, f"{prefix}.running_mean") * scale
  return {"scale": scale.astype(np.float32), "bias": bias.astype(np.float32)}


def resnet_encoder_params(
    state: Mapping[str, np.ndarray], *, blocks: Sequence[int], eps: float = 1e-5
) -> dict[str, Any]:
  """Maps a torchvision ResNet-18/34 state_dict onto `resnet.ResNetEncoder` (norm "affine").

  Args:
    state: torchvision names (`conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`, ...).
    blocks: blocks per stage of the Flax encoder; stage s reads `layer{s+1}`.
    eps: the BatchNorm epsilon (torch's default).
  """
  params: dict[str, Any] = {
      "stem_conv": {"kernel": _conv_kernel(_take(state, "conv1.weight"))},
      "stem_norm": _frozen_batchnorm(state, "bn1", eps),
  }
  for stage, count in enumerate(blocks):
    for block in range(count):
      prefix = f"layer{stage + 1}.{block}"
      entry = {
          "conv1": {"kernel": _conv_kernel(_take(state, f"{prefix}.conv1.weight"))},
          "norm1": _frozen_batchnorm(state, f"{prefix}.bn1", eps),
          "conv2": {"kernel": _conv_kernel(_take(state, f"{prefix}.conv2.weight"))},
          "norm2": _frozen_batchnorm(state, f"{prefix}.bn2", eps),
      }
      if f"{prefix}.downsample.0.weight" in state:
        entry["downsample_conv"] = {"kernel": _conv_kernel(state[f"{prefix}.downsample.0.weight"])}
        entry["downsample_norm"] = _frozen_batchnorm(state, f"{prefix}.downsample.1", eps)
      params[f"stage{stage}_block{block}"] = entry
  return params


def merge_pretrained(
    params: Params, pretrained: Params, *, at: Sequence[str] = ("encoder",)
) -> dict[str, Any]:
  """A copy of `params` with the subtree at `at` overwritten by `pretrained`.

  Every leaf of `pretrained` must exist in `params` with the same shape; leaves
  of `params` that `pretrained` lacks keep their values.

  Raises:
    ValueError: naming the first pretrained leaf that is missing or whose shape differs.
  """

  def merge(target, source, path):
    if not isinstance(target, Mapping):
      raise ValueError(
          f"pretrained weights do not fit: {'/'.join(path)} is a leaf of " "the model, not a module"
      )
    merged = dict(target)
    for key, value in source.items():
      where = path + (key,)
      if key not in target:
        raise ValueError(
            f"pretrained weights do not fit: the model has no "
            f"{'/'.join(where)} (it has {sorted(target)})"
        )
      if isinstance(value, Mapping):
        merged[key] = merge(target[key], value, where)
        continue
      old = target[key]
      if isinstance(old, Mapping) or tuple(old.shape) != tuple(np.shape(value)):
        got = "a module" if isinstance(old, Mapping) else f"shape {tuple(old.shape)}"
        raise ValueError(
            f"pretrained weights do not fit: {'/'.join(where)} has {got} in "
            f"the model but {tuple(np.shape(value))} in the file"
        )
      merged[key] = jnp.asarray(value, dtype=old.dtype)
    return merged

  subtree = params
  for i, key in enumerate(at):
    if not isinstance(subtree, Mapping) or key not in subtree:
      raise ValueError(
          f"pretrained weights do not fit: the model has no " f"{'/'.join(at[:i + 1])}"
      )
    subtree = subtree[key]
  merged_subtree = merge(subtree, pretrained, tuple(at))

  def put(tree, keys):
    if not keys:
      return merged_subtree
    return {**tree, keys[0]: put(tree[keys[0]], keys[1:])}

  return put(dict(params), tuple(at))


def _encoder_params(config: ml_collections.ConfigDict, path: str) -> Params:
  name = config.model.name
  # The model is checked before the file is read: a wrong model is the likelier mistake.
  if name not in ("reseg", "deeplabv3"):
    raise ValueError(
        f"config.model.pretrained is set but model {name!r} has no pretrained "
        "encoder; reseg (VGG-16) and deeplabv3 (ResNet-18/34) have"
    )
  if name == "deeplabv3" and config.model.norm != "affine":
    raise ValueError(
        "ResNet weights carry BatchNorm statistics that only fold into "
        f"config.model.norm='affine', not {config.model.norm!r}"
    )
  state = load_state_dict(path)
  if name == "reseg":
    return vgg16_encoder_params(state, num_blocks=len(config.model.features) - 1)
  return resnet_encoder_params(
      state, blocks=tuple(config.model.resnet_blocks)[: len(config.model.features)]
  )


def load_pretrained(params: Params, config: ml_collections.ConfigDict) -> Params:
  """`params` with the encoder from config.model.pretrained; unchanged when that is ""."""
  path = config.model.pretrained
  if not path:
    return params
  return merge_pretrained(params, _encoder_params(config, path))
