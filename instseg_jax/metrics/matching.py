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
  table = cvppp.contingency_table(gt, pred).astype(np.float64)
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


def match(iou: np.ndarray, threshold: float) -> MatchCounts:
  """The one-to-one matching of an (n_true, n_pred) IoU matrix at one threshold."""
  n_true, n_pred = iou.shape
  if not n_true or not n_pred:
    return MatchCounts(0, n_pred, n_true, 0.0)
  # Each pair at IoU >= t is worth 1; the IoU, scaled below 1 over all pairs, breaks ties.
  cost = -(iou >= threshold).astype(np.float64) - iou / (2 * min(n_true, n_pred))
  rows, cols = optimize.linear_sum_assignment(cost)
  matched = iou[rows, cols]
  ok = matched >= threshold
  tp = int(ok.sum())
  return MatchCounts(tp, n_pred - tp, n_true - tp, float(matched[ok].sum()))


def matching(gt: ArrayLike, pred: ArrayLike, *, thresholds=THRESHOLDS) -> dict[float, MatchCounts]:
  """{threshold: counts} for one image; label maps (H, W), 0 = background."""
  iou = iou_matrix(gt, pred)
  return {t: match(iou, t) for t in thresholds}


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
