"""evaluate: checkpoint -> the inference path on the eval split -> metrics on each image's own grid.

Writes into the workdir:
  results.json    summary and per-image scores
  per_image.csv   the per-image scores as a table
  panels.png      input | prediction | ground truth of the first config.eval.num_panels images
  worst.png       the same for the images that score worst by the main metric (`main_metric`)
  embedding.png   the first image, its embedding on three principal axes as RGB, and its
                  foreground pixels' embeddings on two axes coloured by true instance
"""

import csv
import functools
import json
import math
import os
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from instseg_jax import checkpoint
from instseg_jax import inference
from instseg_jax import metric_writers
from instseg_jax import models
from instseg_jax import parallel
from instseg_jax import state as state_lib
from instseg_jax import tune
from instseg_jax import viz
from instseg_jax.data import pipeline
from instseg_jax.data import transforms
from instseg_jax.metrics import aggregation
from instseg_jax.metrics import ap as ap_lib
from instseg_jax.metrics import cvppp
from instseg_jax.metrics import matching

# Printed one per line as "NAME value" at the end of an evaluation.
REPORTED = ("SBD", "FBD", "DiC", "|DiC|")
REPORTED_AP = ("AP", "AP50", "AP75")
REPORTED_MATCHING = ("accuracy@0.5", "f1@0.5", "panoptic_quality@0.5")
# Per-image object matching is reported at this IoU threshold (per_image.csv).
PER_IMAGE_IOU = 0.5
# How many images the sheet of the worst ones shows.
NUM_WORST = 8
# Metrics where less is better; every other ranked metric is better higher.
LOWER_IS_BETTER = ("|DiC|",)
# The choices of config.eval.checkpoint, what `checkpoint_in_use` loads.
CHECKPOINTS = ("best", "latest")


def ranked_metrics(config: ml_collections.ConfigDict) -> dict[str, bool]:
  """{metric: higher is better} for the summary keys this config's evaluation can rank by.

  The signed DiC and the raw match counts rank nothing: neither more nor less is better.
  """
  names = [k for k in cvppp.CVPPP_KEYS if k != "DiC"]
  if config.eval.mask_ap:
    names += list(ap_lib.AP_KEYS)
  if config.eval.matching:
    names += list(matching.KEYS)
  return {name: name not in LOWER_IS_BETTER for name in names}


def best_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, *, read_only: bool = True
) -> checkpoint.BestCheckpoint:
  """The best checkpoint of a workdir, ranked by config.eval.metric."""
  metric = config.eval.metric
  return checkpoint.BestCheckpoint(
      workdir,
      metric=metric,
      higher_is_better=ranked_metrics(config).get(metric, True),
      read_only=read_only,
  )


def checkpoint_in_use(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, int] | None:
  """("best" | "latest", step) of the checkpoint evaluate, predict, export and tune load.

  The one place of that choice: config.eval.checkpoint, "best" by default, which is the
  latest when no evaluation has kept a best one (a run stopped before its end); None when
  the workdir has no checkpoint.
  """
  if config.eval.checkpoint == "best":
    best = best_checkpoint(config, workdir)
    score = best.score
    best.close()
    if score is not None:
      return "best", score["step"]
  if not os.path.isdir(os.path.join(os.path.abspath(workdir), "checkpoints")):
    return None
  checkpointer = checkpoint.Checkpointer(workdir, read_only=True)
  step = checkpointer.latest_step()
  checkpointer.close()
  return None if step is None else ("latest", step)


def load_params(config: ml_collections.ConfigDict, workdir: str):
  """The parameters of the checkpoint `checkpoint_in_use` names."""
  model = models.create_model(config)
  abstract = jax.eval_shape(
      functools.partial(state_lib.create_train_state, model, config), jax.random.key(0)
  )
  sharding = parallel.replicated(parallel.make_mesh())
  in_use = checkpoint_in_use(config, workdir)
  if in_use is None:
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    raise FileNotFoundError(f"no checkpoint in {directory}: train first (--mode=train)")
  if in_use[0] == "best":
    best = best_checkpoint(config, workdir)
    params = best.restore(checkpoint.abstract_like(abstract.params, sharding))
    best.close()
    return params
  checkpointer = checkpoint.Checkpointer(workdir, read_only=True)
  restored = checkpointer.restore(checkpoint.abstract_like(abstract, sharding))
  checkpointer.close()
  return restored.params


