"""Is it the embeddings or the clustering? A trained model scored with and without its clustering.

    python benchmarks/centre_oracle.py --config=configs/cvppp_cpu.py --workdir=runs/cvppp_cpu \
        --config.data.manual_dir=../shared/data/cvppp_a1_train

For each image of the eval split (the first --images, 0 = all), the network runs once, and the
same embeddings and foreground are turned into instances three ways, each scored on the image's
own grid:

* clustering: the config's post-processing (the tuned one if WORKDIR has it), what predict gives;
* true centres: each foreground pixel joins the true instance whose mean embedding is nearest,
  the ceiling of any clustering that finds the right centres in these embeddings;
* tighter by F: every pixel moved to F of its distance from its true instance's mean, then
  clustered as the config says: what tighter instances would give (the lever of training).

It also prints, by instance size, how far the pixels of an instance spread around their mean and
how far the nearest other mean is. A large gap between "clustering" and "true centres" with
wide spreads says: train for tighter instances; a small gap says: the embeddings are the limit.
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

# The configs are Python modules of the repository, beside this folder.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from instseg_jax import evaluate
from instseg_jax import inference
from instseg_jax import tune
from instseg_jax.data import pipeline
from instseg_jax.data import transforms
from instseg_jax.metrics import aggregation
from instseg_jax.metrics import matching

# pylint: enable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("workdir", None, "The trained workdir.")
flags.DEFINE_integer("images", 0, "Images of the eval split; 0 = all of them.")
flags.DEFINE_list("tighter", ["0.8"], "Spread factors F of the 'tighter by F' rows.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.")
FLAGS = flags.FLAGS

SIZE_BINS = (0, 100, 300, 1000, np.inf)  # instance sizes in pixels of the network's grid


def true_means(embedding: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(ids (K,), mean embeddings (K, D)) of the instances of `truth` on the embedding's grid."""
  ids = np.unique(truth[truth > 0])
  if not len(ids):
    return ids, np.zeros((0, embedding.shape[-1]), np.float32)
  return ids, np.stack([embedding[truth == i].mean(0) for i in ids])


def nearest_row(points: np.ndarray, centres: np.ndarray, chunk: int = 16384) -> np.ndarray:
  """Index of the nearest centre (K, D) of each point (N, D), a chunk of points at a time."""
  squared = (centres**2).sum(-1)
  return np.concatenate(
      [
          np.argmin(squared[None] - 2.0 * points[i : i + chunk] @ centres.T, axis=-1)
          for i in range(0, len(points), chunk)
      ]
      or [np.zeros(0, np.int64)]
  )


def nearest_true_centre(
    output: inference.NetworkOutput, truth: np.ndarray, fg_threshold: float
) -> np.ndarray:
  """Labels on the image's grid: each foreground pixel joins the nearest true instance mean."""
  _, means = true_means(output.embedding, truth)
  foreground = output.foreground > fg_threshold
  if not len(means):
    return np.zeros(output.shape, np.int32)
  labels = np.zeros(foreground.shape, np.int32)
  labels[foreground] = nearest_row(output.embedding[foreground], means) + 1
  full = inference.upsample_labels(
      inference.nearest_labelled(labels),
      inference.resize_float(output.foreground, output.shape) > fg_threshold,
  )
  return transforms.renumber_instances(full)[0]


def tightened(output: inference.NetworkOutput, truth: np.ndarray, factor: float):
  """output with each true instance's pixels moved to `factor` of their distance from its mean."""
  embedding = output.embedding.copy()
  for i, mean in zip(*true_means(embedding, truth)):
    inside = truth == i
    embedding[inside] = mean + factor * (embedding[inside] - mean)
  return dataclasses.replace(output, embedding=embedding)


def spread_rows(output: inference.NetworkOutput, truth: np.ndarray) -> list[tuple]:
  """(size, median distance to own mean, distance to the nearest other mean) per instance."""
  ids, means = true_means(output.embedding, truth)
  rows = []
  for k, i in enumerate(ids):
    own = np.linalg.norm(output.embedding[truth == i] - means[k], axis=-1)
    others = np.delete(means, k, axis=0)
    nearest = np.linalg.norm(others - means[k], axis=-1).min() if len(others) else np.nan
    rows.append((int((truth == i).sum()), float(np.median(own)), float(nearest)))
  return rows


class Scores:
  """CVPPP scores and pooled matching of one way of making instances."""

  def __init__(self):
    self.cvppp = aggregation.MetricAccumulator()
    self.matching = matching.MatchingAccumulator()

  def add(self, image_id: str, predicted: np.ndarray, truth: np.ndarray) -> None:
    self.cvppp.add(image_id, predicted, truth, ignore=truth < 0)
    self.matching.add(np.maximum(truth, 0), np.where(truth < 0, 0, predicted))

  def line(self, name: str) -> str:
    s = {**self.cvppp.summary(), **self.matching.summary()}
    return (
        f"{name:22s} SBD {s['SBD']:.3f}  |DiC| {s['|DiC|']:.2f}  DiC {s['DiC']:+.2f}  "
        f"accuracy@0.5 {s['accuracy@0.5']:.3f}"
    )


def main(argv):
  del argv
  if not FLAGS.workdir:
    sys.exit("usage: centre_oracle.py --config=CONFIG --workdir=WORKDIR")
  config = tune.with_tuned(FLAGS.config, FLAGS.workdir)
  segmenter = inference.Segmenter(config, evaluate.load_params(config, FLAGS.workdir))
  postprocess = segmenter.postprocess
  factors = [float(f) for f in FLAGS.tighter]
  ways = {"clustering": Scores(), "true centres": Scores()}
  ways.update({f"tighter by {f:g}": Scores() for f in factors})
  spreads = []
  for example in pipeline.eval_records(
      config, data_dir=config.data.data_dir or None, limit=FLAGS.images
  ):
    image_id, truth = example["id"], example["instances"]
    output = segmenter.network(example["image"])
    on_grid = transforms.resize_labels(np.maximum(truth, 0), size=output.embedding.shape[:2])
    ways["clustering"].add(image_id, inference.apply_postprocess(output, postprocess).labels, truth)
    ways["true centres"].add(
        image_id, nearest_true_centre(output, on_grid, postprocess.fg_threshold), truth
    )
    for f in factors:
      tight = inference.apply_postprocess(tightened(output, on_grid, f), postprocess)
      ways[f"tighter by {f:g}"].add(image_id, tight.labels, truth)
    spreads.extend(spread_rows(output, on_grid))
  print(f"{len(ways['clustering'].cvppp)} images of {config.data.eval_split!r}, on their own grid:")
  for name, scores in ways.items():
    print(scores.line(name))
  table = np.asarray(spreads, float)
  print("instance size (network grid): median spread around its mean, median nearest other mean")
  for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
    rows = table[(table[:, 0] >= low) & (table[:, 0] < high)]
    if len(rows):
      print(
          f"  [{low:g}, {high:g}) px: {len(rows):4d} instances, spread {np.median(rows[:, 1]):.2f},"
          f" nearest mean {np.nanmedian(rows[:, 2]):.2f}"
      )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
