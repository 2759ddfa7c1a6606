"""CVPPP leaf-segmentation measures: best Dice, SBD, FBD, DiC and |DiC|.

Host-side NumPy on integer label maps, 0 = background, ids arbitrary. Every
pairwise overlap comes from one contingency table (a single `np.bincount`),
so the cost is one pass over the pixels whatever the number of objects.

Empty maps follow the CVPPP 2017 scorer (`evaluate.py` of the LSC challenge,
also used on CodaLab), so that numbers stay comparable with published ones:

* `BestDice(a, b)` returns 0 when `a` has no object ("trivial solution"), and
  an object of `a` with nothing in `b` to match scores 0. Hence BD and SBD are
  0 when either map is empty, and also when both are.
* `FGBGDice` returns 0 when both foregrounds are empty (its Dice guards a zero
  denominator with 0).

The both-empty case is the only one where 0 is debatable (a perfect empty
prediction scores nothing). It never occurs in CVPPP, but may elsewhere, so
`both_empty=` sets the value of BD, SBD and FBD for it; the default 0.0 is the
scorer's. The scorer also takes the lowest label of a map as background; here
0 is always background, which is the same whenever a map has background.
"""

import numpy as np
from numpy.typing import ArrayLike

CVPPP_KEYS = ("SBD", "BD_pred_gt", "BD_gt_pred", "FBD", "DiC", "|DiC|")

# The lookup-table relabelling allocates max_id + 1 entries; above this
# (relative to the map size) sorting the ids is cheaper than the table.
_LUT_SLACK = 4
_LUT_MIN = 1 << 16


def _as_label_map(labels: ArrayLike) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.dtype != np.bool_ and not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"label maps must be integer, got dtype {labels.dtype}")
  return labels


