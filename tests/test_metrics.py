"""Tests for instseg_jax.metrics, on hand-computed label maps."""

import json
import math

import numpy as np
import pytest

from instseg_jax import metrics
from instseg_jax.metrics import cvppp


def _square(shape=(8, 8), top=0, left=0, size=4, value=1, out=None):
  labels = np.zeros(shape, np.int32) if out is None else out
  labels[top : top + size, left : left + size] = value
  return labels


def _two_objects():
  labels = _square(value=1)
  return _square(top=4, left=4, value=2, out=labels)


def test_relabel_consecutive_keeps_partition_and_background():
  labels = np.array([[0, 7, 7], [300, 0, 7], [300, 42, 0]])
  np.testing.assert_array_equal(
      metrics.relabel_consecutive(labels), [[0, 1, 1], [3, 0, 1], [3, 2, 0]]
  )


def test_relabel_consecutive_negative_and_huge_ids():
  labels = np.array([[0, -5, 2**40], [2**40, 0, -5]], np.int64)
  np.testing.assert_array_equal(metrics.relabel_consecutive(labels), [[0, 1, 2], [2, 0, 1]])


def test_relabel_rejects_float_maps():
  with pytest.raises(TypeError):
    metrics.relabel_consecutive(np.zeros((2, 2), np.float32))


def test_contingency_table_counts_pairs():
  a = np.array([[0, 1, 1], [2, 2, 0]])
  b = np.array([[5, 5, 0], [5, 9, 0]])
  # Rows: background, a=1, a=2; columns: background, b=5, b=9.
  np.testing.assert_array_equal(metrics.contingency_table(a, b), [[1, 1, 0], [1, 1, 0], [0, 1, 1]])


def test_identical_maps():
  gt = _two_objects()
  scores = metrics.cvppp_scores(gt, gt)
  assert scores == {
      "SBD": 1.0,
      "BD_pred_gt": 1.0,
      "BD_gt_pred": 1.0,
      "FBD": 1.0,
      "DiC": 0,
      "|DiC|": 0,
  }


def test_non_consecutive_and_permuted_ids_do_not_matter():
  gt = _two_objects()
  renamed = np.select([gt == 1, gt == 2], [300, 7], 0)
  assert metrics.sbd(renamed, gt) == 1.0
  assert metrics.sbd(gt, renamed) == 1.0
  assert metrics.dic(renamed, gt) == 0


def test_empty_prediction():
  gt = _two_objects()
  pred = np.zeros_like(gt)
  scores = metrics.cvppp_scores(pred, gt)
  assert scores["SBD"] == scores["BD_pred_gt"] == scores["BD_gt_pred"] == 0.0
  assert scores["FBD"] == 0.0
  assert scores["DiC"] == -2 and scores["|DiC|"] == 2


def test_empty_ground_truth():
  pred = _two_objects()
  scores = metrics.cvppp_scores(pred, np.zeros_like(pred))
  assert scores["SBD"] == scores["BD_pred_gt"] == scores["BD_gt_pred"] == 0.0
  assert scores["FBD"] == 0.0
  assert scores["DiC"] == 2 and scores["|DiC|"] == 2


def test_both_empty_follows_scorer_unless_told():
  empty = np.zeros((4, 4), np.uint8)
  # The CVPPP scorer returns 0 for an empty map ("trivial solution").
  assert metrics.cvppp_scores(empty, empty) == {
      "SBD": 0.0,
      "BD_pred_gt": 0.0,
      "BD_gt_pred": 0.0,
      "FBD": 0.0,
      "DiC": 0,
      "|DiC|": 0,
  }
  assert metrics.best_dice(empty, empty, both_empty=1.0) == 1.0
  assert metrics.sbd(empty, empty, both_empty=1.0) == 1.0
  assert metrics.fg_dice(empty, empty, both_empty=1.0) == 1.0
  # Only both empty: one empty map still scores 0.
  assert metrics.sbd(empty, _square((4, 4)), both_empty=1.0) == 0.0


def test_one_object_split_in_two():
  gt = _square()  # one 4x4 object, 16 pixels
  pred = gt.copy()
  pred[3, :4] = 2  # split: 12 pixels (id 1) and 4 pixels (id 2)
  # BD(pred, gt): id 1: 2*12/(12+16) = 6/7; id 2: 2*4/(4+16) = 2/5;
  #   mean = (6/7 + 2/5)/2 = 22/35.
  # BD(gt, pred): the gt object's best match is id 1, 6/7.
  # SBD = min = 22/35; the foregrounds coincide, FBD = 1; one extra object.
  scores = metrics.cvppp_scores(pred, gt)
  assert scores["BD_pred_gt"] == pytest.approx(22 / 35)
  assert scores["BD_gt_pred"] == pytest.approx(6 / 7)
  assert scores["SBD"] == pytest.approx(22 / 35)
  assert metrics.best_dice(pred, gt) == pytest.approx(22 / 35)
  assert metrics.best_dice(gt, pred) == pytest.approx(6 / 7)
  assert scores["FBD"] == 1.0
  assert scores["DiC"] == 1


