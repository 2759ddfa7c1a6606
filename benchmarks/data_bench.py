"""Input pipeline throughput against the train step it has to feed.

    .venv/bin/python benchmarks/data_bench.py      # real data if present, else the sample
    .venv/bin/python benchmarks/data_bench.py --data=sample --batches=20
    .venv/bin/python benchmarks/data_bench.py --skip_train_step  # pipeline only

Measures, at data.image_size 256x256 with the full training augmentation
(random scale-crop, rot90, flips, small-angle rotation, colour jitter):

* pipeline: images per second out of `pipeline.train_iterator` (decode +
  augment + relabel + batch of 8), for 1 and 2 grain read threads, in a
  process of its own;
* stages: milliseconds per image of each stage on one thread (record read and
  decode, augmentation, relabel/finalize), to see what bounds the pipeline;
* train step: images per second of the default UNet's jitted train step at
  256x256, batch 8, in a separate process, so that the two never share the
  CPU while being timed.

The pipeline keeps the step fed when its rate is comfortably above the step's
(the target: twice). The data: ../shared/data/cvppp_a1_train (500x530 plants)
and ../shared/data/dsb2018 (256x256 to 1040x1388 nuclei) when present, else
third_party/dsb2018_sample repeated. The TFDS files are written to a
temporary folder first (not timed).
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
SIZE = (256, 256)
BATCH = 8


def data_sets(choice: str) -> dict[str, tuple[str, str, str]]:
  """name -> (config module, builder config, manual_dir) for `choice`."""
  found = {}
  if choice in ("auto", "cvppp") and os.path.isdir(os.path.join(SHARED, "cvppp_a1_train")):
    found["cvppp"] = ("cvppp", "A1", os.path.join(SHARED, "cvppp_a1_train"))
  if choice in ("auto", "dsb2018") and os.path.isdir(os.path.join(SHARED, "dsb2018")):
    found["dsb2018"] = ("dsb2018", "default", os.path.join(SHARED, "dsb2018"))
  if choice == "sample" or not found:
    found["sample"] = ("dsb2018", "default", os.path.join(REPO, "third_party", "dsb2018_sample"))
  return found


def make_config(module: str, builder_config: str, manual_dir: str, data_dir: str, *, threads: int):
  config = importlib.import_module(f"configs.{module}").get_config()
  config.data.builder_config = builder_config
  config.data.manual_dir = manual_dir
  config.data.data_dir = data_dir
  config.data.image_size = SIZE
  config.data.augment = True
  config.data.read_threads = threads
  config.data.worker_count = 0
  config.train.batch_size = BATCH
  if manual_dir.endswith("dsb2018_sample"):
    # Four images: one held out would leave fewer than a batch.
    config.data.validation_fraction = 0.0
    config.train.batch_size = 2
  return config


def time_pipeline(config, *, batches: int) -> float:
  """Images per second of train_iterator after a warm-up."""
  from instseg_jax.data import pipeline

  iterator = pipeline.train_iterator(config, data_dir=None)
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  images = 0
  for _ in range(batches):
    images += len(next(iterator)["image"])
  return images / (time.perf_counter() - start)


def time_stages(config, *, count: int) -> dict[str, float]:
  """Milliseconds per image of each stage, one thread, no prefetch."""
  from instseg_jax.data import pipeline
  from instseg_jax.data import transforms

  source = pipeline.prepare(config, data_dir=None).as_data_source(split=config.data.train_split)
  options = pipeline.augment_options(config)
  totals = {"read+decode": 0.0, "augment": 0.0, "finalize": 0.0}
  for i in range(count):
    t0 = time.perf_counter()
    record = dict(source[i % len(source)], index=i)
    example = pipeline._decode(record)
    t1 = time.perf_counter()
    example = transforms.augment(example, np.random.default_rng(i), **options)
    t2 = time.perf_counter()
    pipeline._finalize(example)
    t3 = time.perf_counter()
    totals["read+decode"] += t1 - t0
    totals["augment"] += t2 - t1
    totals["finalize"] += t3 - t2
  return {k: round(1000 * v / count, 2) for k, v in totals.items()}


def train_step_child(steps: int) -> None:
  """Prints the default UNet's train-step rate at 256x256, batch 8, as JSON."""
  # Imported here only: jax's thread pools would otherwise live in the
  # process that times the pipeline.
  import functools
  import jax
  from configs import default
  from instseg_jax import models
  from instseg_jax import state as state_lib
  from instseg_jax import train_step

  config = default.get_config()
  config.data.image_size = SIZE
  config.train.batch_size = BATCH
  model = models.create_model(config)
  state = jax.jit(functools.partial(state_lib.create_train_state, model, config))(jax.random.key(0))
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 17, (BATCH,) + SIZE).astype(np.int32)
  batch = {
      "image": rng.random((BATCH,) + SIZE + (3,), np.float32),
      "instances": labels,
      "semantic": (labels > 0).astype(np.int32),
      "num_instances": np.full((BATCH,), 16, np.int32),
  }
  batch = jax.device_put(batch)
  # Compiled as train.py compiles it.
  step = jax.jit(
      functools.partial(train_step.train_step, config=config),
      donate_argnums=0,
      compiler_options=models.compiler_options(),
  )
  key = jax.random.key(1)
  for _ in range(2):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / steps
  print(
      json.dumps(
          {
              "seconds_per_step": seconds,
              "images_per_second": BATCH / seconds,
              "model": config.model.name,
              "features": list(config.model.features),
          }
      )
  )


