"""COCO-style mask AP, AP50 and AP75 of label maps, through pycocotools.

Instances are RLE-encoded as each image is added, so a data set is held as
compact run lengths rather than full label maps; `COCOeval` (iouType "segm")
runs once at the end on an in-memory ground truth and detections.

Conventions:

* Scores rank the detections. Without them every instance scores 1.0, and ties
  keep the order in which they were added; `instance_confidences` gives a
  better proxy from a foreground probability map.
* Without classes everything is category 1; with them AP is the mean over the
  categories that have ground truth, as in COCO.
* Ignored pixels (a label value of the ground truth such as VOC's 255, or a
  boolean mask) become one crowd region per image and category: detections
  lying mostly inside it are neither true nor false positives.
* Images without ground truth still contribute their detections as false
  positives; images without predictions contribute misses. With no ground
  truth anywhere AP is undefined and reported as NaN.
* Only the "all" area range is evaluated. Every detection of an image counts
  unless `max_dets` caps them: COCO's 100 would drop most of a dense nuclei
  image (up to 375 instances in DSB2018).
"""

import contextlib
import io
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from pycocotools import coco as coco_lib
from pycocotools import cocoeval
from pycocotools import mask as mask_lib

from instseg_jax.metrics import cvppp

AP_KEYS = ("AP", "AP50", "AP75")

# Bounds the (H, W, chunk) uint8 stack handed to the RLE encoder.
_ENCODE_CHUNK = 32
_ALL_AREAS = [0.0, 1e10]

Scores = Mapping[int, float] | ArrayLike
Classes = Mapping[int, int] | ArrayLike


def instance_confidences(labels: ArrayLike, foreground: ArrayLike) -> np.ndarray:
  """Confidence of each predicted instance for mask AP: its mean foreground probability.

  Args:
    labels: (H, W) label map, 0 = background, instance ids >= 1.
    foreground: (H, W) foreground probability (e.g. softmax of the semantic
      head, summed over the object classes).

  Returns:
    (max id + 1,) float, indexed by instance id (entry 0 unused), as `scores`
    of `mask_ap` and `MaskAPAccumulator.add` take it.
  """
  ids = np.asarray(labels).ravel()
  foreground = np.asarray(foreground, np.float64)
  if foreground.shape != np.shape(labels):
    raise ValueError(f"foreground has shape {foreground.shape}, " f"label map {np.shape(labels)}")
  size = int(ids.max(initial=0)) + 1
  sums = np.bincount(ids, weights=foreground.ravel(), minlength=size)
  counts = np.bincount(ids, minlength=size)
  return sums / np.maximum(counts, 1)


def _encode(labels: np.ndarray, ids: np.ndarray) -> list[dict]:
  rles = []
  for start in range(0, ids.size, _ENCODE_CHUNK):
    chunk = ids[start : start + _ENCODE_CHUNK]
    masks = np.asfortranarray((labels[:, :, None] == chunk[None, None, :]).astype(np.uint8))
    rles.extend(mask_lib.encode(masks))
  return rles


def _instance_classes(labels: np.ndarray, ids: np.ndarray, classes: Classes | None) -> np.ndarray:
  """(n,) category of each instance; 0 where it has none.

  A class map votes: an instance takes the most frequent nonzero class under
  its pixels, so a few mislabelled boundary pixels do not change it.
  """
  if classes is None:
    return np.ones(ids.size, np.int64)
  if isinstance(classes, Mapping):
    return np.array([int(classes.get(int(i), 0)) for i in ids], np.int64)
  class_map = np.asarray(classes)
  if class_map.shape != labels.shape:
    raise ValueError(f"class map has shape {class_map.shape}, " f"label map {labels.shape}")
  class_ids, class_rel = np.unique(class_map, return_inverse=True)
  rel = cvppp.relabel_consecutive(labels).ravel().astype(np.int64)
  votes = np.bincount(
      rel * class_ids.size + class_rel.ravel(), minlength=(ids.size + 1) * class_ids.size
  )
  votes = votes.reshape(ids.size + 1, class_ids.size)[1:]
  votes[:, class_ids == 0] = 0
  winner = class_ids[votes.argmax(axis=1)].astype(np.int64)
  return np.where(votes.max(axis=1) > 0, winner, 0)


def _lookup_scores(ids: np.ndarray, scores: Scores | None) -> np.ndarray:
  if scores is None:
    return np.ones(ids.size)
  if isinstance(scores, Mapping):
    missing = [int(i) for i in ids if int(i) not in scores]
    if missing:
      raise KeyError(f"no score for predicted instances {missing}")
    return np.array([float(scores[int(i)]) for i in ids])
  table = np.asarray(scores, dtype=np.float64)
  if ids.size and (ids.min() < 0 or ids.max() >= table.size):
    raise ValueError(
        f"a score array is indexed by instance id; it has "
        f"{table.size} entries, the largest id is {ids.max()}"
    )
  return table[ids]


