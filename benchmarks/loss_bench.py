"""Discriminative loss forward + backward on CPU: instseg_jax against two PyTorch versions.

    .venv/bin/python benchmarks/loss_bench.py                 # driver: all three, table of medians
    .venv/bin/python benchmarks/loss_bench.py --hugepages     # same, malloc with huge pages
    .venv/bin/python benchmarks/loss_bench.py --framework=jax # one framework, one process

Compared, on the same batch (by default B=8, 256x256, D=16, 32 instances per image, paper form;
--batch, --size, --dim, --instances change it, --device=cuda runs both frameworks on a GPU, and
--peak_gbps adds the floor of the bytes any forward+backward moves over the peak bandwidth):

* jax:        `instseg_jax.losses.discriminative_loss`, jitted value_and_grad.
* torch_loop: the loss as the PyTorch re-implementations write it: for each image, for each unique
              id, mask the pixels, take the mean, pull; push over the stacked means.
* torch_vec:  a vectorised PyTorch loss: bincount / index_add_ over (image, id) segments, gather of
              the means, the same segment ids as ours.

Each framework runs in its own process (idle PyTorch OpenMP threads spin and slow JAX down in a
shared process), pinned to the same cores with the same thread count (OMP_WAIT_POLICY=PASSIVE
unless set), and the driver alternates the processes for several rounds. Before timing, the driver
checks that the three agree on the loss and on the gradient.

What bounds the JAX time on CPU: the gradient is a fresh 33.5 MB buffer per step, and glibc maps
allocations of that size afresh, so writing it costs page faults (about as much as a plain
`x * 2` of the embeddings); PyTorch pays the same for its gradient and for each temporary.
`--hugepages` shows both with transparent huge pages for such allocations.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# The batch's shape; --batch, --size, --dim and --instances change them in every process.
BATCH, HEIGHT, WIDTH, DIM, INSTANCES = 8, 256, 256, 16, 32
# The paper's loss (`discriminative_loss`'s defaults), passed to ours so that all three compute it.
PULL_MARGIN, PUSH_MARGIN, REGULARIZATION_WEIGHT = 0.5, 3.0, 0.001
DEVICE = "cpu"  # --device: where both frameworks run ("cuda": a GPU)
PEAK_GBPS = 0.0  # --peak_gbps: the device's memory bandwidth, for the floor bytes / bandwidth
FRAMEWORKS = ("jax", "torch_loop", "torch_vec")
# Not a loss: `x * 2` of the embeddings under jit, one read of them and one fresh buffer of their
# size written, which any forward+backward that returns the gradient must also do.
FLOOR = "floor"
_HUGEPAGES = False  # set by --hugepages for every child process


def make_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Embeddings (B, H, W, D) float32 and labels (B, H, W) int32: Voronoi cells of random seeds.

  Each image holds INSTANCES cells with ids 1..INSTANCES; pixels far from every seed are
  background.
  """
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
  labels = np.zeros((BATCH, HEIGHT, WIDTH), np.int32)
  for b in range(BATCH):
    seeds = rng.uniform(0, [HEIGHT, WIDTH], size=(INSTANCES, 2))
    d2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    nearest = np.argmin(d2, axis=-1)
    labels[b] = np.where(np.min(d2, axis=-1) < 30.0**2, nearest + 1, 0)
  embeddings = rng.normal(size=(BATCH, HEIGHT, WIDTH, DIM)).astype(np.float32)
  return embeddings, labels


def _jax_runner(embeddings, labels):
  import jax
  import jax.numpy as jnp
  from instseg_jax.losses import discriminative_loss

  loss_fn = lambda x, y: discriminative_loss(
      x,
      y,
      pull_margin=PULL_MARGIN,
      push_margin=PUSH_MARGIN,
      regularization_weight=REGULARIZATION_WEIGHT,
      max_instances=INSTANCES,
  )[0]
  step = jax.jit(jax.value_and_grad(loss_fn))
  x, y = jnp.asarray(embeddings), jnp.asarray(labels)

  def run():
    loss, grad = step(x, y)
    jax.block_until_ready(grad)
    return loss, grad

  return run, lambda out: (float(out[0]), np.asarray(out[1]))


def _floor_runner(embeddings):
  import jax
  import jax.numpy as jnp

  double = jax.jit(lambda x: x * 2.0)
  x = jnp.asarray(embeddings)

  def run():
    out = double(x)
    jax.block_until_ready(out)
    return out

  return run, lambda out: (0.0, np.asarray(out))


