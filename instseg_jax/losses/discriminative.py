"""The discriminative loss of De Brabandere, Neven and Van Gool (2017), arXiv 1708.02551.

Paper form, per image, for instances c = 1..C with pixel sets S_c and means mu_c:

  L_var  = 1/C sum_c 1/|S_c| sum_{i in S_c} [ ||mu_c - x_i|| - delta_v ]_+^2
  L_dist = 1/(C (C-1)) sum_{a != b} [ 2 delta_d - ||mu_a - mu_b|| ]_+^2     (0 when C < 2)
  L_reg  = 1/C sum_c ||mu_c||
  L      = alpha L_var + beta L_dist + gamma L_reg,   batch loss = mean over images.

Every knob of the implementations in the wild is an option of the one function
`discriminative_loss`; `LOSS_PRESETS` names the option sets worth reproducing.

How it runs. Instance ids are first mapped to per-image slots 0..max_instances (ids that already
fit are their own slots; otherwise a presence table or, for arbitrary ids, a sort). Every
per-instance quantity is then a segment sum over slots with a static segment count, so one jitted
program serves any number of instances and no Python loop runs over them. The pixel-level work
(means, pull distances, and their gradient) is a `jax.custom_vjp` with a hand-written backward: the
gradient of the whole loss with respect to the embeddings is one fused pass over the pixels, so a
forward and backward read the (B, H, W, D) embeddings three times and write them once (the
gradient); on CPU the forward passes run in chunks so that nothing else of that size is allocated.
The per-slot part (push, regularizer, normalization) is plain JAX, vmapped over images and
differentiated by autodiff.
"""

from collections.abc import Callable
import dataclasses
import functools
import math
import operator
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

DISTANCES = ("euclidean", "manhattan")
ERRORS = ("squared", "absolute", "log_cosh")
NORMALIZATIONS = ("paper", "pixel", "authors")

_DISTANCE_ALIASES = {**{name: name for name in DISTANCES}, "l2": "euclidean", "l1": "manhattan"}

# Option sets of `discriminative_loss`, used as `discriminative_loss(x, y, **LOSS_PRESETS[name])`.
LOSS_PRESETS: dict[str, dict[str, Any]] = {
    # The paper: the defaults, spelled out.
    "paper": {"delta_v": 0.5, "delta_d": 1.5, "alpha": 1.0, "beta": 1.0, "gamma": 0.001,
              "norm": "l2", "normalization": "paper"},
    # The authors' code: pull summed over instances, push over unordered pairs / (C - 1), no
    # regularizer, and the background as one more cluster.
    "authors": {"normalization": "authors", "background_as_instance": True},
    # The TensorFlow MetricLoss option set: Manhattan distances, squared errors, a 0.25 push margin
    # (centroids farther apart are not penalised), no pull margin, and a squared regularizer.
    "tf_metric_loss": {
        "pull_distance": "manhattan", "push_distance": "manhattan",
        "pull_error": "squared", "push_error": "squared",
        "pull_margin": 0.0, "push_margin": 0.25,
        "pull_weight": 1.0, "push_weight": 1.0,
        "regularization_error": "squared", "regularization_weight": 1e-4,
    },
}

# XLA:CPU page-faults every fresh buffer over ~32 MB (glibc maps those afresh on each call), so the
# pixel passes there work on chunks of about this many bytes.
_CPU_CHUNK_BYTES = 4 << 20
# A presence table over (class, id) keys larger than this is not worth it; such ids go to the sort.
_MAX_TABLE_SIZE = 1 << 22


@dataclasses.dataclass(frozen=True)
class _Options:
  """Resolved, hashable options: the static part of the jitted loss."""

  pull_margin: float
  push_margin: float
  pull_weight: float
  push_weight: float
  regularization_weight: float
  pull_distance: str
  push_distance: str
  regularization_distance: str
  pull_error: str
  push_error: str
  regularization_error: str
  normalization: str
  max_instances: int
  max_label_id: int | None
  ignore_label: int | None
  background_as_instance: bool
  num_classes: int | None
  # "auto": decide in the program (lax.cond); "fast" / "sort": decided on the host from concrete
  # labels, so the program holds only the path it needs.
  relabel: str = "auto"
  num_chunks: int = 1  # sequential chunks of the pixel passes (`_num_chunks`)