def main_metric(config: ml_collections.ConfigDict) -> str:
  """The per-image score that ranks images for the sheet of the worst ones.

  config.eval.metric if images have it (not AP: a data-set measure), else SBD.
  """
  metric = config.eval.metric
  per_image = set(cvppp.CVPPP_KEYS) | {
      f"{name}@{PER_IMAGE_IOU:g}" for name in matching.MatchCounts(0, 0, 0, 0.0).scores()
  }
  return metric if metric in per_image else "SBD"


def network_and_segmentation(
    config: ml_collections.ConfigDict, params, *, postprocess: inference.PostProcess | None = None
) -> Iterator[tuple[dict, inference.NetworkOutput, inference.Segmentation]]:
  """(example, the network's output, its segmentation) for the eval split, in order.

  What `inference.Segmenter` does for one image, with the network's output kept for the
  pictures of the embedding.
  """
  segmenter = inference.Segmenter(config, params)
  postprocess = postprocess or segmenter.postprocess
  for example in pipeline.eval_records(config, data_dir=config.data.data_dir or None):
    output = segmenter.network(example["image"], flip_average=postprocess.flip_average)
    yield example, output, inference.apply_postprocess(output, postprocess)


def num_eval_examples(config: ml_collections.ConfigDict) -> int:
  """How many examples `network_and_segmentation` yields; checks first that the split exists."""
  builder = pipeline.prepare(config, data_dir=config.data.data_dir or None)
  pipeline.check_prepared(config, builder)
  size = builder.info.splits[config.data.eval_split].num_examples
  limit = config.data.num_eval_images
  return size if limit <= 0 else min(limit, size)


class WorstImages:
  """The `size` images with the worst score seen so far, each with its panel.

  A panel is drawn only for an image that enters, so ranking all images costs little.
  """

  def __init__(self, size: int, *, higher_is_better: bool):
    self.size = size
    self.sign = 1.0 if higher_is_better else -1.0
    self._kept: list[tuple[float, int, str, float, np.ndarray]] = []
    self._offered = 0  # breaks ties between equal scores: the first seen is kept

  def offer(self, score: float, image_id: str, draw_panel) -> None:
    """Keeps the image if it is among the worst; draw_panel() -> its (H, W, 3) panel."""
    rank = self.sign * score if math.isfinite(score) else -math.inf  # NaN counts as worst
    self._offered += 1
    if len(self._kept) >= self.size and rank >= self._kept[-1][0]:
      return
    self._kept.append((rank, self._offered, image_id, score, draw_panel()))
    self._kept.sort(key=lambda kept: kept[:2])
    del self._kept[self.size :]

  def sheet(self, metric: str) -> np.ndarray | None:
    """The kept panels, worst first, each captioned with its image and score."""
    if not self._kept:
      return None
    return viz.stack_rows(
        [
            viz.caption(panel, f"{image_id}  {metric} {score:.3f}")
            for _, _, image_id, score, panel in self._kept
        ]
    )


def embedding_pictures(
    example: dict, output: inference.NetworkOutput, *, fg_threshold: float
) -> dict[str, np.ndarray]:
  """{"embedding_pca", "embedding_scatter"} of one image (see `viz`).

  The embedding lives on the network's grid; the PCA picture is brought to the image's own
  grid so it lines up with the image, and the true instances to the network's grid to
  colour its pixels. Its principal axes are those of the predicted foreground.
  """
  rgb = viz.embedding_rgb(output.embedding, output.foreground > fg_threshold)
  truth = transforms.resize_labels(example["instances"], size=output.embedding.shape[:2])
  return {
      "embedding_pca": viz.resize_nearest(rgb, output.shape),
      "embedding_scatter": viz.embedding_scatter(
          output.embedding, truth, size=max(96, min(output.shape))
      ),
  }


def write_per_image_csv(path: str, rows: list[dict]) -> None:
  """One row per image, one column per score (the union of the rows' keys, in first-seen order)."""
  columns = list(dict.fromkeys(key for row in rows for key in row))
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", newline="") as f:
    table = csv.DictWriter(f, fieldnames=columns)
    table.writeheader()
    table.writerows(rows)
  os.replace(tmp, path)


def report(summary: dict[str, float], config: ml_collections.ConfigDict) -> None:
  """The summary as "NAME value" lines, the ones users compare."""
  reported = (
      REPORTED
      + (REPORTED_AP if config.eval.mask_ap else ())
      + (REPORTED_MATCHING if config.eval.matching else ())
  )
  for name in reported:
    if name in summary:
      print(f"{name} {summary[name]:.3f}", flush=True)


def evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    params=None,
    verbose: bool = True,
    writer: metric_writers.MetricWriter | None = None,
    step: int | None = None,
) -> dict[str, float]:
  """Scores the model on config.data.eval_split; writes the files of the module docstring.

  Args:
    config: the experiment (or bundle) config.
    workdir: where the files go; with `params` None, also where the checkpoint is
      (`checkpoint_in_use`).
    params: the parameters to score.
    verbose: progress bar, the checkpoint used, and the summary printed.
    writer: also gets the summary as "eval/NAME" scalars and the panels and embedding
      pictures as images, at `step` (evaluation during training).
    step: the training step of `params`, for `writer`.
  """
  workdir = os.path.abspath(workdir)
  if params is None:
    in_use = checkpoint_in_use(config, workdir)
    params = load_params(config, workdir)
    if verbose and in_use:
      print(f"checkpoint: {in_use[0]}, step {in_use[1]}", flush=True)
  config = tune.with_tuned(config, workdir, verbose=verbose)
  os.makedirs(workdir, exist_ok=True)
  with_ap = config.eval.mask_ap
  with_classes = config.data.num_classes > 2  # else AP is class-agnostic
  accumulator = aggregation.MetricAccumulator(ap=with_ap)
  matches = matching.MatchingAccumulator() if config.eval.matching else None
  ranking = main_metric(config)
  worst = WorstImages(NUM_WORST, higher_is_better=ranked_metrics(config).get(ranking, True))
  panels, capped, rows, pictures, embedding_sheet = [], [], [], {}, None
  with tqdm(
      total=num_eval_examples(config),
      desc="evaluate",
      unit="image",
      disable=not verbose or jax.process_index() != 0,
  ) as bar:
    for example, output, result in network_and_segmentation(config, params):
      gt = example["instances"]
      ap_inputs = {}
      if with_ap:
        ap_inputs["scores"] = ap_lib.instance_confidences(result.labels, result.foreground)
      if with_ap and with_classes:
        ap_inputs["pred_classes"] = result.classes
        ap_inputs["gt_classes"] = example["semantic"]
      # Negative ground truth (config.data.ignore_label) is scored as neither.
      row = accumulator.add(example["id"], result.labels, gt, ignore=gt < 0, **ap_inputs)
      if matches is not None:
        # Ignored ground truth (negative) is left out of both maps.
        counts = matches.add(np.maximum(gt, 0), np.where(gt < 0, 0, result.labels))
        row = {
            **row,
            **{
                f"{name}@{PER_IMAGE_IOU:g}": value
                for name, value in counts[PER_IMAGE_IOU].scores().items()
            },
        }
      rows.append(row)
      if result.capped:
        capped.append(example["id"])
      draw = functools.partial(viz.panel, example["image"], result.labels, gt)
      if len(panels) < config.eval.num_panels:
        panels.append(draw())
      if not pictures:
        pictures = embedding_pictures(example, output, fg_threshold=config.cluster.fg_threshold)
        embedding_sheet = viz.side_by_side(
            [
                viz.to_uint8(example["image"]),
                pictures["embedding_pca"],
                pictures["embedding_scatter"],
            ]
        )
      worst.offer(float(row[ranking]), str(row["image_id"]), draw)
      bar.update(1)
  summary = accumulator.summary()
  if matches is not None:
    summary.update(matches.summary())
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"summary": summary, "per_image": rows, "capped": capped}, f, indent=1)
    if rows:
      write_per_image_csv(os.path.join(workdir, "per_image.csv"), rows)
    sheets = {
        "panels": viz.stack_rows(panels) if panels else None,
        "worst": worst.sheet(ranking),
        "embedding": embedding_sheet,
    }
    for name, sheet in sheets.items():
      if sheet is not None:
        viz.save_png(os.path.join(workdir, f"{name}.png"), sheet)
    if writer is not None:
      writer.write_scalars(step, {f"eval/{name}": value for name, value in summary.items()})
      images = {"panels": sheets["panels"], **pictures}
      writer.write_images(
          step, {f"eval/{name}": image for name, image in images.items() if image is not None}
      )
      writer.flush()
    if verbose:
      if capped:
        print(
            f"warning: {len(capped)} images reached config.data.max_instances="
            f"{config.data.max_instances} instances (some may have merged): "
            f"{', '.join(map(str, capped[:5]))}",
            flush=True,
        )
      report(summary, config)
  return summary
