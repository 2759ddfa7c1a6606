"""Clustering benchmark: our JAX mean shift against sklearn `MeanShift`.

Synthetic 256x256 scenes with D=16 embeddings that look like a trained network's output under the
discriminative loss (delta_v = 0.5, delta_d = 1.5): instance means at least 3.0 apart and packed
as closely as that allows, most pixels within 0.5 of their mean, a few stragglers (5%) up to 1.3
away and leaning towards a neighbouring instance, as boundary pixels do. Two scenarios:

* nuclei: 25-60 small round instances, 10-15% foreground;
* leaves: 15 large elongated instances around a centre, overlapping as in a rosette (slivers under
  50 pixels dropped, so 11-15 remain).

Reported: the compile time of ours (once per image shape); then per scenario, medians over the
images of the steady-state time per image (after a warm-up call), sklearn's time per image and
their ratio, the total per image with the compile spread over the images, and the adjusted Rand
index against the true instances on the foreground, for `mean_shift`, `fast_mean_shift` and
sklearn `MeanShift(bandwidth=1.5, bin_seeding=True)`.

Run:
  .venv/bin/python benchmarks/cluster_bench.py [--num_images 10] [--seed 0]
      [--straggler_frac 0.05] [--straggler_max 1.3] [--compilation_cache DIR]

With --compilation_cache, a second run finds the mean shift compiled on disk, as a second
`--mode=evaluate` or `--mode=predict` does (main.py turns the cache on).
"""

import argparse
import os
import time

import jax
import numpy as np
from sklearn.cluster import MeanShift
from sklearn.metrics import adjusted_rand_score

from instseg_jax import cluster as cl
from instseg_jax import compilation_cache

SIZE = 256
DIM = 16
DELTA_V = 0.5
MIN_CENTRE_DIST = 3.0
MIN_LEAF_PIXELS = 50


def _centres(rng: np.random.Generator, k: int) -> np.ndarray:
  """K means at least MIN_CENTRE_DIST apart, packed so that many pairs are close to it."""
  # The loss regulariser keeps the means near the origin: sample a small ball, reject near misses.
  out = []
  scale = 0.6
  while len(out) < k:
    c = rng.normal(0.0, scale, DIM)
    if all(np.linalg.norm(c - o) >= MIN_CENTRE_DIST for o in out):
      out.append(c)
    else:
      scale *= 1.002
  return np.stack(out).astype(np.float32)


def _nuclei_layout(rng: np.random.Generator) -> np.ndarray:
  target_k = rng.integers(25, 61)
  target_fg = rng.uniform(0.10, 0.15)
  yy, xx = np.mgrid[:SIZE, :SIZE]
  labels = np.zeros((SIZE, SIZE), np.int32)
  k = 0
  radius = np.sqrt(target_fg * SIZE * SIZE / (np.pi * target_k))
  for _ in range(10 * target_k):
    if k == target_k:
      break
    r = radius * rng.uniform(0.6, 1.4)
    e = rng.uniform(0.7, 1.0)
    cy, cx = rng.uniform(r, SIZE - r, 2)
    disc = ((yy - cy) / r) ** 2 + ((xx - cx) / (r * e)) ** 2 <= 1.0
    if np.any(labels[disc]):
      continue
    k += 1
    labels[disc] = k
  return labels


def _leaves_layout(rng: np.random.Generator, k: int = 15) -> np.ndarray:
  yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
  labels = np.zeros((SIZE, SIZE), np.int32)
  angles = np.sort(rng.uniform(0, 2 * np.pi, k))
  for i, a in enumerate(angles, start=1):
    length = rng.uniform(40, 110)
    width = length * rng.uniform(0.25, 0.45)
    cy, cx = 0.55 * length * np.sin(a), 0.55 * length * np.cos(a)
    u = (yy - cy) * np.sin(a) + (xx - cx) * np.cos(a)
    v = -(yy - cy) * np.cos(a) + (xx - cx) * np.sin(a)
    leaf = (u / (length / 2)) ** 2 + (v / (width / 2)) ** 2 <= 1.0
    labels[leaf] = i  # younger leaves cover older ones, as in a rosette.
  # Slivers of covered leaves are not instances anyone annotates; renumber the rest 1..K.
  sizes = np.bincount(labels.ravel(), minlength=k + 1)
  labels[sizes[labels] < MIN_LEAF_PIXELS] = 0
  _, inverse = np.unique(labels, return_inverse=True)
  return inverse.reshape(labels.shape).astype(np.int32)