def _object_ids_and_relabel(
    labels: np.ndarray,
    *,
    relabel: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
  """Sorted nonzero ids and (if asked) the map relabelled to 1..n, 0 kept."""
  flat = labels.ravel()
  if flat.size == 0:
    return np.zeros(0, labels.dtype), np.zeros(labels.shape, np.int32)
  lo, hi = flat.min(), flat.max()
  if lo >= 0 and hi < max(_LUT_SLACK * flat.size, _LUT_MIN):
    # Linear time: a histogram of the ids doubles as the presence table.
    flat = flat.astype(np.intp, copy=False)
    present = np.bincount(flat) > 0
    present[0] = False
    ids = np.flatnonzero(present)
    if not relabel:
      return ids.astype(labels.dtype), None
    lut = np.zeros(present.size, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return ids.astype(labels.dtype), lut[flat].reshape(labels.shape)
  # Negative or huge ids: sort instead.
  ids = np.unique(flat)
  ids = ids[ids != 0]
  if not relabel:
    return ids, None
  relabelled = (np.searchsorted(ids, flat) + 1).astype(np.int32)
  relabelled[flat == 0] = 0
  return ids, relabelled.reshape(labels.shape)


def object_ids(labels: ArrayLike) -> np.ndarray:
  """Sorted ids of the objects (nonzero labels) of a label map.

  Args:
    labels: (H, W) integer label map, 0 = background.

  Returns:
    (n,) sorted distinct nonzero ids.
  """
  return _object_ids_and_relabel(_as_label_map(labels), relabel=False)[0]


def relabel_consecutive(labels: ArrayLike) -> np.ndarray:
  """Relabels objects to 1..n in increasing order of their ids; 0 stays 0.

  Args:
    labels: (H, W) integer label map, 0 = background, any other value an
      object id (non-consecutive and negative ids allowed).

  Returns:
    (H, W) int32 map with the same partition and ids 0..n.
  """
  return _object_ids_and_relabel(_as_label_map(labels))[1]


def contingency_table(a: ArrayLike, b: ArrayLike) -> np.ndarray:
  """Pixel counts of every (object of a, object of b) pair, background included.

  Args:
    a: (H, W) integer label map, 0 = background.
    b: (H, W) integer label map of the same shape.

  Returns:
    (n_a + 1, n_b + 1) int64 table; entry [i, j] counts the pixels labelled
    i in `a` and j in `b` after both are relabelled to consecutive ids, so row
    and column 0 are background.
  """
  a, b = _as_label_map(a), _as_label_map(b)
  if a.shape != b.shape:
    raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
  ids_a, rel_a = _object_ids_and_relabel(a)
  ids_b, rel_b = _object_ids_and_relabel(b)
  n_a, n_b = ids_a.size, ids_b.size
  pair = rel_a.ravel().astype(np.int64) * (n_b + 1) + rel_b.ravel()
  table = np.bincount(pair, minlength=(n_a + 1) * (n_b + 1))
  return table.reshape(n_a + 1, n_b + 1)


def _dice_matrix(table: np.ndarray) -> np.ndarray:
  """(n_a, n_b) Dice of every object pair from a contingency table."""
  sizes_a = table[1:].sum(axis=1)
  sizes_b = table[:, 1:].sum(axis=0)
  # Every object has at least one pixel, so the denominator is positive.
  return 2.0 * table[1:, 1:] / (sizes_a[:, None] + sizes_b[None, :])


def _best_dice_from_dice(dice: np.ndarray, both_empty: float) -> float:
  n_a, n_b = dice.shape
  if n_a == 0:
    return float(both_empty) if n_b == 0 else 0.0
  if n_b == 0:
    return 0.0
  return float(dice.max(axis=1).mean())


def _fg_dice_from_table(table: np.ndarray, both_empty: float) -> float:
  fg_a = table[1:].sum()
  fg_b = table[:, 1:].sum()
  if fg_a + fg_b == 0:
    return float(both_empty)
  return float(2.0 * table[1:, 1:].sum() / (fg_a + fg_b))


def best_dice(a: ArrayLike, b: ArrayLike, *, both_empty: float = 0.0) -> float:
  """BD(a, b): mean over the objects of `a` of their best Dice with `b`.

  Args:
    a: (H, W) integer label map, 0 = background.
    b: (H, W) integer label map.
    both_empty: value when neither map has an object (the scorer's is 0).

  Returns:
    BD in [0, 1]; 0 when exactly one of the maps is empty.
  """
  return _best_dice_from_dice(_dice_matrix(contingency_table(a, b)), both_empty)


def sbd(pred: ArrayLike, gt: ArrayLike, *, both_empty: float = 0.0) -> float:
  """Symmetric best Dice, min(BD(pred, gt), BD(gt, pred)).

  Args:
    pred: (H, W) predicted label map, 0 = background.
    gt: (H, W) ground-truth label map.
    both_empty: value when neither map has an object (the scorer's is 0).

  Returns:
    SBD in [0, 1].
  """
  dice = _dice_matrix(contingency_table(pred, gt))
  return min(_best_dice_from_dice(dice, both_empty), _best_dice_from_dice(dice.T, both_empty))


def fg_dice(pred: ArrayLike, gt: ArrayLike, *, both_empty: float = 0.0) -> float:
  """Foreground-background Dice (FBD) of pred > 0 against gt > 0.

  Args:
    pred: (H, W) predicted label map, 0 = background.
    gt: (H, W) ground-truth label map.
    both_empty: value when neither map has foreground (the scorer's is 0).

  Returns:
    FBD in [0, 1].
  """
  pred, gt = _as_label_map(pred), _as_label_map(gt)
  if pred.shape != gt.shape:
    raise ValueError(f"label maps differ in shape: {pred.shape} vs {gt.shape}")
  fg_pred, fg_gt = pred != 0, gt != 0
  total = int(fg_pred.sum()) + int(fg_gt.sum())
  if total == 0:
    return float(both_empty)
  return 2.0 * int(np.count_nonzero(fg_pred & fg_gt)) / total


def dic(pred: ArrayLike, gt: ArrayLike) -> int:
  """Difference in count, #objects(pred) - #objects(gt); signed."""
  return int(object_ids(pred).size) - int(object_ids(gt).size)


def abs_dic(pred: ArrayLike, gt: ArrayLike) -> int:
  """Absolute difference in count, |#objects(pred) - #objects(gt)|."""
  return abs(dic(pred, gt))


def cvppp_scores(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    ignore: int | ArrayLike | None = None,
    both_empty: float = 0.0,
) -> dict[str, float]:
  """All CVPPP measures of one image from a single contingency table.

  Args:
    pred: (H, W) predicted label map, 0 = background.
    gt: (H, W) ground-truth label map.
    ignore: pixels left out of every measure (set to background in both
      maps): a label value of `gt` (e.g. 255 for VOC's void), or an (H, W)
      boolean mask. None keeps every pixel, as the CVPPP scorer does.
    both_empty: BD, SBD and FBD when neither map has an object.

  Returns:
    {"SBD", "BD_pred_gt", "BD_gt_pred", "FBD", "DiC", "|DiC|"}; the counts
    are ints, the rest floats.
  """
  pred, gt = _as_label_map(pred), _as_label_map(gt)
  if ignore is not None:
    pred, gt = _drop_ignored(pred, gt, ignore)
  table = contingency_table(pred, gt)
  dice = _dice_matrix(table)
  bd_pred_gt = _best_dice_from_dice(dice, both_empty)
  bd_gt_pred = _best_dice_from_dice(dice.T, both_empty)
  count_diff = dice.shape[0] - dice.shape[1]
  return {
      "SBD": min(bd_pred_gt, bd_gt_pred),
      "BD_pred_gt": bd_pred_gt,
      "BD_gt_pred": bd_gt_pred,
      "FBD": _fg_dice_from_table(table, both_empty),
      "DiC": int(count_diff),
      "|DiC|": abs(int(count_diff)),
  }


def ignore_mask(gt: np.ndarray, ignore: int | ArrayLike) -> np.ndarray:
  """Boolean (H, W) mask of ignored pixels from a label value or a mask."""
  if isinstance(ignore, (int, np.integer)):
    return gt == ignore
  mask = np.asarray(ignore, dtype=bool)
  if mask.shape != gt.shape:
    raise ValueError(f"ignore mask has shape {mask.shape}, label map {gt.shape}")
  return mask


def _drop_ignored(
    pred: np.ndarray,
    gt: np.ndarray,
    ignore: int | ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
  mask = ignore_mask(gt, ignore)
  return np.where(mask, 0, pred), np.where(mask, 0, gt)


__all__ = [
    "CVPPP_KEYS",
    "abs_dic",
    "best_dice",
    "contingency_table",
    "cvppp_scores",
    "dic",
    "fg_dice",
    "ignore_mask",
    "object_ids",
    "relabel_consecutive",
    "sbd",
]
