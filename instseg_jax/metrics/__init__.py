"""Evaluation measures: CVPPP (best Dice, SBD, FBD, DiC), COCO mask AP, object matching."""

from instseg_jax.metrics.aggregation import MetricAccumulator
from instseg_jax.metrics.ap import AP_KEYS
from instseg_jax.metrics.ap import MaskAPAccumulator
from instseg_jax.metrics.ap import instance_confidences
from instseg_jax.metrics.ap import mask_ap
from instseg_jax.metrics.cvppp import CVPPP_KEYS
from instseg_jax.metrics.cvppp import abs_dic
from instseg_jax.metrics.cvppp import best_dice
from instseg_jax.metrics.cvppp import contingency_table
from instseg_jax.metrics.cvppp import cvppp_scores
from instseg_jax.metrics.cvppp import dic
from instseg_jax.metrics.cvppp import fg_dice
from instseg_jax.metrics.cvppp import object_ids
from instseg_jax.metrics.cvppp import relabel_consecutive
from instseg_jax.metrics.cvppp import sbd
from instseg_jax.metrics.matching import MatchingAccumulator

__all__ = [
    "AP_KEYS",
    "CVPPP_KEYS",
    "MaskAPAccumulator",
    "MatchingAccumulator",
    "MetricAccumulator",
    "abs_dic",
    "best_dice",
    "contingency_table",
    "cvppp_scores",
    "dic",
    "fg_dice",
    "instance_confidences",
    "mask_ap",
    "object_ids",
    "relabel_consecutive",
    "sbd",
]