@dataclasses.dataclass(frozen=True)
class _PullSpec:
  """Static description of the pixel-level pass (`_pull_statistics`)."""

  num_slots: int  # per image: max_instances + 1 cluster slots and one slot for excluded pixels
  distance: str
  error: str
  margin: float
  num_chunks: int  # the pixel axis is processed in this many sequential chunks


def check_max_instances(labels: Any, max_instances: int, *,
                        semantic_labels: Any = None,
                        ignore_label: int | None = None,
                        background_as_instance: bool = False) -> None:
  """Raises ValueError when an image holds more instances than the loss has slots for.

  A host-side check (NumPy) for concrete labels; `discriminative_loss` calls it whenever its labels
  are not traced. Under jit the surplus instances (the largest ids) are dropped instead and
  counted in aux["overflow"].

  Args:
    labels: (B, H, W) int instance ids, 0 = background.
    max_instances: the limit.
    semantic_labels: optional (B, H, W) int classes; instances are then (class, id) pairs.
    ignore_label: label whose pixels are excluded.
    background_as_instance: whether background pixels form clusters too.

  Raises:
    ValueError: naming the image, the count found and the limit.
  """
  labels = np.asarray(labels)
  semantic = None if semantic_labels is None else np.asarray(semantic_labels)
  labels = labels.reshape(labels.shape[0], -1).astype(np.int64)
  if semantic is not None:
    semantic = semantic.reshape(labels.shape).astype(np.int64)
  for b in range(labels.shape[0]):
    ids = labels[b]
    valid = ids >= 0
    if ignore_label is not None:
      valid &= ids != ignore_label
    if semantic is None:
      n_inst = _count_distinct(ids[valid & (ids > 0)])
      n_bg = 0
    else:
      cls = semantic[b]
      valid &= cls >= 0
      if ignore_label is not None:
        valid &= cls != ignore_label
      inst = valid & (ids > 0)
      n_inst = _count_distinct(cls[inst] * (int(ids[inst].max(initial=0)) + 1) + ids[inst])
      n_bg = _count_distinct(cls[valid & (ids == 0)]) if background_as_instance else 0
    if n_inst > max_instances:
      raise ValueError(
          f"image {b} of the batch has {n_inst} instances, more than max_instances="
          f"{max_instances}; raise max_instances (config.data.max_instances).")
    if n_inst + n_bg > max_instances + 1:
      raise ValueError(
          f"image {b} of the batch has {n_inst} instances and {n_bg} background clusters, more "
          f"than the max_instances + 1 = {max_instances + 1} slots of max_instances="
          f"{max_instances}; raise max_instances (config.data.max_instances).")


def _count_distinct(values: np.ndarray) -> int:
  if values.size == 0:
    return 0
  if values.min() >= 0 and values.max() < (1 << 20):
    return int(np.count_nonzero(np.bincount(values)))
  return int(np.unique(values).size)


