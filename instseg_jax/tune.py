"""tune: chooses the post-processing on a split and stores it beside the checkpoints.

    python -m instseg_jax.main --config=configs/cvppp_cpu.py --workdir=runs/cvppp_cpu --mode=tune

The network runs once per image (and once more with flip averaging); the clustering bandwidth
(and method "seeds"'s seed threshold), the foreground threshold, the smallest instance kept,
whether dropped fragments join their neighbours, whether the foreground is averaged over flips,
whether an instance keeps only its largest piece and the least mean foreground probability an
instance needs are then chosen one at a time (coordinate ascent, repeated until nothing changes)
for the best config.eval.metric (mean SBD for leaves, pooled matching accuracy for nuclei),
scored on each image's own grid.
The images are those of config.cluster.tune_split (the eval split unless set): the recipes tune
on their train split, so that the scores they report on the eval split come from images neither
trained nor tuned on. The price: a network embeds the images it trained on more tightly than new
ones, so a tune on train leans to a smaller bandwidth than new images bear (CVPPP,
configs/cvppp_cpu.py: bandwidth 0.8 with min_size 48 scored SBD 0.864 on 24 training plants and
0.835 on the validation plants; 1.0 with 32 scored 0.852 and 0.853). The choice is written to
WORKDIR/postprocess.json, which evaluate, predict and export read (`with_tuned`) unless
config.cluster.use_tuned is False; an exported bundle carries it in its config.
"""

import copy
import json
import os

import ml_collections
import numpy as np
from tqdm import tqdm

from instseg_jax import cluster as cluster_lib
from instseg_jax import inference
from instseg_jax.data import pipeline
from instseg_jax.metrics import aggregation
from instseg_jax.metrics import ap as ap_lib
from instseg_jax.metrics import matching as matching_lib

TUNED_FILE = "postprocess.json"
# Candidates of each tuned config.cluster field; bandwidths are factors of the config's.
BANDWIDTH_FACTORS = (0.6, 0.8, 1.0, 1.25, 1.5)
FG_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_SIZES = (0, 8, 16, 32, 64, 128)
MIN_CONFIDENCES = (0.0, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
# A trained seed head peaks at 0.3-0.4 on leaves (configs/cvppp_cpu.py): finer steps there.
SEED_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8)
MAX_ROUNDS = 3


