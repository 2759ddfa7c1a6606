"""Instance ids to slots: the per-image cluster index every per-instance sum is taken over.

Instance ids are arbitrary non-negative integers; the loss needs them as slots 0..max_instances of
each image so that per-instance quantities are segment sums with a static segment count. Ids that
already fit are their own slots ("direct"); ids up to a promised bound go through a presence table
("table"); anything else through a sort of each image's pixels by (class, id). Pixels outside every
cluster (background unless it is a cluster, the ignore label, negative ids) get slot
max_instances + 1, which the loss drops.
"""

import dataclasses
import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# A presence table over (class, id) keys larger than this is not worth it; such ids go to the sort.
_MAX_TABLE_SIZE = 1 << 22


@dataclasses.dataclass(frozen=True)
class SlotSpec:
  """Static description of the relabelling: which pixels form which cluster, in which slot."""

  max_instances: int
  max_label_id: int | None
  ignore_label: int | None
  background_as_instance: bool
  num_classes: int | None
  # "auto": decide in the program (lax.cond); "fast" / "sort": decided on the host from concrete
  # labels, so the program holds only the path it needs.
  relabel: str = "auto"


def check_max_instances(
    labels: Any,
    max_instances: int,
    *,
    semantic_labels: Any = None,
    ignore_label: int | None = None,
    background_as_instance: bool = False,
) -> None:
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
          f"{max_instances}; raise max_instances (config.data.max_instances)."
      )
    if n_inst + n_bg > max_instances + 1:
      raise ValueError(
          f"image {b} of the batch has {n_inst} instances and {n_bg} background clusters, more "
          f"than the max_instances + 1 = {max_instances + 1} slots of max_instances="
          f"{max_instances}; raise max_instances (config.data.max_instances)."
      )


def _count_distinct(values: np.ndarray) -> int:
  if values.size == 0:
    return 0
  if values.min() >= 0 and values.max() < (1 << 20):
    return int(np.count_nonzero(np.bincount(values)))
  return int(np.unique(values).size)


def host_relabel_choice(labels: Any, semantic_labels: Any, spec: SlotSpec) -> str:
  """ "fast" or "sort" for concrete labels."""
  path = _fast_path(spec, semantic_labels is not None)
  if path is None:
    return "sort"
  ids = np.asarray(labels)
  classes = None if semantic_labels is None else np.asarray(semantic_labels)
  member = _members(ids, classes, spec, np)
  return "sort" if _beyond_fast_path(ids, classes, member, path, np) else "fast"


def global_slots(slots: jax.Array, num_slots: int) -> jax.Array:
  """(B, N) per-image slots -> one segment id space over the batch.

  One flat scatter over the batch is an order of magnitude faster on XLA:CPU than a vmapped
  (batched) scatter, and under a batch-sharded jit it partitions into local scatters plus an
  all-reduce of the small (B * slots) result.
  """
  return slots + jnp.arange(slots.shape[0], dtype=slots.dtype)[:, None] * num_slots


def slot_max(values: jax.Array, flat_slots: jax.Array, batch: int, num_slots: int) -> jax.Array:
  """(B, N) int per-pixel values -> (B, num_slots - 1) max per slot (excluded slot dropped)."""
  out = jax.ops.segment_max(values.reshape(-1), flat_slots.reshape(-1), batch * num_slots)
  return out.reshape(batch, num_slots)[:, :-1]


def assign_slots(
    ids: jax.Array, classes: jax.Array | None, spec: SlotSpec
) -> tuple[jax.Array, jax.Array]:
  """Maps instance ids to slots 0..max_instances; excluded pixels get max_instances + 1.

  Slots follow the order of (class, id). Without semantic labels the background cluster (if any)
  is slot 0 and the instances take 1..max_instances; with them every cluster, background clusters
  included, takes the next slot, starting at 0 with background clusters and at 1 without.

  Args:
    ids: (B, N) int32 instance ids.
    classes: (B, N) int32 semantic classes or None.
    spec: the relabelling.

  Returns:
    slots (B, N) int32 and overflow (B,) int32, the clusters that found no slot.
  """
  member = _members(ids, classes, spec)
  general = functools.partial(_slots_by_sort, ids, classes, member, spec)
  path = _fast_path(spec, classes is not None)
  if path is None or spec.relabel == "sort":
    return general()
  kind, bound, num_classes = path
  if kind == "direct":
    fast = functools.partial(_slots_direct, ids, member, spec)
  else:
    fast = functools.partial(_slots_by_table, ids, classes, member, spec, bound, num_classes)
  if spec.relabel == "fast":
    return fast()
  # A batch-level cond runs only the taken branch: the sort is paid only for out-of-range ids.
  return lax.cond(_beyond_fast_path(ids, classes, member, path, jnp), general, fast)