def discriminative_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.001,
    pull_margin: float | None = None,
    push_margin: float | None = None,
    pull_weight: float | None = None,
    push_weight: float | None = None,
    regularization_weight: float | None = None,
    norm: str = "l2",
    pull_distance: str | None = None,
    push_distance: str | None = None,
    regularization_distance: str | None = None,
    pull_error: str = "squared",
    push_error: str = "squared",
    regularization_error: str | None = None,
    normalization: str = "paper",
    max_instances: int = 32,
    max_label_id: int | None = None,
    ignore_label: int | None = None,
    background_as_instance: bool = False,
    semantic_labels: jax.Array | None = None,
    num_classes: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Discriminative loss of a batch of pixel embeddings.

  With the defaults this is exactly the paper's loss (module docstring). The paper's names and the
  TensorFlow-style names are two spellings of the same knobs: `pull_margin` is delta_v,
  `push_margin` is 2 * delta_d (the distance between means below which they are pushed),
  `pull_weight`, `push_weight`, `regularization_weight` are alpha, beta, gamma. A TF-style name
  that is given (not None) wins over its paper spelling.

  Args:
    embeddings: (B, H, W, D) float embeddings (any float dtype; the loss is computed in float32,
      or float64 for float64 input). Any (B, *spatial, D) shape works.
    labels: (B, H, W) int instance ids: 0 is background, other ids are arbitrary non-negative
      integers, not necessarily consecutive. Negative ids are excluded like `ignore_label`.
    delta_v: pull margin; pixels closer than this to their mean are not pulled.
    delta_d: push margin is 2 * delta_d; means farther apart than that are not pushed.
    alpha: weight of the pull (variance) term.
    beta: weight of the push (distance) term.
    gamma: weight of the regularizer.
    pull_margin: overrides delta_v.
    push_margin: overrides 2 * delta_d. The push term is err([push_margin - d(mu_a, mu_b)]_+).
    pull_weight: overrides alpha.
    push_weight: overrides beta.
    regularization_weight: overrides gamma.
    norm: "l2" | "l1", the distance used by every term whose own distance is not given.
    pull_distance: "euclidean" | "manhattan" (or "l2" | "l1") between a pixel and its mean.
    push_distance: the same, between two means.
    regularization_distance: the same, between a mean and the origin.
    pull_error: "squared" | "absolute" | "log_cosh", applied to the pull hinge.
    push_error: the same, applied to the push hinge.
    regularization_error: None or "absolute" (the paper: the norm itself), "squared" | "log_cosh".
    normalization: "paper" (above); "pixel": the pull term is averaged over all instance pixels of
      the image instead of per instance; "authors": the pull term is summed over instances (not
      divided by C), the push term runs over unordered pairs divided by C - 1, no regularizer.
    max_instances: static bound on the instances of one image (the segment count is this + 1).
      With concrete labels more instances raise ValueError (`check_max_instances`); under jit the
      surplus instances (largest ids, or largest (class, id) keys) are left out of the loss and
      counted in aux["overflow"].
    max_label_id: static bound on the instance ids, a promise that lets ids up to it be relabelled
      with a presence table instead of a sort. By default ids up to max_instances are used as slots
      directly. Larger ids are always handled correctly, through a sort.
    ignore_label: pixels with this instance label (or this semantic label) are excluded entirely.
    background_as_instance: label 0 is one more cluster (pulled, pushed, regularized) instead of
      being excluded. With semantic_labels, each class's background is a cluster of that class and
      takes one of the max_instances + 1 slots.
    semantic_labels: optional (B, H, W) int classes. Instances are then (class, id) pairs,
      instances of different classes never interact, and each term is averaged over the classes
      present in the image.
    num_classes: static bound on the semantic labels; lets (class, id) pairs be relabelled with a
      presence table instead of a sort.

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
  default_distance = _distance_name(norm, "norm")
  opts = _Options(
      pull_margin=float(delta_v if pull_margin is None else pull_margin),
      push_margin=float(2.0 * delta_d if push_margin is None else push_margin),
      pull_weight=float(alpha if pull_weight is None else pull_weight),
      push_weight=float(beta if push_weight is None else push_weight),
      regularization_weight=float(gamma if regularization_weight is None
                                  else regularization_weight),
      pull_distance=_distance_name(pull_distance or default_distance, "pull_distance"),
      push_distance=_distance_name(push_distance or default_distance, "push_distance"),
      regularization_distance=_distance_name(regularization_distance or default_distance,
                                             "regularization_distance"),
      pull_error=_choice(pull_error, ERRORS, "pull_error"),
      push_error=_choice(push_error, ERRORS, "push_error"),
      regularization_error=_choice(regularization_error or "absolute", ERRORS,
                                   "regularization_error"),
      normalization=_choice(normalization, NORMALIZATIONS, "normalization"),
      max_instances=int(max_instances),
      max_label_id=None if max_label_id is None else int(max_label_id),
      ignore_label=None if ignore_label is None else int(ignore_label),
      background_as_instance=bool(background_as_instance),
      num_classes=None if num_classes is None else int(num_classes),
      num_chunks=_num_chunks(
          embeddings.shape[0], math.prod(labels.shape[1:]), embeddings.shape[-1],
          jnp.dtype(jnp.promote_types(embeddings.dtype, jnp.float32)).itemsize),
  )
  if not _is_traced(labels) and (semantic_labels is None or not _is_traced(semantic_labels)):
    check_max_instances(labels, max_instances, semantic_labels=semantic_labels,
                        ignore_label=ignore_label,
                        background_as_instance=background_as_instance)
    opts = dataclasses.replace(opts, relabel=_host_relabel_choice(labels, semantic_labels, opts))
  return _discriminative_loss(embeddings, labels, semantic_labels, opts)


