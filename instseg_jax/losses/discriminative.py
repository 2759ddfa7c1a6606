"""The discriminative loss of De Brabandere, Neven and Van Gool (2017), arXiv 1708.02551.

Paper form, per image, for instances c = 1..C with pixel sets S_c and means mu_c:

  L_var  = 1/C sum_c 1/|S_c| sum_{i in S_c} [ ||mu_c - x_i|| - delta_v ]_+^2
  L_dist = 1/(C (C-1)) sum_{a != b} [ 2 delta_d - ||mu_a - mu_b|| ]_+^2     (0 when C < 2)
  L_reg  = 1/C sum_c ||mu_c||
  L      = alpha L_var + beta L_dist + gamma L_reg,   batch loss = mean over images.

`discriminative_loss` names each knob once, after what it does: pull_margin is the paper's delta_v,
push_margin its 2 delta_d (the distance between means below which they are pushed), pull_weight,
push_weight and regularization_weight its alpha, beta and gamma. The knobs of the implementations
in the wild are options of this one function; `LOSS_PRESETS` names the option sets worth
reproducing.

How it runs. Instance ids are first mapped to per-image slots (`_slots`), so that every
per-instance quantity is a segment sum over slots with a static segment count: one jitted program
serves any number of instances and no Python loop runs over them. The pixel-level work (means,
pull distances and their gradient) is a custom_vjp with a hand-written backward that writes the
gradient in one fused pass over the pixels (`_pixels`). The per-slot part here (push, regularizer,
normalization) is plain JAX, vmapped over images and differentiated by autodiff.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from instseg_jax.losses import _pixels
from instseg_jax.losses import _slots
from instseg_jax.losses._slots import check_max_instances

DISTANCES = ("euclidean", "manhattan")
ERRORS = ("squared", "absolute", "log_cosh")
NORMALIZATIONS = ("paper", "pixel", "authors")

# Option sets of `discriminative_loss`, used as `discriminative_loss(x, y, **LOSS_PRESETS[name])`.
# "paper" names every option that shapes the loss; the others name only what they change.
LOSS_PRESETS: dict[str, dict[str, Any]] = {
    # The paper: the defaults, spelled out.
    "paper": {
        "pull_margin": 0.5,
        "push_margin": 3.0,
        "pull_weight": 1.0,
        "push_weight": 1.0,
        "regularization_weight": 0.001,
        "pull_distance": "euclidean",
        "push_distance": "euclidean",
        "regularization_distance": "euclidean",
        "pull_error": "squared",
        "push_error": "squared",
        "regularization_error": "absolute",
        "normalization": "paper",
        "background_as_instance": False,
    },
    # The authors' code: pull summed over instances, push over unordered pairs / (C - 1), no
    # regularizer, and the background as one more cluster.
    "authors": {"normalization": "authors", "background_as_instance": True},
    # The pull term averaged over all instance pixels of the image, so large instances weigh more.
    "pixel": {"normalization": "pixel"},
    # The TensorFlow MetricLoss option set: Manhattan distances, squared errors, a 0.25 push margin
    # (centroids farther apart are not penalised), no pull margin, and a squared regularizer.
    "tf_metric_loss": {
        "pull_distance": "manhattan",
        "push_distance": "manhattan",
        "pull_error": "squared",
        "push_error": "squared",
        "pull_margin": 0.0,
        "push_margin": 0.25,
        "pull_weight": 1.0,
        "push_weight": 1.0,
        "regularization_error": "squared",
        "regularization_weight": 1e-4,
    },
}


@dataclasses.dataclass(frozen=True)
class _Options:
  """Resolved, hashable options: the static part of the jitted loss."""

  pull: _pixels.PullSpec  # pull margin, distance and error, and the shape of the pixel passes
  slots: _slots.SlotSpec  # which pixels form which cluster
  push_margin: float
  push_distance: str
  push_error: str
  regularization_distance: str
  regularization_error: str
  pull_weight: float
  push_weight: float
  regularization_weight: float
  normalization: str


def discriminative_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    pull_margin: float = 0.5,
    push_margin: float = 3.0,
    pull_weight: float = 1.0,
    push_weight: float = 1.0,
    regularization_weight: float = 0.001,
    pull_distance: str = "euclidean",
    push_distance: str = "euclidean",
    regularization_distance: str = "euclidean",
    pull_error: str = "squared",
    push_error: str = "squared",
    regularization_error: str = "absolute",
    normalization: str = "paper",
    background_as_instance: bool = False,
    ignore_label: int | None = None,
    semantic_labels: jax.Array | None = None,
    num_classes: int | None = None,
    max_instances: int = 32,
    max_label_id: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Discriminative loss of a batch of pixel embeddings.

  With the defaults this is exactly the paper's loss (module docstring; `LOSS_PRESETS["paper"]`).
  The paper's symbols are options here: delta_v is pull_margin, 2 * delta_d is push_margin, alpha,
  beta and gamma are pull_weight, push_weight and regularization_weight, and its norm ||.|| is
  each term's distance ("euclidean" for L2, "manhattan" for L1).

  Args:
    embeddings: (B, H, W, D) float embeddings (any float dtype; the loss is computed in float32,
      or float64 for float64 input). Any (B, *spatial, D) shape works.
    labels: (B, H, W) int instance ids: 0 is background, other ids are arbitrary non-negative
      integers, not necessarily consecutive. Negative ids are excluded like `ignore_label`.
    pull_margin: pixels closer than this to their mean are not pulled; a pixel's pull is
      pull_error([pull_distance(x_i, mu_c) - pull_margin]_+).
    push_margin: means closer than this are pushed apart; a pair's push is
      push_error([push_margin - push_distance(mu_a, mu_b)]_+).
    pull_weight: weight of the pull (variance) term.
    push_weight: weight of the push (distance) term.
    regularization_weight: weight of the regularizer, the mean over clusters of
      regularization_error(regularization_distance(mu_c, 0)).
    pull_distance: "euclidean" | "manhattan", between a pixel and its mean.
    push_distance: the same, between two means.
    regularization_distance: the same, between a mean and the origin.
    pull_error: "squared" | "absolute" | "log_cosh", applied to the pull hinge.
    push_error: the same, applied to the push hinge.
    regularization_error: the same, applied to a mean's distance from the origin; "absolute" (the
      paper) is that distance itself.
    normalization: "paper" (above); "pixel": the pull term is averaged over all instance pixels of
      the image instead of per instance; "authors": the pull term is summed over instances (not
      divided by C), the push term runs over unordered pairs divided by C - 1, no regularizer.
    background_as_instance: label 0 is one more cluster (pulled, pushed, regularized) instead of
      being excluded. With semantic_labels, each class's background is a cluster of that class and
      takes one of the max_instances + 1 slots.
    ignore_label: pixels with this instance label (or this semantic label) are excluded entirely.
    semantic_labels: optional (B, H, W) int classes. Instances are then (class, id) pairs,
      instances of different classes never interact, and each term is averaged over the classes
      present in the image.
    num_classes: static bound on the semantic labels; lets (class, id) pairs be relabelled with a
      presence table instead of a sort.
    max_instances: static bound on the instances of one image (the segment count is this + 1).
      With concrete labels more instances raise ValueError (`check_max_instances`); under jit the
      surplus instances (largest ids, or largest (class, id) keys) are left out of the loss and
      counted in aux["overflow"].
    max_label_id: static bound on the instance ids, a promise that lets ids up to it be relabelled
      with a presence table instead of a sort. By default ids up to max_instances are used as slots
      directly. Larger ids are always handled correctly, through a sort.

  Returns:
    (loss, aux): loss is the scalar batch mean of the per-image loss. aux holds the unweighted
    batch means "variance" (pull), "distance" (push) and "regularization", "per_image_loss" (B,),
    and the int32 (B,) "num_instances" (background clusters not counted) and "overflow"
    (instances left out because max_instances was exceeded).

  The loss is differentiable in reverse mode (jax.grad, jax.vjp) only: its pixel-level part is a
  custom_vjp, which forward-mode transforms (jax.jvp, jax.hessian) do not support.
  """
  if embeddings.ndim != labels.ndim + 1 or embeddings.shape[:-1] != labels.shape:
    raise ValueError(f"embeddings {embeddings.shape} must be labels {labels.shape} + (D,)")
  if semantic_labels is not None and semantic_labels.shape != labels.shape:
    raise ValueError(f"semantic_labels {semantic_labels.shape} must match labels {labels.shape}")
  if max_instances < 1:
    raise ValueError(f"max_instances must be >= 1, got {max_instances}")
  opts = _Options(
      pull=_pixels.PullSpec(
          num_slots=int(max_instances) + 2,  # max_instances + 1 clusters, the excluded pixels
          distance=_choice(pull_distance, DISTANCES, "pull_distance"),
          error=_choice(pull_error, ERRORS, "pull_error"),
          margin=float(pull_margin),
          num_chunks=_pixels.chunk_count(embeddings.shape, embeddings.dtype),
      ),
      slots=_slots.SlotSpec(
          max_instances=int(max_instances),
          max_label_id=None if max_label_id is None else int(max_label_id),
          ignore_label=None if ignore_label is None else int(ignore_label),
          background_as_instance=bool(background_as_instance),
          num_classes=None if num_classes is None else int(num_classes),
      ),
      push_margin=float(push_margin),
      push_distance=_choice(push_distance, DISTANCES, "push_distance"),
      push_error=_choice(push_error, ERRORS, "push_error"),
      regularization_distance=_choice(
          regularization_distance, DISTANCES, "regularization_distance"
      ),
      regularization_error=_choice(regularization_error, ERRORS, "regularization_error"),
      pull_weight=float(pull_weight),
      push_weight=float(push_weight),
      regularization_weight=float(regularization_weight),
      normalization=_choice(normalization, NORMALIZATIONS, "normalization"),
  )
  if not _is_traced(labels) and (semantic_labels is None or not _is_traced(semantic_labels)):
    check_max_instances(
        labels,
        max_instances,
        semantic_labels=semantic_labels,
        ignore_label=ignore_label,
        background_as_instance=background_as_instance,
    )
    relabel = _slots.host_relabel_choice(labels, semantic_labels, opts.slots)
    opts = dataclasses.replace(opts, slots=dataclasses.replace(opts.slots, relabel=relabel))
  return _discriminative_loss(embeddings, labels, semantic_labels, opts)


