"""evaluate: checkpoint -> the inference path on the eval split -> metrics on each image's own grid.

Writes results.json (summary and per-image scores) and panels.png into the workdir.
"""

import functools
import json
import os
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from instseg_jax import checkpoint
from instseg_jax import inference
from instseg_jax import models
from instseg_jax import parallel
from instseg_jax import state as state_lib
from instseg_jax import tune
from instseg_jax import viz
from instseg_jax.data import pipeline
from instseg_jax.metrics import aggregation
from instseg_jax.metrics import matching

# Printed one per line as "NAME value" at the end of an evaluation.
REPORTED = ("SBD", "FBD", "DiC", "|DiC|")
REPORTED_AP = ("AP", "AP50", "AP75")
REPORTED_MATCHING = ("accuracy@0.5", "f1@0.5", "panoptic_quality@0.5")


def instance_confidences(labels: np.ndarray, foreground: np.ndarray) -> np.ndarray:
  """Confidence of each predicted instance for mask AP: its mean foreground probability.

  Returns:
    (max id + 1,) float, indexed by instance id (entry 0 unused).
  """
  ids = np.asarray(labels).ravel()
  size = int(ids.max(initial=0)) + 1
  sums = np.bincount(ids, weights=np.asarray(foreground, np.float64).ravel(), minlength=size)
  counts = np.bincount(ids, minlength=size)
  return sums / np.maximum(counts, 1)


def load_params(config: ml_collections.ConfigDict, workdir: str):
  """The parameters of the latest checkpoint in workdir."""
  model = models.create_model(config)
  abstract = jax.eval_shape(
      functools.partial(state_lib.create_train_state, model, config), jax.random.key(0))
  sharding = parallel.replicated(parallel.make_mesh())
  checkpointer = checkpoint.Checkpointer(workdir, read_only=True)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(
        f"no checkpoint in {checkpointer.directory}: train first (--mode=train)")
  restored = checkpointer.restore(checkpoint.abstract_like(abstract, sharding))
  checkpointer.close()
  return restored.params


def segmented_examples(config: ml_collections.ConfigDict, params, *,
                       postprocess: inference.PostProcess | None = None
                       ) -> Iterator[tuple[dict, inference.Segmentation]]:
  """(example as stored, its segmentation on its own grid) for the eval split, in order."""
  segmenter = inference.Segmenter(config, params)
  for example in pipeline.eval_records(config, data_dir=config.data.data_dir or None):
    yield example, segmenter(example["image"], postprocess)


def num_eval_examples(config: ml_collections.ConfigDict) -> int:
  """How many examples `segmented_examples` yields; checks first that the split exists."""
  builder = pipeline.prepare(config, data_dir=config.data.data_dir or None)
  pipeline.check_prepared(config, builder)
  size = builder.info.splits[config.data.eval_split].num_examples
  limit = config.data.num_eval_images
  return size if limit <= 0 else min(limit, size)


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, params=None,
             verbose: bool = True) -> dict[str, float]:
  """Scores the model on config.data.eval_split; writes results.json and panels."""
  workdir = os.path.abspath(workdir)
  if params is None:
    params = load_params(config, workdir)
  config = tune.with_tuned(config, workdir, verbose=verbose)
  os.makedirs(workdir, exist_ok=True)
  with_ap = config.eval.mask_ap
  with_classes = config.data.num_classes > 2  # else AP is class-agnostic
  accumulator = aggregation.MetricAccumulator(ap=with_ap)
  matches = matching.MatchingAccumulator() if config.eval.matching else None
  panels, capped = [], []
  with tqdm(total=num_eval_examples(config), desc="evaluate", unit="image",
            disable=not verbose or jax.process_index() != 0) as bar:
    for example, result in segmented_examples(config, params):
      gt = example["instances"]
      ap_inputs = {}
      if with_ap:
        ap_inputs["scores"] = instance_confidences(result.labels, result.foreground)
      if with_ap and with_classes:
        ap_inputs["pred_classes"] = result.classes
        ap_inputs["gt_classes"] = example["semantic"]
      # Negative ground truth (config.data.ignore_label) is scored as neither.
      accumulator.add(example["id"], result.labels, gt, ignore=gt < 0, **ap_inputs)
      if matches is not None:
        # Ignored ground truth (negative) is left out of both maps.
        matches.add(np.maximum(gt, 0), np.where(gt < 0, 0, result.labels))
      if result.capped:
        capped.append(example["id"])
      if len(panels) < config.eval.num_panels:
        panels.append(viz.panel(example["image"], result.labels, gt))
      bar.update(1)
  summary = accumulator.summary()
  if matches is not None:
    summary.update(matches.summary())
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"summary": summary, "per_image": accumulator.per_image(),
                 "capped": capped}, f, indent=1)
    if panels:
      viz.save_png(os.path.join(workdir, "panels.png"), viz.stack_rows(panels))
    if verbose:
      if capped:
        print(f"warning: {len(capped)} images reached config.data.max_instances="
              f"{config.data.max_instances} instances (some may have merged): "
              f"{', '.join(map(str, capped[:5]))}", flush=True)
      reported = (REPORTED + (REPORTED_AP if with_ap else ())
                  + (REPORTED_MATCHING if matches is not None else ()))
      for name in reported:
        print(f"{name} {summary[name]:.3f}", flush=True)
  return summary