def _host_relabel_choice(labels: Any, semantic_labels: Any, opts: _Options) -> str:
  """"fast" or "sort" for concrete labels."""
  path = _fast_path(opts, semantic_labels is not None)
  if path is None:
    return "sort"
  ids = np.asarray(labels)
  classes = None if semantic_labels is None else np.asarray(semantic_labels)
  member = _members(ids, classes, opts, np)
  return "sort" if _beyond_fast_path(ids, classes, member, path, np) else "fast"


def _is_traced(x: Any) -> bool:
  # Arrays spread over several hosts cannot be read here either; they are checked like traced ones.
  return isinstance(x, jax.core.Tracer) or not getattr(x, "is_fully_addressable", True)


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
  return value


def _distance_name(value: str, name: str) -> str:
  if value not in _DISTANCE_ALIASES:
    raise ValueError(f"{name} must be one of {tuple(_DISTANCE_ALIASES)}, got {value!r}")
  return _DISTANCE_ALIASES[value]


@functools.partial(jax.jit, static_argnames=("opts",))
def _discriminative_loss(embeddings: jax.Array, labels: jax.Array,
                         semantic_labels: jax.Array | None, opts: _Options
                         ) -> tuple[jax.Array, dict[str, jax.Array]]:
  batch = embeddings.shape[0]
  dim = embeddings.shape[-1]
  x = embeddings.reshape(batch, -1, dim)
  ids = labels.reshape(batch, -1).astype(jnp.int32)
  classes = None
  if semantic_labels is not None:
    classes = semantic_labels.reshape(batch, -1).astype(jnp.int32)
  k = opts.max_instances + 1

  slots, overflow = _assign_slots(ids, classes, opts)
  spec = _PullSpec(num_slots=k + 1, distance=opts.pull_distance, error=opts.pull_error,
                   margin=opts.pull_margin, num_chunks=opts.num_chunks)
  counts, means, pull_sums = _pull_statistics(x, slots, spec)
  counts, means, pull_sums = counts[:, :k], means[:, :k], pull_sums[:, :k]

  # Only the semantic and background-cluster modes need to know what each slot holds.
  flat_slots = _global_slots(slots, k + 1)
  if classes is not None:
    slot_class = _slot_max(classes, flat_slots, batch, k + 1)
  else:
    slot_class = jnp.zeros((batch, k), jnp.int32)
  if opts.background_as_instance and classes is not None:
    slot_is_bg = _slot_max((ids == 0).astype(jnp.int32), flat_slots, batch, k + 1) > 0
  else:
    slot_is_bg = jnp.broadcast_to(
        (jnp.arange(k) == 0) & opts.background_as_instance, (batch, k))

  terms = functools.partial(_image_terms, opts=opts)
  pull, push, reg = jax.vmap(terms)(counts, means, pull_sums, slot_class)
  per_image = (opts.pull_weight * pull + opts.push_weight * push
               + opts.regularization_weight * reg)
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


def _num_chunks(batch: int, num_pixels: int, dim: int, itemsize: int) -> int:
  """How many sequential chunks the pixel passes use; 1 off CPU."""
  if jax.default_backend() != "cpu":
    return 1
  wanted = math.ceil(batch * num_pixels * dim * itemsize / _CPU_CHUNK_BYTES)
  if wanted <= 1:
    return 1
  divisors = [n for n in range(wanted, min(num_pixels, 8 * wanted) + 1) if num_pixels % n == 0]
  return divisors[0] if divisors else 1


def _global_slots(slots: jax.Array, num_slots: int) -> jax.Array:
  """(B, N) per-image slots -> one segment id space over the batch.

  One flat scatter over the batch is an order of magnitude faster on XLA:CPU than a vmapped
  (batched) scatter, and under a batch-sharded jit it partitions into local scatters plus an
  all-reduce of the small (B * slots) result.
  """
  return slots + jnp.arange(slots.shape[0], dtype=slots.dtype)[:, None] * num_slots


def _slot_max(values: jax.Array, flat_slots: jax.Array, batch: int, num_slots: int
              ) -> jax.Array:
  """(B, N) int per-pixel values -> (B, num_slots - 1) max per slot (excluded slot dropped)."""
  out = jax.ops.segment_max(values.reshape(-1), flat_slots.reshape(-1), batch * num_slots)
  return out.reshape(batch, num_slots)[:, :-1]