def _is_traced(x: Any) -> bool:
  # Arrays spread over several hosts cannot be read here either; they are checked like traced ones.
  return isinstance(x, jax.core.Tracer) or not getattr(x, "is_fully_addressable", True)


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
  return value


@functools.partial(jax.jit, static_argnames=("opts",))
def _discriminative_loss(
    embeddings: jax.Array, labels: jax.Array, semantic_labels: jax.Array | None, opts: _Options
) -> tuple[jax.Array, dict[str, jax.Array]]:
  batch = embeddings.shape[0]
  dim = embeddings.shape[-1]
  x = embeddings.reshape(batch, -1, dim)
  ids = labels.reshape(batch, -1).astype(jnp.int32)
  classes = None
  if semantic_labels is not None:
    classes = semantic_labels.reshape(batch, -1).astype(jnp.int32)
  k = opts.slots.max_instances + 1  # cluster slots; slot k holds the excluded pixels

  slots, overflow = _slots.assign_slots(ids, classes, opts.slots)
  counts, means, pull_sums = _pixels.pull_statistics(x, slots, opts.pull)
  counts, means, pull_sums = counts[:, :k], means[:, :k], pull_sums[:, :k]

  # Only the semantic and background-cluster modes need to know what each slot holds.
  flat_slots = _slots.global_slots(slots, k + 1)
  if classes is not None:
    slot_class = _slots.slot_max(classes, flat_slots, batch, k + 1)
  else:
    slot_class = jnp.zeros((batch, k), jnp.int32)
  if opts.slots.background_as_instance and classes is not None:
    slot_is_bg = _slots.slot_max((ids == 0).astype(jnp.int32), flat_slots, batch, k + 1) > 0
  else:
    slot_is_bg = jnp.broadcast_to(
        (jnp.arange(k) == 0) & opts.slots.background_as_instance, (batch, k)
    )

  terms = functools.partial(_image_terms, opts=opts)
  pull, push, reg = jax.vmap(terms)(counts, means, pull_sums, slot_class)
  per_image = opts.pull_weight * pull + opts.push_weight * push + opts.regularization_weight * reg
  num_instances = jnp.sum((counts > 0) & ~slot_is_bg, axis=1).astype(jnp.int32)
  aux = {
      "variance": jnp.mean(pull),
      "distance": jnp.mean(push),
      "regularization": jnp.mean(reg),
      "per_image_loss": per_image,
      "num_instances": num_instances,
      "overflow": overflow,
  }
  return jnp.mean(per_image), aux


