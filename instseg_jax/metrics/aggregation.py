"""Per-image metrics collected over a data set, ready for results.json.

CVPPP measures are computed as each image arrives and averaged at the end:
DiC is the mean of the signed per-image differences (bias), |DiC| the mean of
their absolute values (error), as the challenge reports them. Mask AP is a
data-set level measure, so it has no per-image value; its images are kept as
run lengths until `summary`.
"""

from collections.abc import Hashable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from instseg_jax.metrics import ap as ap_lib
from instseg_jax.metrics import cvppp


class MetricAccumulator:
  """Accumulates CVPPP scores per image and, optionally, mask AP.

  Usage:
    acc = MetricAccumulator(ap=True)
    for image_id, pred, gt in ...:
      acc.add(image_id, pred, gt)
    json.dump({"summary": acc.summary(), "per_image": acc.per_image()}, f)
  """

  def __init__(
      self,
      *,
      cvppp_metrics: bool = True,
      ap: bool = False,
      both_empty: float = 0.0,
      max_dets: int | None = None,
  ):
    """Initializes an empty accumulator.

    Args:
      cvppp_metrics: compute SBD, both BDs, FBD, DiC and |DiC| per image.
      ap: also compute COCO-style mask AP, AP50, AP75 over the data set.
      both_empty: BD, SBD and FBD of an image where neither map has an
        object (the CVPPP scorer's 0.0 by default).
      max_dets: most detections per image for mask AP; None = all of them.
    """
    if not (cvppp_metrics or ap):
      raise ValueError("nothing to measure: enable cvppp_metrics or ap")
    self.cvppp_metrics = cvppp_metrics
    self.both_empty = both_empty
    self._ap = ap_lib.MaskAPAccumulator(max_dets=max_dets) if ap else None
    self._records: list[dict[str, Any]] = []
    self._seen: set[Hashable] = set()

  def __len__(self) -> int:
    return len(self._records)

  def add(
      self,
      image_id: Hashable,
      pred: ArrayLike,
      gt: ArrayLike,
      *,
      scores: ap_lib.Scores | None = None,
      pred_classes: ap_lib.Classes | None = None,
      gt_classes: ap_lib.Classes | None = None,
      ignore: int | ArrayLike | None = None,
  ) -> dict[str, Any]:
    """Scores one image and records it.

    Args:
      image_id: unique name of the image; NumPy scalars and bytes (as data
        pipelines yield them) become int/float/str so results.json can hold
        them.
      pred: (H, W) predicted label map, 0 = background, ids arbitrary.
      gt: (H, W) ground-truth label map.
      scores: instance confidences for AP ({id: score} or an array indexed by
        id); None gives every instance 1.0.
      pred_classes: {id: class} or an (H, W) class map, for AP.
      gt_classes: same for the ground truth.
      ignore: a label value of `gt` or an (H, W) boolean mask; left out of
        the CVPPP measures, crowd for AP.

    Returns:
      The image's record: {"image_id", <metric>: value, ...}.
    """
    image_id = _plain_id(image_id)
    if image_id in self._seen:
      raise ValueError(f"image {image_id!r} was already added")
    pred, gt = np.asarray(pred), np.asarray(gt)
    record: dict[str, Any] = {"image_id": image_id}
    if self.cvppp_metrics:
      record.update(cvppp.cvppp_scores(pred, gt, ignore=ignore, both_empty=self.both_empty))
    if self._ap is not None:
      self._ap.add(
          pred, gt, scores=scores, pred_classes=pred_classes, gt_classes=gt_classes, ignore=ignore
      )
    self._seen.add(image_id)
    self._records.append(record)
    return record

  def per_image(self) -> list[dict[str, Any]]:
    """Per-image records in the order added (copies)."""
    return [dict(record) for record in self._records]

  def summary(self) -> dict[str, float]:
    """Mean of every per-image metric, plus AP, AP50, AP75 when enabled.

    Returns:
      {metric: value}; NaN for metrics over zero images.
    """
    result: dict[str, float] = {}
    if self.cvppp_metrics:
      for key in cvppp.CVPPP_KEYS:
        values = [record[key] for record in self._records]
        result[key] = float(np.mean(values)) if values else float("nan")
    if self._ap is not None:
      result.update(
          self._ap.compute() if len(self._ap) else {key: float("nan") for key in ap_lib.AP_KEYS}
      )
    return result


def _plain_id(image_id: Any) -> Hashable:
  if isinstance(image_id, np.ndarray) and image_id.ndim == 0:
    image_id = image_id.item()
  if isinstance(image_id, np.generic):
    image_id = image_id.item()
  if isinstance(image_id, bytes):
    image_id = image_id.decode("utf-8")
  return image_id