def test_shifted_object_dice():
  gt = _square()
  pred = _square(left=1, value=5)
  # 16 pixels each, overlap 4 rows x 3 columns = 12: Dice = 24/32.
  assert metrics.sbd(pred, gt) == pytest.approx(0.75)
  assert metrics.fg_dice(pred, gt) == pytest.approx(0.75)


def test_foreground_dice_ignores_instances():
  gt = np.array([[1, 1, 2, 2, 0]])
  pred = np.array([[0, 3, 3, 0, 0]])
  # |pred fg| = 2, |gt fg| = 4, overlap 2: 2*2/6.
  assert metrics.fg_dice(pred, gt) == pytest.approx(2 / 3)


def test_dic_sign():
  gt = _square()
  pred = _two_objects()
  pred[0, 0] = 3
  assert metrics.dic(pred, gt) == 2
  assert metrics.dic(gt, pred) == -2
  assert metrics.abs_dic(gt, pred) == 2


def test_ignore_pixels_leave_cvppp_measures():
  gt = _square(value=255, out=_square(top=4, left=4, value=1))
  pred = _square(top=4, left=4, value=9)
  assert metrics.cvppp_scores(pred, gt)["DiC"] == -1
  assert metrics.cvppp_scores(pred, gt, ignore=255)["SBD"] == 1.0


def test_accumulator_means_and_per_image():
  gt = _square()
  split = gt.copy()
  split[3, :4] = 2
  acc = metrics.MetricAccumulator()
  acc.add("same", gt, gt)
  acc.add("split", split, gt)  # DiC +1
  acc.add("missing", np.zeros_like(gt), _two_objects())  # DiC -2
  summary = acc.summary()
  assert summary["SBD"] == pytest.approx((1 + 22 / 35 + 0) / 3)
  assert summary["BD_gt_pred"] == pytest.approx((1 + 6 / 7 + 0) / 3)
  assert summary["DiC"] == pytest.approx(-1 / 3)
  assert summary["|DiC|"] == pytest.approx(1.0)
  per_image = acc.per_image()
  assert [r["image_id"] for r in per_image] == ["same", "split", "missing"]
  assert per_image[1]["DiC"] == 1 and per_image[2]["|DiC|"] == 2
  json.dumps({"summary": summary, "per_image": per_image})
  with pytest.raises(ValueError):
    acc.add(b"same", gt, gt)  # bytes ids, as pipelines yield them, are str


def test_accumulator_ids_become_json_types():
  acc = metrics.MetricAccumulator()
  acc.add(np.int64(3), _square(), _square())
  acc.add(np.array(b"leaf"), _square(), _square())
  assert [r["image_id"] for r in acc.per_image()] == [3, "leaf"]
  json.dumps(acc.per_image())


def test_accumulator_with_ap():
  gt = _two_objects()
  acc = metrics.MetricAccumulator(ap=True)
  acc.add(0, gt * 3, gt)
  summary = acc.summary()
  assert summary["SBD"] == 1.0
  assert [summary[k] for k in metrics.AP_KEYS] == pytest.approx([1, 1, 1])


def test_empty_accumulator_reports_nan():
  summary = metrics.MetricAccumulator(ap=True).summary()
  assert all(math.isnan(v) for v in summary.values())


def test_mask_ap_perfect_prediction():
  gts = [_two_objects(), _square(value=4)]
  preds = [np.where(g > 0, 30 - g, 0) for g in gts]  # ids renamed
  # pycocotools' precision is tp / (tp + fp + eps), hence approx.
  assert metrics.mask_ap(preds, gts) == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})


def test_mask_ap_iou_between_thresholds():
  gt = _square((12, 12), size=10)
  pred = _square((12, 12), left=2, size=10)
  # Overlap 10x8 = 80, union 120: IoU 2/3, a hit at thresholds 0.50..0.65
  # (4 of 10) only, so AP = 0.4.
  result = metrics.mask_ap([pred], [gt])
  assert result["AP50"] == pytest.approx(1.0)
  assert result["AP75"] == 0.0
  assert result["AP"] == pytest.approx(0.4)


def test_mask_ap_bad_prediction_is_lower():
  gt = _two_objects()
  bad = _square(top=2, left=2)  # IoU 4/28 with either object
  assert metrics.mask_ap([bad], [gt])["AP"] == 0.0


def test_mask_ap_images_without_predictions_or_ground_truth():
  gt = _two_objects()
  empty = np.zeros_like(gt)
  assert metrics.mask_ap([empty], [gt])["AP"] == 0.0
  # Half the objects found at precision 1: 51 of 101 recall points.
  half = metrics.mask_ap([gt, empty], [gt, gt])
  assert half["AP50"] == pytest.approx(51 / 101)
  assert math.isnan(metrics.mask_ap([gt], [empty])["AP"])
  assert math.isnan(metrics.mask_ap([empty], [empty])["AP"])


def test_mask_ap_scores_rank_false_positives():
  gt = _two_objects()
  empty = np.zeros_like(gt)
  preds, gts = [gt, _square(value=3)], [gt, empty]
  low = metrics.mask_ap(preds, gts, scores=[None, {3: 0.5}])
  assert low["AP"] == pytest.approx(1.0)
  # Ranked first, the false positive costs precision at every recall.
  high = metrics.mask_ap(preds, gts, scores=[{1: 0.9, 2: 0.9}, {3: 1.0}])
  assert high["AP"] < 1.0


