"""evaluate: checkpoint -> jitted predict -> cluster -> metrics -> results.json + panels."""

import functools
import json
import os
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from instseg_jax import checkpoint
from instseg_jax import cluster as cluster_lib
from instseg_jax import models
from instseg_jax import parallel
from instseg_jax import state as state_lib
from instseg_jax import train_step
from instseg_jax import viz
from instseg_jax.data import pipeline
from instseg_jax.metrics import aggregation

# Printed one per line as "NAME value" at the end of an evaluation.
REPORTED = ("SBD", "FBD", "DiC", "|DiC|")
REPORTED_AP = ("AP", "AP50", "AP75")


def instance_scores(labels: np.ndarray, foreground: np.ndarray) -> np.ndarray:
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


def make_segmenter(config: ml_collections.ConfigDict):
  """fn(params, images (B,H,W,3)) -> (labels (B,H,W) np.int32, outputs dict)."""
  model = models.create_model(config)
  predict = jax.jit(functools.partial(
      train_step.predict_step, apply_fn=model.apply,
      fg_threshold=config.cluster.fg_threshold),
      compiler_options=models.compiler_options())
  options = cluster_options(config)
  use_predicted_count = options["method"] == "kmeans" and not options.get("num_clusters")

  def segment(params, images: np.ndarray):
    outputs = predict(params, images)
    if use_predicted_count:
      # The counter head predicts count / max_instances.
      options["num_clusters"] = np.asarray(outputs["count"]) * config.data.max_instances
    labels = cluster_lib.cluster(outputs["embedding"], outputs["mask"], **options)
    return np.asarray(labels, np.int32), outputs

  return segment


# The config.cluster fields each clustering method takes (besides min_size).
METHOD_OPTIONS = {
    "meanshift": ("bandwidth",),
    "fast_meanshift": ("bandwidth",),
    "sklearn_meanshift": ("bandwidth",),
    "kmeans": ("num_clusters",),
    "hdbscan": ("min_cluster_size",),
}


def cluster_options(config: ml_collections.ConfigDict) -> dict:
  """Keyword arguments of cluster_lib.cluster for config.cluster.method."""
  method = config.cluster.method
  if method not in METHOD_OPTIONS:
    raise ValueError(
        f"config.cluster.method={method!r}; choose one of {sorted(METHOD_OPTIONS)}")
  options = {"method": method, "min_size": config.cluster.min_size}
  for name in METHOD_OPTIONS[method]:
    if name in config.cluster:
      options[name] = config.cluster[name]
  return options


def _batches(examples: Iterator[dict], batch_size: int) -> Iterator[list[dict]]:
  batch = []
  for example in examples:
    batch.append(example)
    if len(batch) == batch_size:
      yield batch
      batch = []
  if batch:
    yield batch


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, params=None,
             verbose: bool = True) -> dict[str, float]:
  """Scores the model on config.data.eval_split; writes results.json and panels."""
  workdir = os.path.abspath(workdir)
  if params is None:
    params = load_params(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  segment = make_segmenter(config)
  pipeline.prepare(config, data_dir=config.data.data_dir or None)
  examples = pipeline.eval_examples(
      config, data_dir=config.data.data_dir or None, limit=config.data.num_eval_images)
  with_ap = config.eval.get("mask_ap", True)
  with_classes = config.data.num_classes > 2  # else AP is class-agnostic
  accumulator = aggregation.MetricAccumulator(ap=with_ap)
  panels = []
  batch_size = config.eval.get("batch_size", 8)
  with tqdm(total=config.data.num_eval_images, desc="evaluate", unit="image",
            disable=not verbose or jax.process_index() != 0) as bar:
    for batch in _batches(examples, batch_size):
      images = np.stack([e["image"] for e in batch])
      labels, outputs = segment(params, images)
      foreground = np.asarray(outputs["foreground"])
      classes = np.asarray(outputs["classes"])
      for i, (example, predicted) in enumerate(zip(batch, labels)):
        gt = np.asarray(example["instances"])
        ap_inputs = {}
        if with_ap:
          ap_inputs["scores"] = instance_scores(predicted, foreground[i])
        if with_ap and with_classes:
          ap_inputs["pred_classes"] = classes[i]
          ap_inputs["gt_classes"] = np.asarray(example["semantic"])
        # Negative ground truth (config.data.ignore_label) is scored as neither.
        accumulator.add(example["id"], predicted, gt, ignore=gt < 0, **ap_inputs)
        if len(panels) < config.eval.num_panels:
          panels.append(viz.panel(example["image"], predicted, example["instances"]))
      bar.update(len(batch))
  summary = accumulator.summary()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"summary": summary, "per_image": accumulator.per_image()}, f, indent=1)
    if panels:
      viz.save_png(os.path.join(workdir, "panels.png"), viz.stack_rows(panels))
    if verbose:
      for name in REPORTED + (REPORTED_AP if with_ap else ()):
        print(f"{name} {summary[name]:.3f}", flush=True)
  return summary
