"""--mode=inspect: what a data set holds and what the network will be fed.

Writes <workdir>/inspect.json (counts, image sizes, instances per image, files
skipped or over max_instances, per split) and <workdir>/inspect.png (training
examples after the configured augmentation: image | instances over the image
| semantic classes, ignored pixels in grey), and prints a short summary.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import ml_collections
import numpy as np

from instseg_jax import viz
from instseg_jax.data import pipeline
from instseg_jax.data.builders import DataError

# Data sets without stored statistics (circles) are measured on at most this
# many records per split.
_MAX_MEASURED = 5000


def _measure(source) -> dict[str, list]:
  """Instance counts and image sizes by decoding the records themselves."""
  counts, sizes = [], []
  for i in range(min(len(source), _MAX_MEASURED)):
    record = source[i]
    instances = np.asarray(record["instances"]).astype(np.int64)
    ids = np.unique(instances[(instances > 0) & (instances != 65535)])
    counts.append(int(ids.size))
    sizes.append(list(np.asarray(record["image"]).shape[:2]))
  return {"num_instances": counts, "image_sizes": sizes, "skipped": []}


def _split_summary(
    stats: dict[str, list], *, num_examples: int, max_instances: int
) -> dict[str, Any]:
  counts = np.asarray(stats["num_instances"], np.int64)
  sizes = [tuple(s) for s in stats["image_sizes"]]
  common = collections.Counter(sizes).most_common(5)
  heights = [s[0] for s in sizes] or [0]
  widths = [s[1] for s in sizes] or [0]
  summary = {
      "examples": num_examples,
      "measured": int(counts.size),
      "skipped": len(stats.get("skipped", [])),
      "skipped_files": list(stats.get("skipped", [])),
      "image_sizes": {
          "min_height": int(min(heights)),
          "max_height": int(max(heights)),
          "min_width": int(min(widths)),
          "max_width": int(max(widths)),
          "most_common": [[h, w, n] for (h, w), n in common],
      },
  }
  if counts.size:
    summary["instances"] = {
        "total": int(counts.sum()),
        "min": int(counts.min()),
        "mean": round(float(counts.mean()), 2),
        "median": float(np.median(counts)),
        "p95": round(float(np.percentile(counts, 95)), 2),
        "max": int(counts.max()),
        "images_without_instances": int((counts == 0).sum()),
        "over_max_instances": int((counts > max_instances).sum()),
        "histogram": np.bincount(counts).tolist()
        if counts.max() <= 64
        else _coarse_histogram(counts),
    }
  return summary


def _coarse_histogram(counts: np.ndarray) -> dict[str, int]:
  edges = np.unique(np.percentile(counts, np.linspace(0, 100, 11)).round())
  hist, edges = np.histogram(counts, bins=edges)
  return {f"{int(lo)}-{int(hi)}": int(n) for lo, hi, n in zip(edges[:-1], edges[1:], hist)}


def _labels_picture(labels: np.ndarray, image: np.ndarray | None) -> np.ndarray:
  ignored = labels < 0
  safe = np.where(ignored, 0, labels)
  picture = viz.overlay(image, safe) if image is not None else viz.colorize(safe)
  picture[ignored] = viz.IGNORED_GREY
  return picture


def _panel(example: dict[str, np.ndarray], *, gap: int = 4) -> np.ndarray:
  image = example["image"]
  parts = [
      viz.to_uint8(image),
      _labels_picture(example["instances"], image),
      _labels_picture(example["semantic"], None),
  ]
  spacer = np.full((image.shape[0], gap, 3), 255, np.uint8)
  row = [parts[0]]
  for part in parts[1:]:
    row += [spacer, part]
  return np.concatenate(row, axis=1)


def _panels(
    config: ml_collections.ConfigDict, *, data_dir: str | None, count: int
) -> list[np.ndarray]:
  """`count` training examples as the train loop would see them."""
  config = config.copy_and_resolve_references()
  # One example per batch, so a split smaller than train.batch_size works.
  config.train.batch_size = 1
  config.data.worker_count = 0
  iterator = pipeline.train_iterator(config, data_dir=data_dir)
  panels = []
  for _ in range(count):
    batch = next(iterator)
    panels.append(_panel({k: v[0] for k, v in batch.items()}))
  return panels


def inspect(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    num_panels: int | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
  """Writes inspect.json and inspect.png to workdir; returns the statistics.

  Args:
    config: the experiment config (config.data.*; config.eval.num_panels).
    workdir: the output folder (created if needed).
    num_panels: number of sample panels; default config.eval.num_panels.
    verbose: print a short summary.

  Returns:
    The statistics written to inspect.json.

  Raises:
    DataError: the data cannot be built (a bad file or folder).
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  data_dir = config.data.data_dir or None
  builder = pipeline.prepare(config, data_dir=data_dir)
  metadata = builder.info.metadata or {}
  max_instances = int(config.data.max_instances)
  result: dict[str, Any] = {
      "data_set": config.data.name,
      "builder_config": builder.builder_config.name,
      "data_path": os.fspath(builder.data_path),
      "manual_dir": metadata.get("manual_dir", ""),
      "class_names": metadata.get("class_names", []),
      "max_instances": max_instances,
      "image_size": list(config.data.image_size),
      "size_mode": config.data.size_mode,
      "splits": {},
      "problems": [],
  }
  for split, info in builder.info.splits.items():
    stats = pipeline.split_stats(builder, split)
    if stats is None:
      stats = _measure(builder.as_data_source(split=split))
    result["splits"][split] = _split_summary(
        stats, num_examples=info.num_examples, max_instances=max_instances
    )

  count = config.eval.num_panels if num_panels is None else num_panels
  panels = []
  if count > 0:
    try:
      panels = _panels(config, data_dir=data_dir, count=count)
    except DataError as error:
      # Too many instances: still show the data, without the offending files.
      result["problems"].append(str(error))
      relaxed = config.copy_and_resolve_references()
      relaxed.data.skip_bad_examples = True
      panels = _panels(relaxed, data_dir=data_dir, count=count)
  with open(os.path.join(workdir, "inspect.json"), "w") as f:
    json.dump(result, f, indent=1)
  if panels:
    viz.save_png(os.path.join(workdir, "inspect.png"), viz.stack_rows(panels))
  if verbose:
    for line in summary_lines(result):
      print(line, flush=True)
    print(
        f"wrote {os.path.join(workdir, 'inspect.json')}"
        + (
            f" and inspect.png ({len(panels)} panels: image | instances | "
            "classes, after augmentation)"
            if panels
            else ""
        ),
        flush=True,
    )
  return result


def summary_lines(result: dict[str, Any]) -> list[str]:
  """A few human-readable lines about the statistics of `inspect`."""
  lines = [f"{result['data_set']} ({result['builder_config']}) at " f"{result['data_path']}"]
  for split, s in result["splits"].items():
    sizes = s["image_sizes"]
    if (sizes["min_height"], sizes["min_width"]) == (sizes["max_height"], sizes["max_width"]):
      size = f"{sizes['max_height']}x{sizes['max_width']}"
    else:
      size = (
          f"{sizes['min_height']}..{sizes['max_height']} x "
          f"{sizes['min_width']}..{sizes['max_width']}"
      )
    line = f"  {split}: {s['examples']} images, HxW {size}"
    if "instances" in s:
      n = s["instances"]
      line += (
          f", instances/image {n['min']}..{n['max']} (mean {n['mean']})"
          f", {n['over_max_instances']} over max_instances="
          f"{result['max_instances']}"
      )
    if s["skipped"]:
      line += f", {s['skipped']} bad files skipped"
    lines.append(line)
  lines += [f"  problem: {p}" for p in result["problems"]]
  return lines