def time_train_step(steps: int) -> dict[str, float]:
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  out = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--child_train_step", f"--steps={steps}"],
      check=True,
      capture_output=True,
      text=True,
      cwd=REPO,
      env=env,
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="auto", choices=["auto", "cvppp", "dsb2018", "sample"])
  parser.add_argument("--batches", type=int, default=30, help="timed batches of 8 per measurement")
  parser.add_argument("--steps", type=int, default=5, help="timed train steps")
  parser.add_argument("--skip_train_step", action="store_true")
  parser.add_argument("--child_train_step", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child_train_step:
    train_step_child(args.steps)
    return

  results = {"cpu_count": os.cpu_count(), "image_size": list(SIZE), "batch": BATCH, "data": {}}
  with tempfile.TemporaryDirectory(prefix="data_bench_") as data_dir:
    for name, (module, builder_config, manual_dir) in data_sets(args.data).items():
      row = {}
      for threads in (1, 2):
        config = make_config(module, builder_config, manual_dir, data_dir, threads=threads)
        rate = time_pipeline(config, batches=args.batches)
        row[f"images_per_second_{threads}_threads"] = round(rate, 1)
      row["ms_per_image_one_thread"] = time_stages(config, count=40)
      results["data"][name] = row
      print(f"{name}: {json.dumps(row)}", flush=True)
  if not args.skip_train_step:
    step = time_train_step(args.steps)
    results["train_step"] = {
        k: (round(v, 3) if isinstance(v, float) else v) for k, v in step.items()
    }
    print(
        f"train step ({step['model']} {step['features']}, {SIZE[0]}x"
        f"{SIZE[1]}, batch {BATCH}): {step['seconds_per_step']:.3f} s, "
        f"{step['images_per_second']:.1f} images/s",
        flush=True,
    )
    for name, row in results["data"].items():
      best = max(row["images_per_second_1_threads"], row["images_per_second_2_threads"])
      ratio = best / step["images_per_second"]
      row["ratio_to_train_step"] = round(ratio, 2)
      print(
          f"{name}: pipeline {best:.1f} images/s = {ratio:.1f}x the train "
          f"step ({'meets' if ratio >= 2 else 'BELOW'} the 2x target)",
          flush=True,
      )
  print(json.dumps(results))


if __name__ == "__main__":
  main()