def _assign_slots(ids: jax.Array, classes: jax.Array | None, opts: _Options
                  ) -> tuple[jax.Array, jax.Array]:
  """Maps instance ids to slots 0..max_instances; excluded pixels get max_instances + 1.

  Slots follow the order of (class, id). Without semantic labels the background cluster (if any)
  is slot 0 and the instances take 1..max_instances; with them every cluster, background clusters
  included, takes the next slot, starting at 0 with background clusters and at 1 without.

  Args:
    ids: (B, N) int32 instance ids.
    classes: (B, N) int32 semantic classes or None.
    opts: the options.

  Returns:
    slots (B, N) int32 and overflow (B,) int32, the clusters that found no slot.
  """
  member = _members(ids, classes, opts)
  general = functools.partial(_slots_by_sort, ids, classes, member, opts)
  path = _fast_path(opts, classes is not None)
  if path is None or opts.relabel == "sort":
    return general()
  kind, bound, num_classes = path
  if kind == "direct":
    fast = functools.partial(_slots_direct, ids, member, opts)
  else:
    fast = functools.partial(_slots_by_table, ids, classes, member, opts, bound, num_classes)
  if opts.relabel == "fast":
    return fast()
  # A batch-level cond runs only the taken branch: the sort is paid only for out-of-range ids.
  return lax.cond(_beyond_fast_path(ids, classes, member, path, jnp), general, fast)


def _members(ids: Any, classes: Any, opts: _Options, xp: Any = jnp) -> Any:
  """Pixels that belong to a cluster (NumPy or JAX arrays, per xp)."""
  valid = ids >= 0
  if classes is not None:
    valid &= classes >= 0
  if opts.ignore_label is not None:
    valid &= ids != opts.ignore_label
    if classes is not None:
      valid &= classes != opts.ignore_label
  return valid & ((ids > 0) | xp.asarray(opts.background_as_instance))


def _fast_path(opts: _Options, semantic: bool) -> tuple[str, int, int] | None:
  """("direct" | "table", id bound, class bound) of the fast relabelling; None: sort only."""
  m = opts.max_instances
  bound = m if opts.max_label_id is None else max(opts.max_label_id, 0)
  if not semantic and bound <= m:
    return "direct", m, 1
  if semantic and opts.num_classes is None:
    return None
  num_classes = opts.num_classes if semantic else 1
  if num_classes * (bound + 1) > _MAX_TABLE_SIZE:
    return None
  return "table", bound, num_classes


def _beyond_fast_path(ids: Any, classes: Any, member: Any, path: tuple[str, int, int],
                      xp: Any = jnp) -> Any:
  """Whether any cluster pixel has an id (or class) the fast path cannot index."""
  _, bound, num_classes = path
  beyond = xp.any(member & (ids > bound))
  if classes is not None:
    beyond |= xp.any(member & (classes >= num_classes))
  return beyond


def _slots_direct(ids: jax.Array, member: jax.Array, opts: _Options
                  ) -> tuple[jax.Array, jax.Array]:
  """Ids up to max_instances are their own slots."""
  excluded = opts.max_instances + 1
  slots = jnp.where(member, ids, excluded)
  return slots, jnp.zeros(ids.shape[:1], jnp.int32)


def _slots_by_table(ids: jax.Array, classes: jax.Array | None, member: jax.Array,
                    opts: _Options, bound: int, num_classes: int
                    ) -> tuple[jax.Array, jax.Array]:
  """Presence table over (class, id) keys; its running count is the slot."""
  batch = ids.shape[0]
  table = num_classes * (bound + 1)
  key = ids if classes is None else classes * (bound + 1) + ids
  # Index `table` of each image's row collects the excluded pixels.
  rows = jnp.arange(batch, dtype=jnp.int32)[:, None] * (table + 1)
  flat_key = (jnp.where(member, key, table) + rows).reshape(-1)
  present = jnp.zeros(batch * (table + 1), jnp.int32).at[flat_key].max(1)
  present = present.reshape(batch, table + 1)[:, :table]
  slot_of_key, overflow = _ranks_to_slots(present, opts=opts, semantic=classes is not None)
  excluded = opts.max_instances + 1
  slot_of_key = jnp.concatenate(
      [slot_of_key, jnp.full((batch, 1), excluded, jnp.int32)], axis=1).reshape(-1)
  return slot_of_key[flat_key].reshape(ids.shape), overflow