def _embeddings(
    rng: np.random.Generator, labels: np.ndarray, straggler_frac: float, straggler_max: float
) -> tuple[np.ndarray, np.ndarray]:
  k = labels.max()
  centres = _centres(rng, k)
  emb = rng.normal(0.0, 1.0, (SIZE, SIZE, DIM)).astype(np.float32)  # background: anything.
  fg = labels > 0
  n = int(fg.sum())
  inst = labels[fg] - 1
  direction = rng.normal(size=(n, DIM))
  direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
  radius = DELTA_V * rng.uniform(0.2, 1.0, n)
  x = centres[inst] + radius[:, None] * direction
  straggler = rng.random(n) < straggler_frac
  if k > 1:
    other = (inst + rng.integers(1, k, n)) % k
    towards = centres[other] - centres[inst]
    towards /= np.linalg.norm(towards, axis=-1, keepdims=True)
    lean = 0.5 * towards + 0.5 * direction
    lean /= np.linalg.norm(lean, axis=-1, keepdims=True)
    far = rng.uniform(DELTA_V, straggler_max, n)
    x = np.where(straggler[:, None], centres[inst] + far[:, None] * lean, x)
  emb[fg] = x
  return emb, fg


def make_scene(
    rng: np.random.Generator,
    scenario: str,
    *,
    straggler_frac: float = 0.05,
    straggler_max: float = 1.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns embeddings (H, W, D) float32, foreground (H, W) bool and true labels (H, W) int32."""
  labels = _nuclei_layout(rng) if scenario == "nuclei" else _leaves_layout(rng)
  emb, fg = _embeddings(rng, labels, straggler_frac, straggler_max)
  return emb, fg, labels


def _ari(truth: np.ndarray, pred: np.ndarray, fg: np.ndarray) -> float:
  return adjusted_rand_score(truth[fg], np.asarray(pred)[fg])


def _time_jax(fn, emb, fg) -> tuple[float, np.ndarray]:
  start = time.perf_counter()
  out = jax.block_until_ready(fn(emb, fg))
  return time.perf_counter() - start, np.asarray(out)


def _compile_seconds(fn, emb, fg, **options) -> float:
  """Trace, lower and compile time of a jitted function, without running it."""
  start = time.perf_counter()
  fn.lower(emb, fg, **options).compile()
  return time.perf_counter() - start


def run(num_images: int, seed: int, **scene_options) -> None:
  ours_opts, fast_opts = {"bandwidth": 1.0}, {"bandwidth": 1.5}
  ours = lambda e, m: cl.mean_shift(e, m, **ours_opts)
  fast = lambda e, m: cl.fast_mean_shift(e, m, **fast_opts)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {num_images} images per scenario; "
        f"mean_shift{ours_opts}, fast_mean_shift{fast_opts}, "
        f"sklearn MeanShift(bandwidth=1.5, bin_seeding=True)")
  shape_emb = np.zeros((SIZE, SIZE, DIM), np.float32)
  shape_fg = np.zeros((SIZE, SIZE), bool)
  compile_ours = _compile_seconds(cl.mean_shift, shape_emb, shape_fg, **ours_opts)
  compile_fast = _compile_seconds(cl.fast_mean_shift, shape_emb, shape_fg, **fast_opts)
  print(f"compile (trace + lower + XLA, once per image shape): mean_shift {compile_ours:.2f} s, "
        f"fast_mean_shift {compile_fast:.2f} s")
  for scenario in ("nuclei", "leaves"):
    rng = np.random.default_rng(seed)
    scenes = [make_scene(rng, scenario, **scene_options) for _ in range(num_images)]
    # Warm-up: the first call also fills the jit cache for these (static) options.
    _time_jax(ours, scenes[0][0], scenes[0][1])
    _time_jax(fast, scenes[0][0], scenes[0][1])
    rows = []
    for emb, fg, truth in scenes:
      emb_d, fg_d = jax.device_put(emb), jax.device_put(fg)
      t_ours, p_ours = _time_jax(ours, emb_d, fg_d)
      t_fast, p_fast = _time_jax(fast, emb_d, fg_d)
      start = time.perf_counter()
      p_sk = MeanShift(bandwidth=1.5, bin_seeding=True).fit_predict(emb[fg])
      t_sk = time.perf_counter() - start
      sk = np.zeros(fg.shape, np.int32)
      sk[fg] = p_sk + 1
      rows.append((
          t_ours, t_fast, t_sk,
          _ari(truth, p_ours, fg), _ari(truth, p_fast, fg), _ari(truth, sk, fg),
          truth.max(), p_ours.max(), p_fast.max(), sk.max(), fg.mean(),
      ))
    r = np.array(rows)
    med = np.median(r, axis=0)
    total_ours = (compile_ours + r[:, 0].sum()) / num_images
    # Images after which ours, compile included, is 30x faster than sklearn in total.
    margin = med[2] / 30 - med[0]
    breakeven = f"{int(np.ceil(compile_ours / margin))}" if margin > 0 else "never"
    print(f"\n[{scenario}] instances {int(r[:, 6].min())}-{int(r[:, 6].max())}, "
          f"foreground {100 * r[:, 10].min():.0f}-{100 * r[:, 10].max():.0f}%")
    print(f"  steady-state per image (median): mean_shift {med[0] * 1e3:.1f} ms, "
          f"fast_mean_shift {med[1] * 1e3:.1f} ms, sklearn {med[2] * 1e3:.0f} ms")
    print(f"  speed-up over sklearn (median of per-image ratios): mean_shift "
          f"{np.median(r[:, 2] / r[:, 0]):.0f}x, "
          f"fast_mean_shift {np.median(r[:, 2] / r[:, 1]):.0f}x")
    print(f"  total per image incl. one compile over these {num_images} images: mean_shift "
          f"{total_ours * 1e3:.0f} ms vs sklearn {r[:, 2].mean() * 1e3:.0f} ms = "
          f"{r[:, 2].mean() / total_ours:.1f}x; 30x reached from "
          f"{breakeven} images on")
    print(f"  ARI median / mean / min: mean_shift {med[3]:.3f} / {r[:, 3].mean():.3f} / "
          f"{r[:, 3].min():.3f}; fast {med[4]:.3f} / {r[:, 4].mean():.3f} / {r[:, 4].min():.3f}; "
          f"sklearn {med[5]:.3f} / {r[:, 5].mean():.3f} / {r[:, 5].min():.3f}")
    print(f"  worst per-image (mean_shift - sklearn) ARI: {np.min(r[:, 3] - r[:, 5]):+.3f}")
    print("  per image: true K, mean_shift K, fast K, sklearn K | ARI mean_shift, fast, sklearn")
    for row in r:
      print(f"    {int(row[6]):3d} {int(row[7]):3d} {int(row[8]):3d} {int(row[9]):3d} | "
            f"{row[3]:.3f} {row[4]:.3f} {row[5]:.3f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--straggler_frac", type=float, default=0.05,
                      help="fraction of foreground pixels farther than delta_v from their mean")
  parser.add_argument("--straggler_max", type=float, default=1.3,
                      help="farthest a straggler lies from its mean")
  parser.add_argument("--compilation_cache", default="",
                      help="a folder for JAX's persistent compilation cache; run twice to see "
                      "the compile time of a process that finds the mean shift compiled")
  args = parser.parse_args()
  if args.compilation_cache:
    compilation_cache.enable(os.path.abspath(args.compilation_cache), min_compile_seconds=0.0)
  run(args.num_images, args.seed, straggler_frac=args.straggler_frac,
      straggler_max=args.straggler_max)


if __name__ == "__main__":
  main()
