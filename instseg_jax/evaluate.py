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
  accumulator = aggregation.MetricAccumulator()
  panels = []
  batch_size = config.eval.get("batch_size", 8)
  with tqdm(total=config.data.num_eval_images, desc="evaluate", unit="image",
            disable=not verbose or jax.process_index() != 0) as bar:
    for batch in _batches(examples, batch_size):
      images = np.stack([e["image"] for e in batch])
      labels, _ = segment(params, images)
      for example, predicted in zip(batch, labels):
        # Negative ground truth (config.data.ignore_label) is scored as neither.
        accumulator.add(example["id"], predicted, example["instances"],
                        ignore=np.asarray(example["instances"]) < 0)
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
      for name in REPORTED:
        print(f"{name} {summary[name]:.3f}", flush=True)
  return summary