def _annotations(labels: np.ndarray, ids: np.ndarray, categories: np.ndarray) -> list[dict]:
  keep = categories > 0
  ids, categories = ids[keep], categories[keep]
  rles = _encode(labels, ids)
  if not rles:
    return []
  # pycocotools' area overflows for more than 255 masks in one call (a uint8 count).
  areas = np.concatenate(
      [mask_lib.area(rles[i : i + _ENCODE_CHUNK]) for i in range(0, len(rles), _ENCODE_CHUNK)]
  )
  boxes = mask_lib.toBbox(rles)
  return [
      {
          "segmentation": rle,
          "area": float(area),
          "bbox": box.tolist(),
          "category_id": int(category),
          "iscrowd": 0,
      }
      for rle, area, box, category in zip(rles, areas, boxes, categories, strict=True)
  ]


class MaskAPAccumulator:
  """Collects images one at a time; `compute` runs COCOeval over all of them.

  Attributes:
    max_dets: most detections kept per image, by score; None = all of them.
  """

  def __init__(self, *, max_dets: int | None = None):
    self.max_dets = max_dets
    self._images: list[dict] = []
    self._gts: list[dict] = []
    self._dts: list[dict] = []
    self._crowds: list[tuple[int, dict]] = []
    self._categories: set[int] = set()

  def __len__(self) -> int:
    return len(self._images)

  def add(
      self,
      pred: ArrayLike,
      gt: ArrayLike,
      *,
      scores: Scores | None = None,
      pred_classes: Classes | None = None,
      gt_classes: Classes | None = None,
      ignore: int | ArrayLike | None = None,
  ) -> None:
    """Adds one image.

    Args:
      pred: (H, W) predicted label map, 0 = background, ids arbitrary.
      gt: (H, W) ground-truth label map.
      scores: confidence of each predicted instance, as {id: score} or as an
        array indexed by id; None gives every instance 1.0.
      pred_classes: category of each predicted instance, as {id: class} or as
        an (H, W) class map (majority vote of nonzero classes per instance).
        Instances without a class are dropped.
      gt_classes: same for the ground truth; every instance must get a class.
      ignore: a label value of `gt` or an (H, W) boolean mask of pixels to
        treat as crowd; those pixels are never a ground-truth instance.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 2 or pred.shape != gt.shape:
      raise ValueError(f"need two (H, W) maps of one shape, got {pred.shape} " f"and {gt.shape}")
    crowd = None
    if ignore is not None:
      crowd = cvppp.ignore_mask(gt, ignore)
      gt = np.where(crowd, 0, gt)

    gt_ids = cvppp.object_ids(gt)
    gt_categories = _instance_classes(gt, gt_ids, gt_classes)
    if np.any(gt_categories == 0):
      raise ValueError(
          "gt_classes leaves ground-truth instances "
          f"{gt_ids[gt_categories == 0].tolist()} without a class"
      )
    pred_ids = cvppp.object_ids(pred)
    pred_categories = _instance_classes(pred, pred_ids, pred_classes)
    pred_scores = _lookup_scores(pred_ids, scores)

    # Options are validated first so a bad one leaves no half-added image.
    image_id = len(self._images) + 1
    height, width = gt.shape
    self._images.append({"id": image_id, "height": height, "width": width})
    for ann in _annotations(gt, gt_ids, gt_categories):
      self._gts.append({**ann, "image_id": image_id})
    keep = pred_categories > 0
    dts = _annotations(pred, pred_ids, pred_categories)
    for ann, score in zip(dts, pred_scores[keep], strict=True):
      self._dts.append({**ann, "image_id": image_id, "score": float(score)})
    if crowd is not None and crowd.any():
      self._crowds.append((image_id, _encode(crowd.astype(np.uint8), np.array([1]))[0]))
    self._categories.update(int(c) for c in gt_categories)
    self._categories.update(int(c) for c in pred_categories[keep])

  def compute(self) -> dict[str, float]:
    """AP (mean over IoU 0.50:0.95), AP50 and AP75 over the added images.

    Returns:
      {"AP", "AP50", "AP75"} in [0, 1]; NaN where no ground truth exists.
    """
    categories = sorted(self._categories) or [1]
    gts = list(self._gts)
    # The ignore region is class-agnostic (void), so it is crowd in each one.
    for image_id, rle in self._crowds:
      area = float(mask_lib.area(rle))
      box = mask_lib.toBbox(rle).tolist()
      gts.extend(
          {
              "segmentation": rle,
              "area": area,
              "bbox": box,
              "category_id": c,
              "iscrowd": 1,
              "image_id": image_id,
          }
          for c in categories
      )
    if not any(not g["iscrowd"] for g in gts):
      return {key: float("nan") for key in AP_KEYS}

    info = {"images": self._images, "categories": [{"id": c, "name": str(c)} for c in categories]}
    # Ids start at 1: COCOeval marks "unmatched" with id 0.
    gts = [{**g, "id": k} for k, g in enumerate(gts, start=1)]
    dts = [{**d, "id": k} for k, d in enumerate(self._dts, start=1)]
    with contextlib.redirect_stdout(io.StringIO()):
      coco_gt = _in_memory_coco({**info, "annotations": gts})
      coco_dt = _in_memory_coco({**info, "annotations": dts})
      evaluator = cocoeval.COCOeval(coco_gt, coco_dt, iouType="segm")
      evaluator.params.imgIds = [image["id"] for image in self._images]
      evaluator.params.areaRng = [_ALL_AREAS]
      evaluator.params.areaRngLbl = ["all"]
      evaluator.params.maxDets = [self._max_dets_per_image()]
      evaluator.evaluate()
      evaluator.accumulate()
    # [iou threshold, recall, category, area range, max dets]; -1 = no gt.
    precision = evaluator.eval["precision"][:, :, :, 0, 0]
    thresholds = evaluator.params.iouThrs
    return {
        "AP": _mean_defined(precision),
        "AP50": _mean_defined(precision[np.isclose(thresholds, 0.5)]),
        "AP75": _mean_defined(precision[np.isclose(thresholds, 0.75)]),
    }

  def _max_dets_per_image(self) -> int:
    """max_dets, or when None the most detections any image has (at least 1)."""
    if self.max_dets is not None:
      return self.max_dets
    per_image = np.bincount([d["image_id"] for d in self._dts] or [0])
    return max(1, int(per_image.max()))


def _in_memory_coco(dataset: dict) -> coco_lib.COCO:
  coco = coco_lib.COCO()
  coco.dataset = dataset
  coco.createIndex()
  return coco


def _mean_defined(precision: np.ndarray) -> float:
  defined = precision[precision > -1]
  return float(defined.mean()) if defined.size else float("nan")


def mask_ap(
    preds: Sequence[ArrayLike],
    gts: Sequence[ArrayLike],
    *,
    scores: Sequence[Scores | None] | None = None,
    pred_classes: Sequence[Classes | None] | None = None,
    gt_classes: Sequence[Classes | None] | None = None,
    ignore: int | Sequence[ArrayLike | None] | None = None,
    max_dets: int | None = None,
) -> dict[str, float]:
  """COCO-style mask AP, AP50 and AP75 over a list of images.

  Args:
    preds: per image, an (H, W) predicted label map, 0 = background.
    gts: per image, an (H, W) ground-truth label map.
    scores: per image, instance confidences ({id: score} or an array indexed
      by id) or None; None overall gives every instance 1.0.
    pred_classes: per image, {id: class} or an (H, W) class map; None is
      category 1 everywhere.
    gt_classes: same for the ground truth.
    ignore: a label value of the ground truth to treat as crowd (e.g. 255),
      or per image an (H, W) boolean crowd mask or None.
    max_dets: most detections kept per image, by score; None = all of them.

  Returns:
    {"AP", "AP50", "AP75"} in [0, 1]; NaN when no image has ground truth.
  """
  if len(preds) != len(gts):
    raise ValueError(f"{len(preds)} predictions for {len(gts)} ground truths")
  n = len(gts)

  def per_image(option, name):
    if option is None:
      return [None] * n
    if len(option) != n:
      raise ValueError(f"{name} has {len(option)} entries for {n} images")
    return option

  if ignore is None or isinstance(ignore, (int, np.integer)):
    ignores = [ignore] * n
  else:
    ignores = per_image(ignore, "ignore")
  accumulator = MaskAPAccumulator(max_dets=max_dets)
  for pred, gt, score, pred_class, gt_class, ign in zip(
      preds,
      gts,
      per_image(scores, "scores"),
      per_image(pred_classes, "pred_classes"),
      per_image(gt_classes, "gt_classes"),
      ignores,
      strict=True,
  ):
    accumulator.add(
        pred, gt, scores=score, pred_classes=pred_class, gt_classes=gt_class, ignore=ign
    )
  return accumulator.compute()