def _ranks_to_slots(present: jax.Array, *, opts: _Options, semantic: bool
                    ) -> tuple[jax.Array, jax.Array]:
  """(B, T) 0/1 presence of sorted keys -> (B, T) slot of each key, (B,) overflow.

  Without semantic labels the keys are the ids themselves, key 0 the background. Keys that are
  absent or find no slot map to the excluded slot.
  """
  m = opts.max_instances
  excluded = m + 1
  if semantic:
    # Every cluster, background clusters included, in key order.
    offset = 0 if opts.background_as_instance else 1
    rank = jnp.cumsum(present, axis=1) - present
    slot = rank + offset
    total = jnp.sum(present, axis=1)
    overflow = jnp.maximum(total + offset - (m + 1), 0)
  else:
    # The background keeps slot 0 whether or not it is present; instances count from 1.
    is_instance = jnp.arange(present.shape[1]) > 0
    inst = jnp.where(is_instance[None, :], present, 0)
    slot = jnp.where(is_instance[None, :], jnp.cumsum(inst, axis=1), 0)
    overflow = jnp.maximum(jnp.sum(inst, axis=1) - m, 0)
  slot = jnp.where((present > 0) & (slot <= m), slot, excluded)
  return slot.astype(jnp.int32), overflow.astype(jnp.int32)


def _slots_by_sort(ids: jax.Array, classes: jax.Array | None, member: jax.Array,
                   opts: _Options) -> tuple[jax.Array, jax.Array]:
  """The general path for arbitrary ids: sort each image's pixels by (class, id)."""
  batch, num_pixels = ids.shape
  # Excluded pixels sort last under the largest int32 (ids and classes are below it).
  last = jnp.iinfo(jnp.int32).max
  order = jnp.broadcast_to(jnp.arange(num_pixels, dtype=jnp.int32), ids.shape)
  if classes is None:
    ids_s, order_s = lax.sort((jnp.where(member, ids, last), order), dimension=1, num_keys=1)
    inside_s = ids_s != last
    changed = ids_s[:, 1:] != ids_s[:, :-1]
  else:
    cls_s, ids_s, order_s = lax.sort((jnp.where(member, classes, last), ids, order),
                                     dimension=1, num_keys=2)
    inside_s = cls_s != last
    changed = (cls_s[:, 1:] != cls_s[:, :-1]) | (ids_s[:, 1:] != ids_s[:, :-1])
  changed = jnp.concatenate([jnp.ones((batch, 1), bool), changed], axis=1)
  new_key = (changed & inside_s).astype(jnp.int32)
  m = opts.max_instances
  excluded = m + 1
  if classes is not None:
    offset = 0 if opts.background_as_instance else 1
    slot_s = jnp.cumsum(new_key, axis=1) - 1 + offset
    overflow = jnp.maximum(jnp.sum(new_key, axis=1) + offset - (m + 1), 0)
  else:
    new_inst = new_key * (ids_s > 0)
    slot_s = jnp.where(ids_s > 0, jnp.cumsum(new_inst, axis=1), 0)
    overflow = jnp.maximum(jnp.sum(new_inst, axis=1) - m, 0)
  slot_s = jnp.where(inside_s & (slot_s <= m), slot_s, excluded)
  rows = jnp.arange(batch, dtype=jnp.int32)[:, None] * num_pixels
  slots = jnp.zeros(batch * num_pixels, jnp.int32).at[(order_s + rows).reshape(-1)].set(
      slot_s.reshape(-1), unique_indices=True)
  return slots.reshape(batch, num_pixels), overflow.astype(jnp.int32)


def _channel_sum(t: jax.Array) -> jax.Array:
  # Explicit adds, not a reduce: XLA:CPU turns a reduce over gathered operands into a kernel that
  # is two orders of magnitude slower than the fused elementwise loop.
  return functools.reduce(operator.add, [t[..., c] for c in range(t.shape[-1])])


def _pixel_distance(t: jax.Array, distance: str) -> jax.Array:
  """(P, D) differences -> (P,) distances."""
  if distance == "euclidean":
    return jnp.sqrt(_channel_sum(t * t))
  return _channel_sum(jnp.abs(t))


