"""The one inference path: an image at its own resolution -> instance labels on its own grid.

Whoever asks (evaluate, predict, an exported bundle, tuning, evaluation during training), an
image goes through the same steps:

1. `Geometry.network_input`: the image is brought to the geometry the model trained at
   (config.data.size_mode and image_size, with the code the training pipeline uses) and padded
   to a multiple of the network's stride;
2. the fully convolutional network runs on the whole padded image (`Segmenter.network`), the
   foreground probability and seed map optionally averaged over flips;
3. `postprocess`: the foreground embeddings are clustered at the network's grid, small fragments
   dropped (and optionally given to their nearest instance), and the labels are brought back
   onto the image's own grid, where the foreground is the upsampled probability over the
   threshold, so outlines are as smooth as the network's output, not blocks of its pixels.

Every score is computed on that original grid (the CVPPP protocol), so evaluate and predict on
the same images give the same label maps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np
from PIL import Image
from scipy import ndimage

from instseg_jax import cluster as cluster_lib
from instseg_jax import models
from instseg_jax import train_step
from instseg_jax.cluster import buckets
from instseg_jax.data import transforms
from instseg_jax.metrics import ap as ap_lib
from instseg_jax.registry import lookup


@dataclasses.dataclass(frozen=True)
class Geometry:
  """How an image of any size meets the network: what training did with it.

  Attributes:
    mode: config.data.size_mode: "stretch" (the whole image resized to `size`), "fit" (scaled
      by one factor to fit in `size`, padded) or "native" (the image's own scale).
    size: config.data.image_size, (H, W) the network trained at.
    stride: the network's stride; inputs are padded to a multiple of it.
    max_side: "native" only: a longer side above this is shrunk first (0 = never).
  """

  mode: str
  size: tuple[int, int]
  stride: int
  max_side: int = 0
  normalize: str = "none"

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Geometry:
    return cls(
        mode=config.data.size_mode,
        size=tuple(int(s) for s in config.data.image_size),
        stride=models.create_model(config).stride,
        max_side=int(config.predict.max_side),
        normalize=config.data.normalize,
    )

  def network_input(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The network's input for one image.

    Args:
      image: (H, W, 3) float32 in [0, 1] (see `transforms.to_float`), at its own resolution.

    Returns:
      (input (h, w, 3) float32, (ch, cw)): the input, padded with zeros at the bottom and right
      to a multiple of the stride, and the top-left part of it that shows the image.
    """
    # On the whole image, as the training pipeline does before its crops.
    image = transforms.normalize_intensity(image, self.normalize)
    height, width = image.shape[:2]
    if self.mode == "native":
      if self.max_side and max(height, width) > self.max_side:
        scale = self.max_side / max(height, width)
        shrunk = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = transforms.resize({"image": image}, size=shrunk)["image"]
      content = image.shape[:2]
    else:
      # The same window the training pipeline evaluates on (zoom 1).
      image = transforms.fixed_window({"image": image}, size=self.size, mode=self.mode)["image"]
      win_h, win_w = (
          max(1, round(v)) for v in transforms.base_window((height, width), self.size, self.mode)
      )
      content = (
          min(self.size[0], max(1, round(height * self.size[0] / win_h))),
          min(self.size[1], max(1, round(width * self.size[1] / win_w))),
      )
    pad_h, pad_w = -image.shape[0] % self.stride, -image.shape[1] % self.stride
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    return np.ascontiguousarray(padded, np.float32), (int(content[0]), int(content[1]))


@dataclasses.dataclass(frozen=True)
class NetworkOutput:
  """The network's answer for one image, on its grid (cropped to the part showing the image).

  Attributes:
    embedding: (h, w, D) float32.
    foreground: (h, w) float32 foreground probability.
    classes: (h, w) int32 likeliest object class (1..K-1) of every pixel.
    count: predicted instance count (counter head), or None.
    shape: (H, W) of the image on its own grid.
    seed: (h, w) float32 seed scores (seed head), or None.
  """

  embedding: np.ndarray
  foreground: np.ndarray
  classes: np.ndarray
  count: float | None
  shape: tuple[int, int]
  seed: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Segmentation:
  """Instances of one image on its own grid.

  Attributes:
    labels: (H, W) int32, 0 = background, instances 1..N.
    foreground: (H, W) float32 foreground probability.
    classes: (H, W) int32 object class of every pixel.
    capped: the clustering reached its bound on instances (some may have merged).
  """

  labels: np.ndarray
  foreground: np.ndarray
  classes: np.ndarray
  capped: bool


@dataclasses.dataclass(frozen=True)
class PostProcess:
  """What turns the network's output into instances (config.cluster).

  Attributes:
    method: a key of cluster.METHODS.
    options: the method's keyword options (bandwidth, num_clusters, ...).
    fg_threshold: foreground probability above which a pixel belongs to an instance.
    min_size: clusters smaller than this many pixels of the network's grid are dropped.
    fill_unclustered: dropped (or noise) foreground pixels join their nearest instance in the
      image instead of becoming background.
    max_instances: the most instances one image can hold.
    flip_average: the foreground probability and the seed map are the means over the image and
      its two flips (the network runs three times).
    largest_piece: an instance split into pieces on the image's grid keeps only its largest
      (4-connected) piece; the others become background.
    min_confidence: an instance whose mean foreground probability (on the image's grid) is
      under this becomes background: faint blobs of textured background that pass the pixel
      threshold in places (nuclei on brightfield) go, while a real instance is confident over
      its whole area.
  """

  method: str
  options: dict[str, Any]
  fg_threshold: float
  min_size: int
  fill_unclustered: bool
  max_instances: int
  flip_average: bool = False
  largest_piece: bool = False
  min_confidence: float = 0.0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> PostProcess:
    method = config.cluster.method
    options = {
        name: config.cluster[name]
        for name in lookup(cluster_lib.METHODS, method, "config.cluster.method").options
    }
    return cls(
        method=method,
        options=options,
        fg_threshold=float(config.cluster.fg_threshold),
        min_size=int(config.cluster.min_size),
        fill_unclustered=bool(config.cluster.fill_unclustered),
        max_instances=int(config.data.max_instances),
        flip_average=bool(config.cluster.flip_average),
        largest_piece=bool(config.cluster.largest_piece),
        min_confidence=float(config.cluster.min_confidence),
    )

  def replace(self, **changes) -> PostProcess:
    """A copy with some fields, or some method options (e.g. bandwidth=1.2), changed."""
    fields = {f.name for f in dataclasses.fields(self)}
    options = {k: v for k, v in changes.items() if k not in fields}
    kept = {k: v for k, v in changes.items() if k in fields}
    return dataclasses.replace(self, options={**self.options, **options}, **kept)


def network_outputs(
    params, images: jax.Array, *, apply_fn, flip_average: bool
) -> dict[str, jax.Array]:
  """predict_step, with the per-pixel maps optionally averaged over left-right and up-down flips.

  The semantic head and the seed head are averaged: both score a pixel, whichever way up the
  image is. The embeddings are not: an embedding's coordinates are free up to the instance, so
  those of a flipped image need not match those of the original.
  """
  outputs = train_step.predict_step(params, images, apply_fn=apply_fn, fg_threshold=0.5)
  if not flip_average:
    return outputs
  averaged = [name for name in ("probabilities", "seed") if name in outputs]
  sums = {name: outputs[name] for name in averaged}
  for axis in (1, 2):
    flipped = train_step.predict_step(
        params, jax.numpy.flip(images, axis), apply_fn=apply_fn, fg_threshold=0.5
    )
    for name in averaged:
      sums[name] = sums[name] + jax.numpy.flip(flipped[name], axis)
  means = {name: total / 3.0 for name, total in sums.items()}
  semantic = train_step.semantic_outputs(means.pop("probabilities"), fg_threshold=0.5)
  return dict(outputs, **semantic, **means)


class Segmenter:
  """The model of a config with its parameters, as image -> instances.

  Usage:
    segmenter = Segmenter(config, params)
    segmentation = segmenter(image)        # (H, W, 3) float in [0, 1] -> labels on (H, W)
  """

  def __init__(self, config: ml_collections.ConfigDict, params):
    self.config = config
    self.params = params
    self.geometry = Geometry.from_config(config)
    self.postprocess = PostProcess.from_config(config)
    model = models.create_model(config)
    # One compiled program per input shape; "stretch" and "fit" always give the same one.
    self._predict = {
        flip: jax.jit(
            functools.partial(network_outputs, apply_fn=model.apply, flip_average=flip),
            compiler_options=models.compiler_options(),
        )
        for flip in (False, True)
    }

  def network(self, image: np.ndarray, *, flip_average: bool | None = None) -> NetworkOutput:
    """Runs the network on one (H, W, 3) float image at the training geometry.

    flip_average defaults to the config's (config.cluster.flip_average).
    """
    if flip_average is None:
      flip_average = self.postprocess.flip_average
    padded, (ch, cw) = self.geometry.network_input(image)
    outputs = jax.device_get(self._predict[flip_average](self.params, padded[None]))
    count = outputs.get("count")
    seed = outputs.get("seed")
    return NetworkOutput(
        embedding=np.asarray(outputs["embedding"][0, :ch, :cw], np.float32),
        foreground=np.asarray(outputs["foreground"][0, :ch, :cw], np.float32),
        classes=np.asarray(outputs["classes"][0, :ch, :cw], np.int32),
        count=None if count is None else float(np.asarray(count).reshape(-1)[0]),
        shape=tuple(image.shape[:2]),
        seed=None if seed is None else np.asarray(seed[0, :ch, :cw], np.float32),
    )

  def __call__(self, image: np.ndarray, postprocess: PostProcess | None = None) -> Segmentation:
    postprocess = postprocess or self.postprocess
    return apply_postprocess(
        self.network(image, flip_average=postprocess.flip_average), postprocess
    )


def cluster_network_grid(
    output: NetworkOutput, postprocess: PostProcess
) -> tuple[np.ndarray, bool]:
  """(labels (h, w) int32 on the network's grid, whether the instance bound was reached)."""
  embedding, mask = output.embedding, output.foreground > postprocess.fg_threshold
  method = cluster_lib.METHODS[postprocess.method]
  options = dict(postprocess.options)
  if method.needs_seed:
    if output.seed is None:
      raise ValueError(
          f"config.cluster.method={postprocess.method!r} needs the seed head: train with "
          "config.model.seed_head=True"
      )
    options["seed"] = output.seed
  # JAX's methods: grids of any size share a few compiled programs (the padding changes no
  # label), and the programs take the static bound on instances.
  on_device = method.on_device
  if on_device:
    if method.needs_seed:
      options["seed"] = buckets.pad_to_bucket(output.seed[..., None], mask)[0][..., 0]
    embedding, mask = buckets.pad_to_bucket(embedding, mask)
    options["max_instances"] = postprocess.max_instances
  if postprocess.method == "kmeans" and not options.get("num_clusters"):
    # The counter head predicts count / max_instances.
    options["num_clusters"] = max(1, round((output.count or 0.0) * postprocess.max_instances))
  labels = np.asarray(
      cluster_lib.cluster(embedding, mask, method=postprocess.method, **options), np.int32
  )
  if on_device:
    labels = buckets.unpad(labels, output.foreground.shape)
  capped = int(labels.max(initial=0)) >= postprocess.max_instances
  labels = np.asarray(cluster_lib.remove_small_instances(labels, min_size=postprocess.min_size))
  return labels, capped


def nearest_labelled(labels: np.ndarray) -> np.ndarray:
  """Every pixel takes the label of its nearest labelled pixel in the image (all 0 if none)."""
  if not labels.any():
    return labels
  _, (rows, cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
  return labels[rows, cols]


def resize_float(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """(h, w) float map -> (H, W) bilinear, with pixel centres aligned as in `transforms.resize`."""
  if array.shape == tuple(shape):
    return np.asarray(array, np.float32)
  image = Image.fromarray(np.ascontiguousarray(array, np.float32), mode="F")
  return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), np.float32)


def upsample_labels(labels: np.ndarray, foreground: np.ndarray) -> np.ndarray:
  """Instance ids on a finer grid: each pixel takes the id with most bilinear weight.

  Args:
    labels: (h, w) int ids with no gaps inside the foreground (see `nearest_labelled`).
    foreground: (H, W) bool foreground on the target grid.

  Returns:
    (H, W) int32: 0 off the foreground, else the id among the four nearest source pixels
    whose bilinear weights sum highest, so boundaries between instances fall between pixels of
    the source grid instead of along its block edges.
  """
  h, w = labels.shape
  out_h, out_w = foreground.shape
  if (h, w) == (out_h, out_w):
    return np.where(foreground, labels, 0).astype(np.int32)
  ys = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, h - 1)
  xs = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, w - 1)
  y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
  corners = [labels[y0][:, x0], labels[y0][:, x1], labels[y1][:, x0], labels[y1][:, x1]]
  weights = [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx]
  votes = [sum(wj * (cj == ci) for cj, wj in zip(corners, weights)) for ci in corners]
  best = np.argmax(np.stack(votes), axis=0)
  chosen = np.take_along_axis(np.stack(corners), best[None], axis=0)[0]
  return np.where(foreground, chosen, 0).astype(np.int32)


