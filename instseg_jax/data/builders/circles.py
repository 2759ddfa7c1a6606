"""Synthetic discs: a data set that builds in seconds and needs no download.

Bright discs, each with its own grey level and a little radial shading, on a
dark background with Gaussian noise. Discs may touch or overlap; a later disc
occludes earlier ones, so instance boundaries between equally shaped objects
must be told apart by the embedding rather than by the semantic map, which is
exactly what the discriminative loss is for.

Every example is a pure function of (seed, split, index), so the files are
identical however many times, or in whatever order, they are built.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

# Offsets in the seed sequence that keep the train and test streams disjoint.
_SPLIT_STREAMS = {"train": 0, "test": 1}


@dataclasses.dataclass(eq=False)
class CirclesConfig(tfds.core.BuilderConfig):
  """Options of the synthetic disc generator.

  Attributes:
    image_size: (H, W) of every image.
    num_train: number of training images.
    num_test: number of test images.
    min_discs: fewest discs drawn per image (some may be dropped, see
      `min_pixels`).
    max_discs: most discs drawn per image.
    min_radius: smallest disc radius in pixels.
    max_radius: largest disc radius in pixels.
    noise_std: standard deviation of the additive Gaussian noise, on a [0, 1]
      intensity scale.
    max_overlap: how far two discs may interpenetrate, as a fraction of the sum
      of their radii (0 = at most touching, 1 = concentric allowed).
    min_pixels: an instance left with fewer visible pixels after occlusion is
      removed from the labels and the picture.
    seed: root seed of the generator.
  """

  image_size: tuple[int, int] = (96, 96)
  num_train: int = 2000
  num_test: int = 200
  min_discs: int = 3
  max_discs: int = 9
  min_radius: float = 5.0
  max_radius: float = 13.0
  noise_std: float = 0.06
  max_overlap: float = 0.3
  min_pixels: int = 8
  seed: int = 0


def render_example(config: CirclesConfig, *, split: str, index: int) -> dict[str, np.ndarray]:
  """Draws one example; a pure function of (config.seed, split, index).

  Returns:
    A dict with "image" (H, W, 3) uint8, "instances" (H, W) uint16 with ids
    1..N in painting order, and "semantic" (H, W) uint8 (1 = disc).
  """
  rng = np.random.default_rng([config.seed, _SPLIT_STREAMS[split], index])
  height, width = config.image_size
  discs = _place_discs(config, rng)

  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
  owner = np.zeros((height, width), np.int32)
  for i, (cy, cx, r, _) in enumerate(discs, start=1):
    owner[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i

  # Drop slivers left by occlusion; the picture is painted from the final
  # label map so that a dropped disc also vanishes from the image.
  counts = np.bincount(owner.ravel(), minlength=len(discs) + 1)
  keep = np.flatnonzero(counts[1:] >= config.min_pixels) + 1
  new_ids = np.zeros(len(discs) + 1, np.int32)
  new_ids[keep] = np.arange(1, len(keep) + 1)
  instances = new_ids[owner]

  background = rng.uniform(0.05, 0.2)
  intensity = np.full((height, width), background, np.float32)
  for old_id in keep:
    cy, cx, r, grey = discs[old_id - 1]
    mask = owner == old_id
    d2 = ((yy[mask] - cy) ** 2 + (xx[mask] - cx) ** 2) / (r * r)
    # Slight shading toward the rim gives the net a cue besides flat grey.
    intensity[mask] = grey * (1.0 - 0.15 * d2)
  image = intensity[..., None] + rng.normal(0.0, config.noise_std, (height, width, 3)).astype(
      np.float32
  )
  image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  return {
      "image": image,
      "instances": instances.astype(np.uint16),
      "semantic": (instances > 0).astype(np.uint8),
  }


def _place_discs(
    config: CirclesConfig, rng: np.random.Generator
) -> list[tuple[float, float, float, float]]:
  """Rejection-samples disc centres so that overlaps stay within bounds."""
  height, width = config.image_size
  target = int(rng.integers(config.min_discs, config.max_discs + 1))
  discs = []
  for _ in range(target * 20):
    if len(discs) == target:
      break
    r = rng.uniform(config.min_radius, config.max_radius)
    # Centres stay inside the image so a disc is never mostly cut off.
    cy = rng.uniform(min(r, height / 2), max(height - r, height / 2))
    cx = rng.uniform(min(r, width / 2), max(width - r, width / 2))
    if all(
        np.hypot(cy - oy, cx - ox) >= (r + orad) * (1.0 - config.max_overlap)
        for oy, ox, orad, _ in discs
    ):
      discs.append((cy, cx, r, rng.uniform(0.55, 0.95)))
  return discs


class Circles(tfds.core.GeneratorBasedBuilder):
  """Synthetic touching and overlapping discs for instance segmentation."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # Class 0 is background; the pipeline checks config.data.num_classes against it.
  CLASS_NAMES = ("background", "disc")
  BUILDER_CONFIGS = [
      CirclesConfig(
          name="default",
          description="96x96, 2000 train / 200 test, 3-9 discs: CPU demo.",
      ),
      CirclesConfig(
          name="tiny",
          description="32x32, 32 train / 16 test, 1-4 discs: unit tests.",
          image_size=(32, 32),
          num_train=32,
          num_test=16,
          min_discs=1,
          max_discs=4,
          min_radius=3.0,
          max_radius=7.0,
      ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    height, width = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(height, width, 3), encoding_format="png"),
                "instances": tfds.features.Tensor(
                    shape=(height, width), dtype=np.uint16, encoding="zlib"
                ),
                "semantic": tfds.features.Tensor(
                    shape=(height, width), dtype=np.uint8, encoding="zlib"
                ),
                "id": tfds.features.Text(),
            }
        ),
        # Record i of a split is example i, so "index" and "id" agree.
        disable_shuffling=True,
        homepage="https://arxiv.org/abs/1708.02551",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
        "train": self._generate_examples(split="train", count=config.num_train),
        "test": self._generate_examples(split="test", count=config.num_test),
    }

  def _generate_examples(self, *, split: str, count: int):
    for index in range(count):
      example = render_example(self.builder_config, split=split, index=index)
      # A PIL image is encoded by TFDS with Pillow; a NumPy array would need
      # TensorFlow's PNG encoder.
      example["image"] = Image.fromarray(example["image"])
      example["id"] = f"{split}_{index:05d}"
      yield index, example