def _error(h: jax.Array, kind: str) -> jax.Array:
  """Error of a non-negative hinge value."""
  if kind == "squared":
    return h * h
  if kind == "absolute":
    return h
  # log(cosh(h)) without overflow for large h.
  return h + jax.nn.softplus(-2.0 * h) - math.log(2.0)


def _pull_error_and_slope(d: jax.Array, spec: _PullSpec) -> tuple[jax.Array, jax.Array]:
  """Per-pixel pull error err([d - margin]_+) and its derivative with respect to d."""
  fn = lambda d: _error(jnp.maximum(d - spec.margin, 0.0), spec.error)
  return jax.jvp(fn, (d,), (jnp.ones_like(d),))


def _direction_scale(d: jax.Array, slope: jax.Array, distance: str) -> jax.Array:
  """Per-pixel factor s with d(error)/d(x_i - mu) = s * direction(x_i - mu)."""
  if distance == "euclidean":
    # d(||t||)/dt = t / ||t||, taken as 0 at t = 0.
    positive = d > 0
    return jnp.where(positive, slope / jnp.where(positive, d, 1.0), 0.0)
  return slope


def _direction(t: jax.Array, distance: str) -> jax.Array:
  return t if distance == "euclidean" else jnp.sign(t)


def _pixel_chunks(x: jax.Array, flat_slots: jax.Array, num_chunks: int
                  ) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  """Returns chunk(i) -> ((P, D) embeddings, (P,) global slots) of pixel chunk i of every image."""
  batch, num_pixels, dim = x.shape
  size = num_pixels // num_chunks
  xc = x.reshape(batch, num_chunks, size, dim)
  sc = flat_slots.reshape(batch, num_chunks, size)

  def chunk(i):
    xi = lax.dynamic_index_in_dim(xc, i, axis=1, keepdims=False)
    si = lax.dynamic_index_in_dim(sc, i, axis=1, keepdims=False)
    return xi.reshape(-1, dim), si.reshape(-1)

  return chunk


def _over_chunks(fn: Callable[[jax.Array], tuple[Any, Any]], num_chunks: int, init: Any
                 ) -> tuple[Any, Any]:
  """Runs fn(i) -> (sums, per_pixel) over the chunks: sums added up, per_pixel stacked.

  Per-pixel outputs come back as (num_chunks, B * chunk) arrays; without a loop for one chunk.
  """
  if num_chunks == 1:
    sums, per_pixel = fn(0)
    return sums, jax.tree.map(lambda a: a[None], per_pixel)

  def body(acc, i):
    sums, per_pixel = fn(i)
    return jax.tree.map(operator.add, acc, sums), per_pixel

  return lax.scan(body, init, jnp.arange(num_chunks))


def _unchunk(a: jax.Array, batch: int) -> jax.Array:
  """(num_chunks, B * chunk) per-pixel values -> (B * N,) in pixel order."""
  num_chunks = a.shape[0]
  return a.reshape(num_chunks, batch, -1).transpose(1, 0, 2).reshape(-1)