def _members(ids: Any, classes: Any, spec: SlotSpec, xp: Any = jnp) -> Any:
  """Pixels that belong to a cluster (NumPy or JAX arrays, per xp)."""
  valid = ids >= 0
  if classes is not None:
    valid &= classes >= 0
  if spec.ignore_label is not None:
    valid &= ids != spec.ignore_label
    if classes is not None:
      valid &= classes != spec.ignore_label
  return valid & ((ids > 0) | xp.asarray(spec.background_as_instance))


def _fast_path(spec: SlotSpec, semantic: bool) -> tuple[str, int, int] | None:
  """("direct" | "table", id bound, class bound) of the fast relabelling; None: sort only."""
  m = spec.max_instances
  bound = m if spec.max_label_id is None else max(spec.max_label_id, 0)
  if not semantic and bound <= m:
    return "direct", m, 1
  if semantic and spec.num_classes is None:
    return None
  num_classes = spec.num_classes if semantic else 1
  if num_classes * (bound + 1) > _MAX_TABLE_SIZE:
    return None
  return "table", bound, num_classes


def _beyond_fast_path(
    ids: Any, classes: Any, member: Any, path: tuple[str, int, int], xp: Any = jnp
) -> Any:
  """Whether any cluster pixel has an id (or class) the fast path cannot index."""
  _, bound, num_classes = path
  beyond = xp.any(member & (ids > bound))
  if classes is not None:
    beyond |= xp.any(member & (classes >= num_classes))
  return beyond


def _slots_direct(ids: jax.Array, member: jax.Array, spec: SlotSpec) -> tuple[jax.Array, jax.Array]:
  """Ids up to max_instances are their own slots."""
  excluded = spec.max_instances + 1
  slots = jnp.where(member, ids, excluded)
  return slots, jnp.zeros(ids.shape[:1], jnp.int32)


def _slots_by_table(
    ids: jax.Array,
    classes: jax.Array | None,
    member: jax.Array,
    spec: SlotSpec,
    bound: int,
    num_classes: int,
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
  slot_of_key, overflow = _ranks_to_slots(present, spec=spec, semantic=classes is not None)
  excluded = spec.max_instances + 1
  slot_of_key = jnp.concatenate(
      [slot_of_key, jnp.full((batch, 1), excluded, jnp.int32)], axis=1
  ).reshape(-1)
  return slot_of_key[flat_key].reshape(ids.shape), overflow


def _ranks_to_slots(
    present: jax.Array, *, spec: SlotSpec, semantic: bool
) -> tuple[jax.Array, jax.Array]:
  """(B, T) 0/1 presence of sorted keys -> (B, T) slot of each key, (B,) overflow.

  Without semantic labels the keys are the ids themselves, key 0 the background. Keys that are
  absent or find no slot map to the excluded slot.
  """
  m = spec.max_instances
  excluded = m + 1
  if semantic:
    # Every cluster, background clusters included, in key order.
    offset = 0 if spec.background_as_instance else 1
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


def _slots_by_sort(
    ids: jax.Array, classes: jax.Array | None, member: jax.Array, spec: SlotSpec
) -> tuple[jax.Array, jax.Array]:
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
    cls_s, ids_s, order_s = lax.sort(
        (jnp.where(member, classes, last), ids, order), dimension=1, num_keys=2
    )
    inside_s = cls_s != last
    changed = (cls_s[:, 1:] != cls_s[:, :-1]) | (ids_s[:, 1:] != ids_s[:, :-1])
  changed = jnp.concatenate([jnp.ones((batch, 1), bool), changed], axis=1)
  new_key = (changed & inside_s).astype(jnp.int32)
  m = spec.max_instances
  excluded = m + 1
  if classes is not None:
    offset = 0 if spec.background_as_instance else 1
    slot_s = jnp.cumsum(new_key, axis=1) - 1 + offset
    overflow = jnp.maximum(jnp.sum(new_key, axis=1) + offset - (m + 1), 0)
  else:
    new_inst = new_key * (ids_s > 0)
    slot_s = jnp.where(ids_s > 0, jnp.cumsum(new_inst, axis=1), 0)
    overflow = jnp.maximum(jnp.sum(new_inst, axis=1) - m, 0)
  slot_s = jnp.where(inside_s & (slot_s <= m), slot_s, excluded)
  rows = jnp.arange(batch, dtype=jnp.int32)[:, None] * num_pixels
  slots = (
      jnp.zeros(batch * num_pixels, jnp.int32)
      .at[(order_s + rows).reshape(-1)]
      .set(slot_s.reshape(-1), unique_indices=True)
  )
  return slots.reshape(batch, num_pixels), overflow.astype(jnp.int32)