def _torch_loop_loss(emb, labels):
  import torch

  total = emb.new_zeros(())
  for b in range(emb.shape[0]):
    e = emb[b].reshape(-1, emb.shape[-1])
    lab = labels[b].reshape(-1)
    ids = torch.unique(lab)
    ids = ids[ids != 0]
    if len(ids) == 0:
      continue
    means, pull = [], 0.0
    for i in ids:
      pixels = e[lab == i]
      mu = pixels.mean(0)
      dist = torch.linalg.vector_norm(pixels - mu, dim=1)
      pull = pull + torch.clamp(dist - PULL_MARGIN, min=0).pow(2).mean()
      means.append(mu)
    c = len(means)
    means = torch.stack(means)
    push = 0.0
    if c > 1:
      gaps = torch.linalg.vector_norm(means[:, None] - means[None], dim=2)
      off_diag = 1.0 - torch.eye(c, device=emb.device)
      push = (torch.clamp(PUSH_MARGIN - gaps, min=0).pow(2) * off_diag).sum() / (c * (c - 1))
    reg = torch.linalg.vector_norm(means, dim=1).mean()
    total = total + pull / c + push + REGULARIZATION_WEIGHT * reg
  return total / emb.shape[0]


def _torch_vec_loss(emb, labels):
  import torch

  batch, dim = emb.shape[0], emb.shape[-1]
  k = INSTANCES + 1
  e = emb.reshape(-1, dim)
  device = emb.device
  seg = (labels.reshape(batch, -1) + torch.arange(batch, device=device)[:, None] * k).reshape(-1)
  counts = torch.bincount(seg, minlength=batch * k).to(e.dtype)
  sums = torch.zeros(batch * k, dim, device=device).index_add_(0, seg, e)
  means = sums / counts.clamp(min=1)[:, None]
  dist = torch.linalg.vector_norm(e - means[seg], dim=1)
  pull_px = torch.clamp(dist - PULL_MARGIN, min=0).pow(2)
  pull_seg = torch.zeros(batch * k, device=device).index_add_(0, seg, pull_px) / counts.clamp(min=1)
  present = (counts > 0).view(batch, k).clone()
  present[:, 0] = False
  c = present.sum(1).to(e.dtype)
  pull = (pull_seg.view(batch, k) * present).sum(1) / c.clamp(min=1)
  means = means.view(batch, k, dim)
  gaps = torch.linalg.vector_norm(means[:, :, None] - means[:, None], dim=3)
  pairs = present[:, :, None] & present[:, None] & ~torch.eye(k, dtype=torch.bool, device=device)
  push = (torch.clamp(PUSH_MARGIN - gaps, min=0).pow(2) * pairs).sum((1, 2))
  push = push / (c * (c - 1)).clamp(min=1)
  reg = (torch.linalg.vector_norm(means, dim=2) * present).sum(1) / c.clamp(min=1)
  return (pull + push + REGULARIZATION_WEIGHT * reg).mean()


def _torch_runner(embeddings, labels, loss_fn, threads):
  import torch

  torch.set_num_threads(threads)
  x0 = torch.from_numpy(embeddings).to(DEVICE)
  y = torch.from_numpy(labels.astype(np.int64)).to(DEVICE)

  def run():
    x = x0.detach().requires_grad_(True)
    loss = loss_fn(x, y)
    loss.backward()
    if DEVICE != "cpu":
      torch.cuda.synchronize()  # the step's kernels are queued, not done, until here
    return loss.detach(), x.grad

  return run, lambda out: (float(out[0]), out[1].cpu().numpy())


def run_one(framework: str, iters: int, warmup: int, threads: int, dump: str | None) -> dict:
  embeddings, labels = make_batch()
  if framework == "jax":
    run, fetch = _jax_runner(embeddings, labels)
  elif framework == FLOOR:
    run, fetch = _floor_runner(embeddings)
  elif framework == "torch_loop":
    run, fetch = _torch_runner(embeddings, labels, _torch_loop_loss, threads)
  else:
    run, fetch = _torch_runner(embeddings, labels, _torch_vec_loss, threads)
  for _ in range(warmup):
    out = run()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    out = run()
    times.append(time.perf_counter() - start)
  loss, grad = fetch(out)
  if dump:
    np.save(dump, grad)
  return {"framework": framework, "times_ms": [t * 1e3 for t in times], "loss": loss}