def _safe_distance(v: jax.Array, distance: str) -> jax.Array:
  """Distance of (..., D) vectors from 0, with a finite (zero) gradient at 0."""
  if distance == "manhattan":
    return jnp.sum(jnp.abs(v), axis=-1)
  sq = jnp.sum(v * v, axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _image_terms(
    counts: jax.Array,
    means: jax.Array,
    pull_sums: jax.Array,
    slot_class: jax.Array,
    *,
    opts: _Options,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Unweighted pull, push and regularization terms of one image.

  Args:
    counts: (K,) pixels per slot; a slot with pixels is a cluster.
    means: (K, D) cluster means.
    pull_sums: (K,) summed pixel pull errors per cluster.
    slot_class: (K,) class of each slot; clusters of different classes never interact and each
      term is averaged over the classes present.
    opts: the options.

  Returns:
    (pull, push, regularization) scalars; all 0 for an image without clusters.
  """
  k = counts.shape[0]
  present = counts > 0
  same = (slot_class[:, None] == slot_class[None, :]) & present[None, :]
  clusters_in_class = jnp.sum(same, axis=1)  # per slot: clusters of its class
  earlier = jnp.arange(k)[None, :] < jnp.arange(k)[:, None]
  first_of_class = present & ~jnp.any(same & earlier, axis=1)
  num_classes = jnp.maximum(jnp.sum(first_of_class), 1).astype(means.dtype)
  c = jnp.maximum(clusters_in_class, 1).astype(means.dtype)
  n = jnp.maximum(counts, 1.0)

  if opts.normalization == "paper":
    pull_w = 1.0 / (n * c)
  elif opts.normalization == "pixel":
    pixels_in_class = jnp.sum(jnp.where(same, counts[None, :], 0.0), axis=1)
    pull_w = 1.0 / jnp.maximum(pixels_in_class, 1.0)
  else:
    pull_w = 1.0 / n
  pull = jnp.sum(jnp.where(present, pull_sums * pull_w, 0.0)) / num_classes

  pairs = same & present[:, None] & ~jnp.eye(k, dtype=bool)
  gaps = _safe_distance(means[:, None, :] - means[None, :, :], opts.push_distance)
  push_err = _pixels.hinge_error(jnp.maximum(opts.push_margin - gaps, 0.0), opts.push_error)
  if opts.normalization == "authors":
    pair_w = 0.5 / jnp.maximum(c - 1.0, 1.0)  # each unordered pair is counted twice
  else:
    pair_w = 1.0 / jnp.maximum(c * (c - 1.0), 1.0)
  push = jnp.sum(jnp.where(pairs, push_err * pair_w[:, None], 0.0)) / num_classes

  if opts.normalization == "authors":
    reg = jnp.zeros((), means.dtype)
  else:
    distance = _safe_distance(means, opts.regularization_distance)
    size = _pixels.hinge_error(distance, opts.regularization_error)
    reg = jnp.sum(jnp.where(present, size / c, 0.0)) / num_classes
  return pull, push, reg
