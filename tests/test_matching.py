"""Object matching (StarDist protocol) against hand-computed cases."""

import numpy as np
import pytest

from instseg_jax.metrics import matching


def test_identical_maps_match_every_object():
  gt = np.array([[1, 1, 0, 2], [1, 1, 0, 2]])
  counts = matching.matching(gt, gt * 3)  # other ids, same objects
  assert counts[0.9] == matching.MatchCounts(tp=2, fp=0, fn=0, matched_iou=2.0)
  assert counts[0.5].scores() == {
      "precision": 1.0,
      "recall": 1.0,
      "accuracy": 1.0,
      "f1": 1.0,
      "panoptic_quality": 1.0,
  }


def test_iou_matrix_by_hand():
  gt = np.array([[1, 1, 1, 1, 0, 0]])
  pred = np.array([[0, 0, 5, 5, 5, 5]])
  # 2 shared pixels, 6 in the union.
  np.testing.assert_allclose(matching.iou_matrix(gt, pred), [[2 / 6]])
  counts = matching.matching(gt, pred, thresholds=(0.3, 0.5))
  assert counts[0.3] == matching.MatchCounts(1, 0, 0, pytest.approx(1 / 3))
  assert counts[0.5] == matching.MatchCounts(0, 1, 1, 0.0)


def test_matching_is_one_to_one_and_not_greedy():
  # Greedy (best IoU first) takes A-P at 0.8 and leaves B with Q at 0.0: one true positive.
  # The best one-to-one matching at 0.5 pairs A-Q (0.6) and B-P (0.55): two.
  iou = np.array([[0.8, 0.6], [0.55, 0.0]])
  assert matching.match(iou, 0.5) == matching.MatchCounts(2, 0, 0, pytest.approx(1.15))
  assert matching.match(iou, 0.7) == matching.MatchCounts(1, 1, 1, pytest.approx(0.8))
  # One prediction over two true objects counts once.
  assert matching.match(np.array([[0.6], [0.55]]), 0.5) == matching.MatchCounts(
      1, 0, 1, pytest.approx(0.6)
  )


def test_counts_are_pooled_over_images_not_averaged():
  accumulator = matching.MatchingAccumulator(thresholds=(0.5,))
  gt = np.array([[1, 1, 0, 0]])
  accumulator.add(gt, gt)  # tp 1
  accumulator.add(gt, np.array([[0, 0, 1, 1]]))  # fp 1, fn 1
  accumulator.add(np.zeros((1, 4), int), np.zeros((1, 4), int))  # nothing at all
  summary = accumulator.summary()
  assert summary["accuracy@0.5"] == pytest.approx(1 / 3)  # per-image mean would be 0.5
  assert summary["precision@0.5"] == summary["recall@0.5"] == pytest.approx(0.5)
  assert summary["f1@0.5"] == pytest.approx(0.5)
  assert summary["panoptic_quality@0.5"] == pytest.approx(1 / 2)
  assert (summary["tp@0.5"], summary["fp@0.5"], summary["fn@0.5"]) == (1, 1, 1)


def test_empty_images():
  empty = np.zeros((3, 3), int)
  one = np.pad(np.ones((1, 1), int), 1)
  assert matching.matching(empty, one)[0.5] == matching.MatchCounts(0, 1, 0, 0.0)
  assert matching.matching(one, empty)[0.5] == matching.MatchCounts(0, 0, 1, 0.0)
  assert matching.matching(empty, empty)[0.5].scores()["accuracy"] == 0.0


def test_error_kinds_by_hand():
  # Object 1 is not predicted; 2 and 3 share prediction 7 (IoU 3/7 each); 4 is cut in three
  # pieces (IoU 2/6 each); 11 lies on background; 5 is found.
  gt = np.array([[1, 1, 1, 1, 0, 2, 2, 2, 3, 3, 3, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0, 5, 5]])
  pred = np.array([[0, 0, 0, 0, 0, 7, 7, 7, 7, 7, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 11, 5, 5]])
  kinds = matching.error_kinds(gt, pred)
  assert kinds == {
      "missed_as_background": 1,
      "missed_merged": 2,
      "missed_other": 1,
      "false_on_background": 1,
      "false_merged": 1,
      "false_other": 3,
  }
  counts = matching.matching(gt, pred)[0.5]
  missed = sum(v for k, v in kinds.items() if k.startswith("missed"))
  assert (counts.tp, counts.fn, counts.fp) == (1, missed, sum(kinds.values()) - missed)
  # Found objects are no errors, and an empty prediction misses everything as background.
  assert set(matching.error_kinds(gt, gt).values()) == {0}
  assert matching.error_kinds(gt, np.zeros_like(gt))["missed_as_background"] == 5