def _child(framework, iters, warmup, threads, dump=None):
  env = dict(os.environ)
  # Spinning OpenMP workers collapse on a shared machine (seconds per step when another process
  # holds a core); passive waiting gives PyTorch its best case there and costs it little otherwise.
  env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  if _HUGEPAGES:
    env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
  if framework in ("jax", FLOOR) and DEVICE == "cpu":
    env.setdefault("JAX_PLATFORMS", "cpu")
  cmd = [
      sys.executable,
      os.path.abspath(__file__),
      f"--framework={framework}",
      f"--iters={iters}",
      f"--warmup={warmup}",
      f"--threads={threads}",
      f"--batch={BATCH}",
      f"--size={HEIGHT}",
      f"--dim={DIM}",
      f"--instances={INSTANCES}",
      f"--device={DEVICE}",
  ]
  if dump:
    cmd.append(f"--dump={dump}")
  cores = sorted(os.sched_getaffinity(0))[:threads]
  out = subprocess.run(
      cmd,
      env=env,
      check=True,
      capture_output=True,
      text=True,
      preexec_fn=lambda: os.sched_setaffinity(0, cores),
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def check_agreement(threads: int) -> dict[str, float]:
  """Loss of each framework; raises if the losses or gradients disagree."""
  import tempfile

  results, grads = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for fw in FRAMEWORKS:
      path = os.path.join(tmp, f"{fw}.npy")
      results[fw] = _child(fw, iters=1, warmup=0, threads=threads, dump=path)["loss"]
      grads[fw] = np.load(path)
  for fw in FRAMEWORKS[1:]:
    if not np.isclose(results[fw], results["jax"], rtol=1e-4):
      raise AssertionError(f"loss of {fw} {results[fw]} != jax {results['jax']}")
    scale = np.abs(grads["jax"]).max()
    if not np.allclose(grads[fw], grads["jax"], rtol=1e-3, atol=1e-4 * scale):
      raise AssertionError(f"gradient of {fw} differs from jax's")
  return results


def drive(rounds: int, iters: int, warmup: int, threads: int) -> None:
  losses = check_agreement(threads)
  print("loss agrees:", ", ".join(f"{fw} {v:.6f}" for fw, v in losses.items()))
  per_round = {fw: [] for fw in FRAMEWORKS + (FLOOR,)}
  for r in range(rounds):
    for fw in FRAMEWORKS + (FLOOR,):
      n = max(2, iters // 4) if fw == "torch_loop" else iters
      per_round[fw].append(np.median(_child(fw, n, warmup, threads)["times_ms"]))
    print(
        f"round {r + 1}/{rounds}: "
        + ", ".join(f"{fw} {per_round[fw][-1]:.1f} ms" for fw in FRAMEWORKS + (FLOOR,)),
        flush=True,
    )
  med = {fw: float(np.median(v)) for fw, v in per_round.items()}
  # Each round runs the three back to back, so its ratios see the same machine load.
  ratio = {
      fw: float(np.median(np.array(per_round[fw]) / np.array(per_round["jax"])))
      for fw in FRAMEWORKS
  }
  print(
      f"\nB={BATCH} {HEIGHT}x{WIDTH} D={DIM} {INSTANCES} instances/image, forward+backward, "
      f"{threads} thread(s), median of {rounds} rounds" + (", huge pages" if _HUGEPAGES else "")
  )
  print(f"{'implementation':<12} {'ms':>9} {'x jax (medians)':>16} {'x jax (per round)':>18}")
  for fw in FRAMEWORKS:
    print(f"{fw:<12} {med[fw]:>9.1f} {med[fw] / med['jax']:>16.1f} {ratio[fw]:>18.1f}")
  megabytes = BATCH * HEIGHT * WIDTH * DIM * 4 / 1e6
  print(
      f"floor: jitted x * 2 of the embeddings (read {megabytes:.1f} MB, write a fresh "
      f"{megabytes:.1f} MB) takes {med[FLOOR]:.1f} ms; our loss takes "
      f"{med['jax'] / med[FLOOR]:.1f}x that"
  )
  if PEAK_GBPS:
    # The least any forward+backward moves: the embeddings and labels read, the gradient written.
    moved = 2 * megabytes + BATCH * HEIGHT * WIDTH * 4 / 1e6
    floor_ms = moved / PEAK_GBPS  # MB / (GB/s) = ms
    print(
        f"bandwidth floor: {moved:.0f} MB at the device's peak {PEAK_GBPS:.0f} GB/s takes "
        f"{floor_ms:.2f} ms; our loss takes {med['jax'] / floor_ms:.1f}x that, the jitted "
        f"x * 2 {med[FLOOR] / floor_ms:.1f}x"
    )


def main() -> None:
  global _HUGEPAGES, BATCH, HEIGHT, WIDTH, DIM, INSTANCES, DEVICE, PEAK_GBPS
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--framework",
      choices=FRAMEWORKS + (FLOOR,),
      default=None,
      help="time one framework in this process; default: drive all three",
  )
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--iters", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
  parser.add_argument("--dump", default=None, help="save the gradient here (.npy)")
  parser.add_argument("--batch", type=int, default=BATCH)
  parser.add_argument("--size", type=int, default=HEIGHT, help="height and width")
  parser.add_argument("--dim", type=int, default=DIM)
  parser.add_argument("--instances", type=int, default=INSTANCES)
  parser.add_argument("--device", default=DEVICE, help="cpu, or cuda for a GPU")
  parser.add_argument(
      "--peak_gbps",
      type=float,
      default=PEAK_GBPS,
      help="the device's peak memory bandwidth, GB/s (0 = not reported)",
  )
  parser.add_argument(
      "--hugepages",
      action="store_true",
      help="run every framework with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "
      "(transparent huge pages for large allocations: fewer page faults on the "
      "fresh 33 MB buffers both frameworks allocate per step)",
  )
  args = parser.parse_args()
  _HUGEPAGES = args.hugepages
  BATCH, HEIGHT, WIDTH, DIM, INSTANCES = (
      args.batch,
      args.size,
      args.size,
      args.dim,
      args.instances,
  )
  DEVICE, PEAK_GBPS = args.device, args.peak_gbps
  if args.framework:
    print(json.dumps(run_one(args.framework, args.iters, args.warmup, args.threads, args.dump)))
  else:
    drive(args.rounds, args.iters, args.warmup, args.threads)


if __name__ == "__main__":
  main()
