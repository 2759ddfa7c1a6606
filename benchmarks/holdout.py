"""Measures a model as a user meets it: predict on a held-out split's image files, score the PNGs.

    # 1. the eval split's image files, as links in a folder (what a user would point predict at)
    python benchmarks/holdout.py images --config=configs/cvppp_cpu.py \
        --config.data.manual_dir=../shared/data/cvppp_a1_train --folder=runs/cvppp_cpu/holdout
    # 2. the user's command
    python -m instseg_jax.main --config=configs/cvppp_cpu.py --workdir=runs/cvppp_cpu \
        --config.data.manual_dir=../shared/data/cvppp_a1_train --mode=predict \
        --input=runs/cvppp_cpu/holdout --output=runs/cvppp_cpu/holdout_predictions
    # 3. every written <stem>_labels.png scored on its own grid against the split's labels
    python benchmarks/holdout.py score --config=configs/cvppp_cpu.py \
        --config.data.manual_dir=../shared/data/cvppp_a1_train \
        --folder=runs/cvppp_cpu/holdout_predictions

The ground truth is read from the data set's records (the label files as stored, at their own
resolution); an image of the split without a prediction counts as a failure.
"""

import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image

# The configs are Python modules of the repository, beside this folder.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from instseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from instseg_jax.data import transforms  # pylint: disable=g-import-not-at-top,wrong-import-position
from instseg_jax.metrics import aggregation  # pylint: disable=g-import-not-at-top,wrong-import-position
from instseg_jax.metrics import matching  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("folder", None, "images: where to put the links; score: the predictions.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.")
FLAGS = flags.FLAGS


def _records(config):
  """(file name relative to manual_dir, record) of every eval-split example, in order."""
  source = pipeline.prepare(config, data_dir=config.data.data_dir or None).as_data_source(
      split=config.data.eval_split
  )
  for i in range(len(source)):
    name = source[i]["file_name"]
    yield (name.decode() if isinstance(name, bytes) else str(name)), i


def link_images(config, folder: str) -> int:
  os.makedirs(folder, exist_ok=True)
  root = os.path.abspath(config.data.manual_dir)
  count = 0
  for name, _ in _records(config):
    link = os.path.join(folder, os.path.basename(name))
    if not os.path.lexists(link):
      os.symlink(os.path.join(root, name), link)
    count += 1
  return count


def score(config, folder: str) -> dict:
  """The scores of the predictions in `folder`, with the unmatched objects at IoU 0.5 by why
  (matching.error_kinds); for microscopy data (data.normalize "nuclei*") also the matching
  scores at IoU 0.5 by kind of image (transforms.image_kind)."""
  accumulator = aggregation.MetricAccumulator()
  matches = matching.MatchingAccumulator()
  errors = dict.fromkeys(matching.ERROR_KINDS, 0)
  by_kind = config.data.normalize.startswith("nuclei")
  kind_matches = {}
  missing = []
  for example in pipeline.eval_records(config, data_dir=config.data.data_dir or None, limit=0):
    stem = os.path.splitext(os.path.basename(example["id"]))[0]
    path = os.path.join(folder, f"{stem}_labels.png")
    if not os.path.isfile(path):
      candidates = [
          n for n in os.listdir(folder) if n.startswith(stem) and n.endswith("_labels.png")
      ]
      path = os.path.join(folder, candidates[0]) if len(candidates) == 1 else path
    gt = example["instances"]
    if os.path.isfile(path):
      predicted = np.asarray(Image.open(path)).astype(np.int32)
      if predicted.shape != gt.shape:
        raise ValueError(f"{path}: {predicted.shape}, ground truth {gt.shape}")
    else:
      missing.append(example["id"])
      predicted = np.zeros_like(gt)
    accumulator.add(example["id"], predicted, gt, ignore=gt < 0)
    truth, kept = np.maximum(gt, 0), np.where(gt < 0, 0, predicted)
    matches.add(truth, kept)
    for kind, count in matching.error_kinds(truth, kept).items():
      errors[kind] += count
    if by_kind:
      kind = transforms.image_kind(example["image"])
      kind_matches.setdefault(kind, matching.MatchingAccumulator(thresholds=(0.5,)))
      kind_matches[kind].add(truth, kept)
  result = {
      "images": len(accumulator),
      "missing": missing,
      **accumulator.summary(),
      **matches.summary(),
      "errors@0.5": errors,
  }
  if by_kind:
    result["by_kind"] = {kind: m.summary() for kind, m in sorted(kind_matches.items())}
  return result


def main(argv):
  if len(argv) != 2 or argv[1] not in ("images", "score") or not FLAGS.folder:
    sys.exit("usage: holdout.py images|score --config=CONFIG --folder=DIR")
  if argv[1] == "images":
    print(f"linked {link_images(FLAGS.config, FLAGS.folder)} images into {FLAGS.folder}")
    return
  result = score(FLAGS.config, FLAGS.folder)
  print(json.dumps(result, indent=1))
  for name in ("SBD", "FBD", "DiC", "|DiC|", "accuracy@0.5", "f1@0.5"):
    print(f"{name} {result[name]:.3f}")
  print("unmatched at IoU 0.5:", ", ".join(f"{k} {v}" for k, v in result["errors@0.5"].items()))
  for kind, scores in result.get("by_kind", {}).items():
    counts = ", ".join(f"{k} {scores[k + '@0.5']:.0f}" for k in ("tp", "fp", "fn"))
    print(f"{kind}: accuracy@0.5 {scores['accuracy@0.5']:.3f} ({counts})")


if __name__ == "__main__":
  app.run(main)