def test_mask_ap_score_array_indexed_by_id():
  gt = _two_objects()
  pred = gt.copy()
  pred[pred == 2] = 4
  table = np.array([0.0, 0.9, 0.0, 0.0, 0.8])
  result = metrics.mask_ap([pred], [gt], scores=[table])
  assert result["AP"] == pytest.approx(1.0)


def test_mask_ap_ignore_region_is_crowd():
  gt = _square(top=4, left=4, value=1, out=_square(value=255))
  pred = _square(top=4, left=4, value=1, out=_square(value=2))
  # Ranked first, the prediction inside the void region would be a false
  # alarm; as crowd it is neither hit nor false alarm.
  scores = [{1: 0.5, 2: 0.9}]
  assert metrics.mask_ap([pred], [gt], scores=scores, ignore=255)["AP"] == pytest.approx(1.0)
  void = gt == 255
  gt_clean = np.where(void, 0, gt)
  assert metrics.mask_ap([pred], [gt_clean], scores=scores, ignore=[void])["AP"] == pytest.approx(
      1.0
  )
  assert metrics.mask_ap([pred], [gt_clean], scores=scores)["AP"] < 1.0


def test_mask_ap_classes():
  gt = _two_objects()
  gt_classes = {1: 1, 2: 2}
  right = metrics.mask_ap([gt], [gt], pred_classes=[gt_classes], gt_classes=[gt_classes])
  assert right["AP"] == pytest.approx(1.0)
  # A class map votes per instance; swapping the classes misses both.
  class_map = np.select([gt == 1, gt == 2], [2, 1], 0)
  wrong = metrics.mask_ap([gt], [gt], pred_classes=[class_map], gt_classes=[gt_classes])
  assert wrong["AP"] == 0.0


def test_instance_confidences_of_sparse_ids_are_looked_up_by_id():
  labels = np.array([[0, 4, 4], [9, 9, 0]])
  prob = np.array([[0.1, 0.2, 0.4], [1.0, 0.5, 0.0]])
  confidences = metrics.instance_confidences(labels, prob)
  assert confidences.shape == (10,)
  assert confidences[[4, 9]] == pytest.approx([0.3, 0.75])
  assert not confidences[[1, 2, 3, 5, 6, 7, 8]].any()  # no such instances
  with pytest.raises(ValueError, match="shape"):
    metrics.instance_confidences(labels, prob[:, :2])


def test_contingency_is_fast_on_large_maps():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 400, size=(512, 512))
  table = cvppp.contingency_table(labels, labels)
  assert table.shape == (400, 400)
  assert np.count_nonzero(table - np.diag(np.diag(table))) == 0


def test_ignored_ground_truth_is_grey_in_pictures_and_left_out_of_the_scores():
  from instseg_jax import viz  # pylint: disable=g-import-not-at-top
  from instseg_jax.metrics import aggregation  # pylint: disable=g-import-not-at-top

  gt = np.array([[1, 1, -1], [0, 0, -1]])
  colours = viz.colorize(gt)
  assert (colours[:, 2] == viz.IGNORED_GREY).all() and (colours[1, :2] == 0).all()
  assert colours[0, 0].any() and not (colours[0, 0] == viz.IGNORED_GREY).all()
  pred = np.array([[1, 1, 2], [0, 0, 2]])  # an extra instance only on ignored pixels
  accumulator = aggregation.MetricAccumulator()
  record = accumulator.add("a", pred, gt, ignore=gt < 0)
  assert record["SBD"] == pytest.approx(1.0) and record["DiC"] == 0


def test_instance_confidences_are_mean_foreground_probabilities_by_id():
  labels = np.array([[0, 1, 1], [3, 3, 0]])
  foreground = np.array([[0.1, 0.8, 0.6], [0.9, 0.5, 0.2]])
  np.testing.assert_allclose(
      metrics.instance_confidences(labels, foreground), [0.15, 0.7, 0.0, 0.7]
  )


def _dense(count=300, side=3):
  """`count` separate side x side squares on one image, ids 1..count (a dense nuclei image)."""
  per_row = 20
  rows = -(-count // per_row)
  labels = np.zeros((rows * (side + 1), per_row * (side + 1)), np.int32)
  for k in range(count):
    top, left = (k // per_row) * (side + 1), (k % per_row) * (side + 1)
    labels[top : top + side, left : left + side] = k + 1
  return labels


def test_mask_ap_keeps_every_detection_of_a_dense_image():
  gt = _dense()
  # Perfect predictions: every one of the 300 instances counts, not only the first 100.
  assert metrics.mask_ap([gt], [gt]) == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
  acc = metrics.MetricAccumulator(ap=True)
  acc.add(0, gt, gt)
  assert acc.summary()["AP"] == pytest.approx(1.0)
  # An explicit limit still applies.
  assert metrics.mask_ap([gt], [gt], max_dets=100)["AP"] < 0.5