def candidates(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """The values tried for each tuned field of config.cluster."""
  options = {
      "fg_threshold": FG_THRESHOLDS,
      "min_size": MIN_SIZES,
      "fill_unclustered": (False, True),
      "flip_average": (False, True),
      "largest_piece": (False, True),
      "min_confidence": MIN_CONFIDENCES,
  }
  if "bandwidth" in cluster_lib.METHODS[config.cluster.method].options:
    bandwidth = float(config.cluster.bandwidth)
    options = {"bandwidth": tuple(round(bandwidth * f, 4) for f in BANDWIDTH_FACTORS), **options}
  if "seed_threshold" in cluster_lib.METHODS[config.cluster.method].options:
    options = {"seed_threshold": SEED_THRESHOLDS, **options}
  return options


def score(
    outputs: list[inference.NetworkOutput],
    truths: list[np.ndarray],
    postprocess: inference.PostProcess,
    *,
    matching: bool = False,
    ap: bool = False,
) -> dict[str, float]:
  """The CVPPP summary (and matching scores, and mask AP) of one post-processing over outputs."""
  accumulator = aggregation.MetricAccumulator(ap=ap)
  matches = matching_lib.MatchingAccumulator() if matching else None
  for i, (output, gt) in enumerate(zip(outputs, truths)):
    result = inference.apply_postprocess(output, postprocess)
    confidences = (
        {"scores": ap_lib.instance_confidences(result.labels, result.foreground)} if ap else {}
    )
    accumulator.add(i, result.labels, gt, ignore=gt < 0, **confidences)
    if matches is not None:
      matches.add(np.maximum(gt, 0), np.where(gt < 0, 0, result.labels))
  summary = accumulator.summary()
  if matches is not None:
    summary.update(matches.summary())
  return summary


def coordinate_ascent(
    evaluate_fn, start: inference.PostProcess, grid: dict[str, tuple]
) -> tuple[inference.PostProcess, float]:
  """The post-processing with the best evaluate_fn found by changing one field at a time."""
  best, best_value = start, evaluate_fn(start)
  for _ in range(MAX_ROUNDS):
    improved = False
    for field, values in grid.items():
      for value in values:
        trial = best.replace(**{field: value})
        trial_value = evaluate_fn(trial)
        if trial_value > best_value + 1e-9:
          best, best_value, improved = trial, trial_value, True
    if not improved:
      break
  return best, best_value


def tuned_fields(postprocess: inference.PostProcess, grid: dict[str, tuple]) -> dict:
  values = {
      **postprocess.options,
      "fg_threshold": postprocess.fg_threshold,
      "min_size": postprocess.min_size,
      "fill_unclustered": postprocess.fill_unclustered,
      "flip_average": postprocess.flip_average,
      "largest_piece": postprocess.largest_piece,
      "min_confidence": postprocess.min_confidence,
  }
  return {field: values[field] for field in grid}


def tuning_view(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config reading config.cluster.tune_split (and tune_images) where it reads the eval split."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.data.eval_split = config.cluster.tune_split or config.data.eval_split
    config.data.num_eval_images = config.cluster.tune_images or config.data.num_eval_images
  return config


def tune(config: ml_collections.ConfigDict, workdir: str, *, params=None) -> dict:
  """Chooses config.cluster's post-processing on config.cluster.tune_split; writes it."""
  from instseg_jax import evaluate  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  config = tuning_view(config)
  if params is None:
    params = evaluate.load_params(config, workdir)
  segmenter = inference.Segmenter(config, params)
  # The network's outputs, without and with flip averaging, computed once per image.
  outputs, truths = {False: [], True: []}, []
  for example in tqdm(
      pipeline.eval_records(config, data_dir=config.data.data_dir or None),
      total=evaluate.num_eval_examples(config),
      desc="network",
      unit="image",
  ):
    for flip, found in outputs.items():
      found.append(segmenter.network(example["image"], flip_average=flip))
    truths.append(example["instances"])
  if not truths:
    raise FileNotFoundError(f"the {config.data.eval_split!r} split is empty: nothing to tune on")

  summaries = {}
  metric = config.eval.metric
  sign = 1.0 if evaluate.ranked_metrics(config)[metric] else -1.0
  # Each trial clusters every image again: minutes each on hundreds of nuclei per image.
  trials = tqdm(desc="tune", unit=" trials")

  def objective(postprocess: inference.PostProcess) -> float:
    key = repr(postprocess)
    if key not in summaries:
      summaries[key] = score(
          outputs[postprocess.flip_average],
          truths,
          postprocess,
          matching=metric in matching_lib.KEYS,
          ap=metric in ap_lib.AP_KEYS,
      )
      best_so_far = max(sign * summary[metric] for summary in summaries.values())
      trials.set_postfix({f"best {metric}": f"{sign * best_so_far:.4f}"}, refresh=False)
      trials.update()
    return sign * summaries[key][metric]

  grid = candidates(config)
  start = segmenter.postprocess
  with trials:  # closed, and the bar's line ended, also when a trial raises
    best, _ = coordinate_ascent(objective, start, grid)
  result = {
      "step": (evaluate.checkpoint_in_use(config, workdir) or (None, None))[1],
      "split": config.data.eval_split,
      "images": len(truths),
      "objective": metric,
      "cluster": tuned_fields(best, grid),
      "before": summaries[repr(start)],
      "after": summaries[repr(best)],
      "trials": len(summaries),
  }
  path = os.path.join(workdir, TUNED_FILE)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, path)
  chosen = ", ".join(f"{k}={v}" for k, v in result["cluster"].items())
  print(
      f"tuned on {len(truths)} images of {config.data.eval_split!r} ({len(summaries)} "
      f"trials): {chosen}",
      flush=True,
  )
  for name in dict.fromkeys((metric, "SBD", "FBD", "|DiC|")):
    print(f"{name} {result['before'][name]:.3f} -> {result['after'][name]:.3f}", flush=True)
  print(f"wrote {path}; evaluate, predict and export use it", flush=True)
  return result


def with_tuned(
    config: ml_collections.ConfigDict, workdir: str | None, *, verbose: bool = True
) -> ml_collections.ConfigDict:
  """config with the post-processing of WORKDIR/postprocess.json, if there is one and it is used."""
  if not workdir or not config.cluster.use_tuned:
    return config
  path = os.path.join(os.path.abspath(workdir), TUNED_FILE)
  if not os.path.isfile(path):
    return config
  with open(path) as f:
    tuned = json.load(f)
  config = copy.deepcopy(config)
  with config.unlocked():
    for field, value in tuned["cluster"].items():
      config.cluster[field] = type(config.cluster[field])(value)
  if verbose:
    chosen = ", ".join(f"{k}={v}" for k, v in tuned["cluster"].items())
    print(f"post-processing from {path} (tuned at step {tuned['step']}): {chosen}", flush=True)
  return config