def keep_largest_pieces(labels: np.ndarray) -> np.ndarray:
  """Each instance of (H, W) labels reduced to its largest 4-connected piece; the rest -> 0.

  A stray piece is most often a small neighbour the clustering merged into this instance, so
  it counts against both; as background it counts against the neighbour only.
  """
  kept = np.zeros_like(labels)
  for index, window in enumerate(ndimage.find_objects(labels), start=1):
    if window is None:
      continue
    pieces, num_pieces = ndimage.label(labels[window] == index)
    sizes = np.bincount(pieces.ravel(), minlength=num_pieces + 1)[1:]
    kept[window][pieces == np.argmax(sizes) + 1] = index
  return kept


def drop_unconfident(labels: np.ndarray, foreground: np.ndarray, threshold: float) -> np.ndarray:
  """(H, W) labels without the instances whose mean `foreground` probability is under threshold."""
  confident = ap_lib.instance_confidences(labels, foreground) >= threshold
  confident[0] = False
  return np.where(confident[labels], labels, 0).astype(labels.dtype)


def apply_postprocess(output: NetworkOutput, postprocess: PostProcess) -> Segmentation:
  """Clusters one network output and brings the instances onto the image's own grid."""
  labels, capped = cluster_network_grid(output, postprocess)
  shape = output.shape
  foreground = resize_float(output.foreground, shape)
  filled = nearest_labelled(labels)
  full = upsample_labels(filled, foreground > postprocess.fg_threshold)
  if not postprocess.fill_unclustered:
    unclustered = (output.foreground > postprocess.fg_threshold) & (labels == 0)
    full[transforms.resize_labels(unclustered, size=shape)] = 0
  if postprocess.largest_piece:
    full = keep_largest_pieces(full)
  if postprocess.min_confidence > 0:
    full = drop_unconfident(full, foreground, postprocess.min_confidence)
  full, _ = transforms.renumber_instances(full)
  return Segmentation(
      labels=full,
      foreground=foreground,
      classes=transforms.resize_labels(output.classes, size=shape),
      capped=capped,
  )
