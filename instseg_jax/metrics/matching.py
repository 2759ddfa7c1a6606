"""Object matching, the measure nuclei users report (the StarDist protocol).

Predicted and true objects of an image are matched one to one by IoU with the Hungarian
algorithm: among all one-to-one assignments, the one with the most pairs at IoU >= t, and of
those the one with the highest total IoU. A matched pair at IoU >= t is a true positive; the
unmatched predictions are false positives, the unmatched true objects false negatives. Over a
data set the counts are pooled (not the per-image ratios averaged):

  precision TP / (TP + FP), recall TP / (TP + FN), accuracy TP / (TP + FP + FN),
  F1 2 TP / (2 TP + FP + FN), panoptic quality (sum of matched IoU) / (TP + FP / 2 + FN / 2).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from instseg_jax.metrics import cvppp

THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
SCORES = ("precision", "recall", "accuracy", "f1", "panoptic_quality")


def score_key(name: str, threshold: float) -> str:
  """The summary key of a score at an IoU threshold: "accuracy@0.5"."""
  return f"{name}@{threshold:g}"


# Every score key of a `MatchingAccumulator` summary.
KEYS = tuple(score_key(name, t) for t in THRESHOLDS for name in SCORES)


def iou_matrix(gt: ArrayLike, pred: ArrayLike) -> np.ndarray:
  """(n_true, n_pred) IoU of every pair of objects (0 = background in both maps)."""
  return _iou_from_table(cvppp.contingency_table(gt, pred))


def _iou_from_table(table: np.ndarray) -> np.ndarray:
  """`iou_matrix` from the maps' contingency table."""
  table = table.astype(np.float64)
  sizes_true = table[1:].sum(axis=1)
  sizes_pred = table[:, 1:].sum(axis=0)
  overlap = table[1:, 1:]
  union = sizes_true[:, None] + sizes_pred[None, :] - overlap
  return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


@dataclasses.dataclass(frozen=True)
class MatchCounts:
  """What the matching of one image (or a pooled data set) found at one threshold."""

  tp: int
  fp: int
  fn: int
  matched_iou: float  # sum of the IoU of the true positives

  def __add__(self, other: MatchCounts) -> MatchCounts:
    return MatchCounts(
        self.tp + other.tp,
        self.fp + other.fp,
        self.fn + other.fn,
        self.matched_iou + other.matched_iou,
    )

  def scores(self) -> dict[str, float]:
    """precision, recall, accuracy, f1 and panoptic_quality (0 where a ratio has nothing)."""
    tp, fp, fn = self.tp, self.fp, self.fn
    ratio = lambda num, den: float(num / den) if den else 0.0
    return {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "accuracy": ratio(tp, tp + fp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "panoptic_quality": ratio(self.matched_iou, tp + fp / 2 + fn / 2),
    }


def matched_pairs(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """(true indices, predicted indices) of the pairs the one-to-one matching takes at IoU >= t."""
  n_true, n_pred = iou.shape
  if not n_true or not n_pred:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  # Each pair at IoU >= t is worth 1; the IoU, scaled below 1 over all pairs, breaks ties.
  cost = -(iou >= threshold).astype(np.float64) - iou / (2 * min(n_true, n_pred))
  rows, cols = optimize.linear_sum_assignment(cost)
  ok = iou[rows, cols] >= threshold
  return rows[ok], cols[ok]


def match(iou: np.ndarray, threshold: float) -> MatchCounts:
  """The one-to-one matching of an (n_true, n_pred) IoU matrix at one threshold."""
  rows, cols = matched_pairs(iou, threshold)
  tp = len(rows)
  n_true, n_pred = iou.shape
  return MatchCounts(tp, n_pred - tp, n_true - tp, float(iou[rows, cols].sum()))


def matching(gt: ArrayLike, pred: ArrayLike, *, thresholds=THRESHOLDS) -> dict[float, MatchCounts]:
  """{threshold: counts} for one image; label maps (H, W), 0 = background."""
  iou = iou_matrix(gt, pred)
  return {t: match(iou, t) for t in thresholds}


# Why an object is left unmatched; see `error_kinds`.
ERROR_KINDS = (
    "missed_as_background",
    "missed_merged",
    "missed_other",
    "false_on_background",
    "false_merged",
    "false_other",
)


def error_kinds(gt: ArrayLike, pred: ArrayLike, threshold: float = 0.5) -> dict[str, int]:
  """Counts the objects the matching at `threshold` leaves out of one image, by why.

  A true object left out is missed_as_background when under half of it is predicted as any
  object; missed_merged when half of it or more lies in one prediction that also holds half or
  more of another true object; missed_other otherwise (split between predictions, or predicted
  with the wrong shape). A prediction left out is false_on_background when over half of it lies
  on background; false_merged when it holds half or more of two true objects or more;
  false_other otherwise (a piece of a true object, or one of the wrong shape). The missed add up
  to the false negatives, the false to the false positives.

  Args:
    gt: (H, W) true objects, 0 = background.
    pred: (H, W) predicted objects, 0 = background.
    threshold: the IoU of the matching.

  Returns:
    {kind: count} for every kind of ERROR_KINDS.
  """
  table = cvppp.contingency_table(gt, pred)
  overlap = table[1:, 1:]
  sizes_true, sizes_pred = table[1:].sum(axis=1), table[:, 1:].sum(axis=0)
  rows, cols = matched_pairs(_iou_from_table(table), threshold)
  # holds[i, j]: prediction j holds half of true object i or more.
  holds = 2 * overlap >= sizes_true[:, None]
  merges = holds.sum(axis=0) >= 2
  counts = dict.fromkeys(ERROR_KINDS, 0)
  for i in np.setdiff1d(np.arange(len(sizes_true)), rows):
    if 2 * overlap[i].sum() < sizes_true[i]:
      counts["missed_as_background"] += 1
    elif np.any(holds[i] & merges):
      counts["missed_merged"] += 1
    else:
      counts["missed_other"] += 1
  for j in np.setdiff1d(np.arange(len(sizes_pred)), cols):
    if 2 * table[0, j + 1] > sizes_pred[j]:
      counts["false_on_background"] += 1
    elif merges[j]:
      counts["false_merged"] += 1
    else:
      counts["false_other"] += 1
  return counts


class MatchingAccumulator:
  """Pools match counts over images; `summary` gives the data-set scores per threshold."""

  def __init__(self, thresholds=THRESHOLDS):
    self.thresholds = tuple(thresholds)
    self._pooled = {t: MatchCounts(0, 0, 0, 0.0) for t in self.thresholds}
    self.images = 0

  def add(self, gt: ArrayLike, pred: ArrayLike) -> dict[float, MatchCounts]:
    counts = matching(gt, pred, thresholds=self.thresholds)
    for t, c in counts.items():
      self._pooled[t] = self._pooled[t] + c
    self.images += 1
    return counts

  def summary(self) -> dict[str, float]:
    """Flat scores: "accuracy@0.5", "f1@0.5", ... for every threshold, and the counts."""
    out = {}
    for t, counts in self._pooled.items():
      for name, value in {
          **counts.scores(),
          "tp": counts.tp,
          "fp": counts.fp,
          "fn": counts.fn,
      }.items():
        out[score_key(name, t)] = value
    return out