def _statistics(x: jax.Array, slots: jax.Array, spec: _PullSpec, with_residuals: bool):
  """The two forward passes of `_pull_statistics`: means first, then pull errors (+ residuals)."""
  batch, _, dim = x.shape
  ctype = jnp.promote_types(x.dtype, jnp.float32)
  num_segments = batch * spec.num_slots
  flat_slots = _global_slots(slots, spec.num_slots)
  chunk = _pixel_chunks(x, flat_slots, spec.num_chunks)

  # Each pass is one row scatter: a pixel's values with one extra column (its count, its error),
  # since XLA:CPU scatters a row about as fast as a scalar.
  def moments(i):
    xi, si = chunk(i)
    rows = jnp.concatenate([xi.astype(ctype), jnp.ones((xi.shape[0], 1), ctype)], axis=1)
    return jax.ops.segment_sum(rows, si, num_segments), ()

  sums, _ = _over_chunks(moments, spec.num_chunks, jnp.zeros((num_segments, dim + 1), ctype))
  counts = sums[:, dim]
  means = sums[:, :dim] / jnp.maximum(counts, 1.0)[:, None]

  def pull(i):
    xi, si = chunk(i)
    t = xi.astype(ctype) - means[si]
    d = _pixel_distance(t, spec.distance)
    err, slope = _pull_error_and_slope(d, spec)
    if not with_residuals:
      return jax.ops.segment_sum(err, si, num_segments), ()
    # d(err_i)/d(x_i - mu) = scale_i * direction(x_i - mu); its sum over each segment is what the
    # mean's gradient needs, and scale_i is kept for the backward pass.
    scale = _direction_scale(d, slope, spec.distance)
    rows = jnp.concatenate([scale[:, None] * _direction(t, spec.distance), err[:, None]], axis=1)
    return jax.ops.segment_sum(rows, si, num_segments), scale

  width = dim + 1 if with_residuals else None
  init = jnp.zeros((num_segments, width) if width else num_segments, ctype)
  pull_rows, scale = _over_chunks(pull, spec.num_chunks, init)
  if with_residuals:
    pull_sums, grad_sums = pull_rows[:, dim], pull_rows[:, :dim]
  else:
    pull_sums = pull_rows
  out = (counts.reshape(batch, -1), means.reshape(batch, -1, dim),
         pull_sums.reshape(batch, -1))
  if not with_residuals:
    return out, None
  return out, (x, flat_slots, counts, means, grad_sums, _unchunk(scale, batch))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pull_statistics(x: jax.Array, slots: jax.Array, spec: _PullSpec
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-slot pixel counts, means and pull sums.

  Args:
    x: (B, N, D) embeddings.
    slots: (B, N) int32 slots in [0, spec.num_slots).
    spec: static options.

  Returns:
    counts (B, S), means (B, S, D) and pull sums (B, S) = sum over the slot's pixels of
    err([distance(x_i, mean) - margin]_+), with S = spec.num_slots, in float32 (float64 for
    float64 input).
  """
  return _statistics(x, slots, spec, with_residuals=False)[0]


def _pull_statistics_fwd(x, slots, spec):
  return _statistics(x, slots, spec, with_residuals=True)


def _pull_statistics_bwd(spec, residuals, cotangents):
  # x_i enters its slot's mean (weight 1/n) and its own pull error, which also depends on the mean:
  #   dL/dx_i = g_E * e_i' + (g_mu - g_E * sum_{j in slot} e_j') / n,
  # with e_i' = d err_i / d(x_i - mu) = scale_i * direction(x_i - mu).
  # The counts are piecewise constant in x, so their cotangent contributes nothing.
  x, flat_slots, counts, means, grad_sums, scale = residuals
  _, g_means, g_pull = cotangents
  dim = x.shape[-1]
  g_pull = g_pull.reshape(-1)
  shared = (g_means.reshape(-1, dim) - g_pull[:, None] * grad_sums) / jnp.maximum(
      counts, 1.0)[:, None]
  s = flat_slots.reshape(-1)
  xf = x.reshape(-1, dim).astype(means.dtype)
  # One fused pass writes the gradient; the row gathers of the small tables fuse into it.
  grad = ((g_pull[s] * scale)[:, None] * _direction(xf - means[s], spec.distance)
          + shared[s])
  return grad.reshape(x.shape).astype(x.dtype), None


_pull_statistics.defvjp(_pull_statistics_fwd, _pull_statistics_bwd)


def _safe_distance(v: jax.Array, distance: str) -> jax.Array:
  """Distance of (..., D) vectors from 0, with a finite (zero) gradient at 0."""
  if distance == "manhattan":
    return jnp.sum(jnp.abs(v), axis=-1)
  sq = jnp.sum(v * v, axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _image_terms(counts: jax.Array, means: jax.Array, pull_sums: jax.Array,
                 slot_class: jax.Array, *, opts: _Options
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
  push_err = _error(jnp.maximum(opts.push_margin - gaps, 0.0), opts.push_error)
  if opts.normalization == "authors":
    pair_w = 0.5 / jnp.maximum(c - 1.0, 1.0)  # each unordered pair is counted twice
  else:
    pair_w = 1.0 / jnp.maximum(c * (c - 1.0), 1.0)
  push = jnp.sum(jnp.where(pairs, push_err * pair_w[:, None], 0.0)) / num_classes

  if opts.normalization == "authors":
    reg = jnp.zeros((), means.dtype)
  else:
    size = _error(_safe_distance(means, opts.regularization_distance), opts.regularization_error)
    reg = jnp.sum(jnp.where(present, size / c, 0.0)) / num_classes
  return pull, push, reg
