"""Clustering benchmark: our JAX mean shift against sklearn `MeanShift`, each in its own process.

Scenes from benchmarks/scenes.py (trained-like embeddings of nuclei and leaf layouts) at 256x256
and 512x512. At each bandwidth of --bandwidths, ours `mean_shift(bandwidth=h)` (JAX, Gaussian
kernel, jit) and sklearn `MeanShift(bandwidth=h, bin_seeding=True)` cluster the same embeddings,
the two in processes of their own on the same cores (benchmarks/driver.py), image by image,
alternating which goes first, for --rounds rounds.

Reported per layout, size and bandwidth: the time per image of each (the median over rounds of
each image, averaged over the images: the total per image, compile excluded), their ratio, the
adjusted Rand index against the true instances on the foreground (mean and minimum), and the
worst per-image ARI of ours minus sklearn's. Then ours alone: the time per image over
bandwidths 0.7-2.0, cluster method "seeds" (configs/cvppp.py's) on the seed map a perfect seed
head predicts beside mean shift, the compile time per image shape in a fresh process, and a
1024x1024 image of 500 nuclei. Ours runs with max_instances 128 at 256x256, 256 at 512x512 and
512 at 1024x1024 (MAX_INSTANCES).

Run:
  .venv/bin/python benchmarks/cluster_bench.py [--num_images 5] [--rounds 3] [--sizes 256 512]
      [--bandwidths 1.0 1.5] [--tiny]

--tiny: 64x64 and 96x96 scenes, 2 images, 1 round, no 1024x1024 image (a smoke test).
"""

import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import driver  # pylint: disable=g-import-not-at-top,wrong-import-position
import scenes  # pylint: disable=g-import-not-at-top,wrong-import-position

SWEEP = (0.7, 1.0, 1.5, 2.0)
# Ours needs a static bound on instances per image, which a user sets from the data: the nuclei
# layouts hold up to 60 per 256x256, so up to 240 at 512x512.
MAX_INSTANCES = {256: 128, 512: 256, 1024: 512}
# Cluster method "seeds" as configs/cvppp.py runs it (configs/default.py's seed defaults).
SEED_SIGMA, SEED_THRESHOLD, SEED_BANDWIDTH = 0.2, 0.2, 2.0


@functools.lru_cache(maxsize=8)
def _scenes(scenario: str, size: int, num_images: int, seed: int, count: int | None = None):
  """The same scenes in every process: generated from the seed."""
  rng = np.random.default_rng([seed, size, scenes.SCENARIOS.index(scenario)])
  return [scenes.make_scene(rng, scenario, (size, size), count=count) for _ in range(num_images)]


def _ari(truth: np.ndarray, pred: np.ndarray, fg: np.ndarray) -> float:
  from sklearn.metrics import adjusted_rand_score  # pylint: disable=g-import-not-at-top

  return float(adjusted_rand_score(truth[fg], pred[fg]))


