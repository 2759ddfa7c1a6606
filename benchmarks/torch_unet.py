"""The peers' network: our UNet's layers in PyTorch, for the model and prediction benchmarks.

3x3 convolutions without bias, GroupNorm with the groups `layers.num_groups` picks (eps 1e-6),
ReLU, 2x2 max pooling, 2x2 stride-2 transposed convolutions, 1x1 embedding and semantic heads:
the same parameter count as `instseg_jax.models.UNet` of the same config (model_bench checks it).
"""

import torch
from torch import nn

from instseg_jax.models import layers


def _double_conv(cin: int, cout: int) -> nn.Sequential:
  mods = []
  for c in (cin, cout):
    mods += [
        nn.Conv2d(c, cout, 3, padding=1, bias=False),
        nn.GroupNorm(layers.num_groups(cout), cout, eps=1e-6),
        nn.ReLU(inplace=True),
    ]
  return nn.Sequential(*mods)


class TorchUNet(nn.Module):
  """(B, 3, H, W) -> (embedding (B, D, H, W), semantic logits (B, K, H, W))."""

  def __init__(self, features: tuple[int, ...], embedding_dim: int, num_classes: int):
    super().__init__()
    self.down = nn.ModuleList()
    channels = 3
    for width in features:
      self.down.append(_double_conv(channels, width))
      channels = width
    self.upsample, self.up = nn.ModuleList(), nn.ModuleList()
    for depth in reversed(range(len(features) - 1)):
      self.upsample.append(nn.ConvTranspose2d(channels, features[depth], 2, stride=2))
      self.up.append(_double_conv(2 * features[depth], features[depth]))
      channels = features[depth]
    self.embedding = nn.Conv2d(channels, embedding_dim, 1)
    self.semantic = nn.Conv2d(channels, num_classes, 1)
    self.stride = 2 ** (len(features) - 1)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    skips = []
    for depth, block in enumerate(self.down):
      x = block(x)
      if depth < len(self.down) - 1:
        skips.append(x)
        x = nn.functional.max_pool2d(x, 2)
    for upsample, block in zip(self.upsample, self.up):
      x = block(torch.cat([upsample(x), skips.pop()], dim=1))
    return self.embedding(x), self.semantic(x)


def from_config(config) -> TorchUNet:
  """The PyTorch UNet of a config's model block (config.model.name must be "unet")."""
  if config.model.name != "unet":
    raise ValueError(f"only the UNet has a PyTorch twin, not {config.model.name!r}")
  return TorchUNet(
      tuple(config.model.features), config.model.embedding_dim, config.data.num_classes
  )