def _ideal_seed_map(emb: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """The seed head's target (losses.seed_loss, sigma SEED_SIGMA): what a perfect head predicts."""
  means = np.zeros((truth.max() + 1, emb.shape[-1]))
  for ident in range(1, truth.max() + 1):
    means[ident] = emb[truth == ident].mean(axis=0)
  d2 = np.sum(np.square(emb - means[truth]), axis=-1)
  return np.where(truth > 0, np.exp(-d2 / (2 * SEED_SIGMA**2)), 0.0).astype(np.float32)


def jax_child() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from instseg_jax import cluster  # pylint: disable=g-import-not-at-top

  def compile_seconds(size: int) -> float:
    emb = np.zeros((size, size, scenes.DIM), np.float32)
    start = time.perf_counter()
    cluster.mean_shift.lower(
        emb, emb[..., 0] > 0, bandwidth=1.0, max_instances=MAX_INSTANCES.get(size, 128)
    ).compile()
    return time.perf_counter() - start

  compiled = set()

  def run(
      scenario: str,
      size: int,
      num_images: int,
      seed: int,
      index: int,
      bandwidth: float,
      count: int | None = None,
      method: str = "meanshift",
  ) -> dict:
    emb, fg, truth = _scenes(scenario, size, num_images, seed, count)[index]
    emb_d, fg_d = jax.device_put(emb), jax.device_put(fg)
    max_instances = MAX_INSTANCES.get(size, 128)
    if method == "seeds":
      seed_d = jax.device_put(_ideal_seed_map(emb, truth))
      fn = lambda: cluster.seed_clustering(
          emb_d,
          fg_d,
          seed=seed_d,
          bandwidth=bandwidth,
          seed_threshold=SEED_THRESHOLD,
          max_instances=max_instances,
      )
    else:
      fn = lambda: cluster.mean_shift(emb_d, fg_d, bandwidth=bandwidth, max_instances=max_instances)
    if (size, method) not in compiled:  # the compile is reported on its own
      jax.block_until_ready(fn())
      compiled.add((size, method))
    start = time.perf_counter()
    labels = np.asarray(jax.block_until_ready(fn()))
    seconds = time.perf_counter() - start
    return {
        "s": seconds,
        "ari": _ari(truth, labels, fg),
        "k": int(labels.max()),
        "true_k": int(truth.max()),
        "fg": float(fg.mean()),
    }

  driver.serve(
      {"run": run, "compile": compile_seconds, "device": lambda: str(jax.devices()[0].device_kind)}
  )


def sklearn_child() -> None:
  from sklearn.cluster import MeanShift  # pylint: disable=g-import-not-at-top

  def run(
      scenario: str,
      size: int,
      num_images: int,
      seed: int,
      index: int,
      bandwidth: float,
      count: int | None = None,
  ) -> dict:
    emb, fg, truth = _scenes(scenario, size, num_images, seed, count)[index]
    start = time.perf_counter()
    labels = np.zeros(fg.shape, np.int32)
    labels[fg] = MeanShift(bandwidth=bandwidth, bin_seeding=True).fit_predict(emb[fg]) + 1
    seconds = time.perf_counter() - start
    return {"s": seconds, "ari": _ari(truth, labels, fg), "k": int(labels.max())}

  driver.serve({"run": run})


def _run_image(
    child: driver.Child, args, scenario: str, size: int, index: int, bandwidth: float, **extra
) -> dict:
  """One clustering of image `index` of a case by `child` (its "run" result)."""
  return child.call(
      "run",
      scenario=scenario,
      size=size,
      num_images=args.num_images,
      seed=args.seed,
      index=index,
      bandwidth=bandwidth,
      **extra,
  )


def compare(
    ours: driver.Child, peer: driver.Child, args, scenario: str, size: int, bandwidth: float
) -> dict:
  """Per image: median seconds over rounds of each side, and each side's ARI."""
  times = {
      "ours": [[] for _ in range(args.num_images)],
      "sklearn": [[] for _ in range(args.num_images)],
  }
  results = {}
  for r in range(args.rounds):
    for i in range(args.num_images):
      order = [("ours", ours), ("sklearn", peer)]
      for name, child in order if (r + i) % 2 == 0 else order[::-1]:
        out = _run_image(child, args, scenario, size, i, bandwidth)
        times[name][i].append(out["s"])
        results[name, i] = out
  median = {name: np.array([np.median(t) for t in per_image]) for name, per_image in times.items()}
  ari = {
      name: np.array([results[name, i]["ari"] for i in range(args.num_images)]) for name in times
  }
  return {
      "ours_ms": 1e3 * median["ours"].mean(),
      "sklearn_ms": 1e3 * median["sklearn"].mean(),
      "ratio": median["sklearn"].sum() / median["ours"].sum(),
      "ari_ours": ari["ours"],
      "ari_sklearn": ari["sklearn"],
      "worst": float(np.min(ari["ours"] - ari["sklearn"])),
      "k": [
          (results["ours", i]["true_k"], results["ours", i]["k"], results["sklearn", i]["k"])
          for i in range(args.num_images)
      ],
      "fg": [results["ours", i]["fg"] for i in range(args.num_images)],
  }


def _ours_runs(
    ours: driver.Child,
    args,
    scenario: str,
    size: int,
    bandwidth: float,
    method: str = "meanshift",
) -> list[list[dict]]:
  """Ours alone on each image of a case, args.rounds times: results per image, per round."""
  return [
      [
          _run_image(ours, args, scenario, size, i, bandwidth, method=method)
          for _ in range(args.rounds)
      ]
      for i in range(args.num_images)
  ]


def _ms_per_image(outs: list[list[dict]]) -> float:
  """Milliseconds per image: the median over rounds of each image, averaged over the images."""
  return 1e3 * float(np.mean([np.median([o["s"] for o in per]) for per in outs]))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--child", choices=("jax", "sklearn"), default=None)
  parser.add_argument("--num_images", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
  parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
  parser.add_argument("--bandwidths", type=float, nargs="+", default=[1.0, 1.5])
  parser.add_argument(
      "--large",
      type=int,
      default=1024,
      help="side of the 500-nuclei image clustered by ours alone; 0 = skip",
  )
  parser.add_argument("--tiny", action="store_true", help="a smoke test of a few seconds")
  args = parser.parse_args()
  if args.child:
    (jax_child if args.child == "jax" else sklearn_child)()
    return
  if args.tiny:
    args.sizes, args.num_images, args.rounds, args.large = [64, 96], 2, 1, 0
  script = os.path.abspath(__file__)
  ours = driver.Child(script, ["--child=jax"], args.threads)
  peer = driver.Child(script, ["--child=sklearn"], args.threads)
  print(
      f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {driver.machine()}; jax on "
      f"{ours.call('device')}; {args.threads} threads per process; load average "
      f"{os.getloadavg()[0]:.2f}; {args.num_images} images per case, {args.rounds} rounds",
      flush=True,
  )
  print(
      "\n| layout | size | bandwidth | ours ms/image | sklearn ms/image | ours faster by | "
      "ARI ours (mean / min) | ARI sklearn (mean / min) | worst ours - sklearn | "
      "instances true / ours / sklearn |"
  )
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
  for size in args.sizes:
    for scenario in scenes.SCENARIOS:
      for bandwidth in args.bandwidths:
        row = compare(ours, peer, args, scenario, size, bandwidth)
        ks = row["k"]
        print(
            f"| {scenario} | {size} | {bandwidth} | {row['ours_ms']:.1f} | "
            f"{row['sklearn_ms']:.0f} | {row['ratio']:.0f}x | "
            f"{row['ari_ours'].mean():.3f} / {row['ari_ours'].min():.3f} | "
            f"{row['ari_sklearn'].mean():.3f} / {row['ari_sklearn'].min():.3f} | "
            f"{row['worst']:+.3f} | {min(k[0] for k in ks)}-{max(k[0] for k in ks)} / "
            f"{min(k[1] for k in ks)}-{max(k[1] for k in ks)} / "
            f"{min(k[2] for k in ks)}-{max(k[2] for k in ks)} |",
            flush=True,
        )
  peer.close()

  print("\nours over bandwidths (ms/image, median over rounds, mean over images):")
  print("| layout | size | " + " | ".join(f"h = {h}" for h in SWEEP) + " |")
  print("|---|---|" + "---:|" * len(SWEEP))
  for size in args.sizes:
    for scenario in scenes.SCENARIOS:
      cells = []
      for bandwidth in SWEEP:
        cells.append(f"{_ms_per_image(_ours_runs(ours, args, scenario, size, bandwidth)):.1f}")
      print(f"| {scenario} | {size} | " + " | ".join(cells) + " |", flush=True)

  print(
      f"\nours, method seeds (bandwidth {SEED_BANDWIDTH}, the seed map a perfect seed head "
      "predicts) against mean shift (bandwidth 1.0): ms/image (median over rounds, mean over "
      "images) and mean ARI:"
  )
  print("| layout | size | seeds ms | seeds ARI | mean shift ms | mean shift ARI |")
  print("|---|---|---:|---:|---:|---:|")
  for size in args.sizes:
    for scenario in scenes.SCENARIOS:
      cells = []
      for method, bandwidth in (("seeds", SEED_BANDWIDTH), ("meanshift", 1.0)):
        outs = _ours_runs(ours, args, scenario, size, bandwidth, method)
        cells += [f"{_ms_per_image(outs):.1f}", f"{np.mean([per[0]['ari'] for per in outs]):.3f}"]
      print(f"| {scenario} | {size} | " + " | ".join(cells) + " |", flush=True)
  ours.close()

  # Compile times in fresh processes, as a first `--mode=predict` meets them.
  for size in args.sizes:
    fresh = driver.Child(script, ["--child=jax"], args.threads)
    seconds = fresh.call("compile", size=size)
    print(f"compile for {size}x{size} in a fresh process: {seconds:.2f} s", flush=True)
    fresh.close()
  if args.large:
    fresh = driver.Child(script, ["--child=jax"], args.threads)
    for bandwidth in args.bandwidths:
      out = [
          fresh.call(
              "run",
              scenario="nuclei",
              size=args.large,
              num_images=1,
              seed=args.seed,
              index=0,
              bandwidth=bandwidth,
              count=500,
          )
          for _ in range(args.rounds)
      ]
      print(
          f"{args.large}x{args.large}, {out[0]['true_k']} nuclei ({100 * out[0]['fg']:.0f} % "
          f"foreground), bandwidth {bandwidth}, max_instances="
          f"{MAX_INSTANCES.get(args.large, 128)}: "
          f"{1e3 * np.median([o['s'] for o in out]):.0f} ms, {out[0]['k']} found, "
          f"ARI {out[0]['ari']:.4f}",
          flush=True,
      )
    fresh.close()


if __name__ == "__main__":
  main()
