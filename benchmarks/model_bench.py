"""Train-step time of every model on CPU, and our UNet against the same UNet in PyTorch.

    .venv/bin/python benchmarks/model_bench.py                  # all below, ~20 min on 2 cores
    .venv/bin/python benchmarks/model_bench.py --skip-models    # only UNet: jax vs torch
    .venv/bin/python benchmarks/model_bench.py --child=jax:unet # one child, driven over stdin
    .venv/bin/python benchmarks/model_bench.py --skip-models --skip-flax-layers \
        --dtype=bfloat16 --device=cuda --batch=32     # on a GPU: bfloat16 against autocast

One train step: batch 8 of 256x256x3, forward, backward and an Adam update, on
configs/default.py's model block (features (16, 32, 64, 128), D = 8, K = 2). The loss is the
same simple one in both frameworks (mean squared embedding + cross-entropy of the semantic
logits against fixed labels) so that only the network is compared; the discriminative loss
has its own benchmark (loss_bench.py).

Every JAX step is timed twice, as jitted by default and jitted with
models.XLA_CPU_COMPILER_OPTIONS ("no_ynn": XLA's own convolutions instead of YNNPACK's, whose
weight-gradient convolutions are the slow part of a default step on CPU).

Part 1, every registered model: parameter count and median step time, one process per model.

Part 2, UNet: ours against a PyTorch UNet of the same layers (3x3 conv without bias,
GroupNorm with the same groups, ReLU, 2x2 max pooling, 2x2 stride-2 transposed convolution,
1x1 heads; the parameter counts are checked equal), and against our UNet built with
flax's nn.ConvTranspose and nn.max_pool (the layers it had before they were replaced, to
show what the replacement buys). Each runs in its own process (idle PyTorch OpenMP threads
slow JAX in a shared process), pinned to the same cores with the same thread count
(OMP_WAIT_POLICY=PASSIVE unless set); the processes compile once, then the driver
alternates them for several rounds, so each round's ratio sees the same machine load.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# --batch, --size, --dtype and --device change these in every process.
BATCH, SIZE = 8, 256
DTYPE = "float32"  # "bfloat16": ours with config.model.dtype, PyTorch under autocast
DEVICE = "cpu"  # "cuda": both on a GPU
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET_PAIR = ("jax:unet", "torch:unet", "jax:unet_flax_layers")


def _labels(rng: np.random.Generator) -> np.ndarray:
  return rng.integers(0, 2, size=(BATCH, SIZE, SIZE)).astype(np.int32)


def _jax_step(name: str):
  """({variant: step()}, parameter count) for a JAX model by registry name, or the
  flax-layers UNet; variants "default" and "no_ynn" (compiled with
  models.XLA_CPU_COMPILER_OPTIONS: XLA's own convolutions instead of YNNPACK's)."""
  sys.path.insert(0, REPO)
  import jax
  import jax.numpy as jnp
  import optax
  from configs import default
  from instseg_jax import models

  config = default.get_config()
  config.model.name = "unet" if name == "unet_flax_layers" else name
  config.model.dtype = DTYPE
  model = models.create_model(config)
  if name == "unet_flax_layers":
    model = _unet_with_flax_layers(config)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32))
  labels = jnp.asarray(_labels(rng))
  params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  def loss_fn(p, x, y):
    out = model.apply({"params": p}, x)
    logp = jax.nn.log_softmax(out["semantic_logits"], axis=-1)
    ce = -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1))
    return jnp.mean(out["embedding"] ** 2) + ce

  def train_step(p, s, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  state = {"params": params, "opt": opt_state}
  count = sum(x.size for x in jax.tree_util.tree_leaves(params))

  def make(options):
    # The batch is an argument, as in training: closed over, XLA would constant-fold through it.
    compiled = jax.jit(train_step, donate_argnums=(0, 1), compiler_options=options)

    def step():
      state["params"], state["opt"], loss = compiled(state["params"], state["opt"], images, labels)
      jax.block_until_ready(loss)

    return step

  if jax.default_backend() != "cpu":  # the other variant is a CPU compiler option
    return {"default": make(None)}, count
  return {"default": make(None), "no_ynn": make(models.XLA_CPU_COMPILER_OPTIONS)}, count


def _unet_with_flax_layers(config):
  """Our UNet with nn.ConvTranspose and nn.max_pool instead of Upsample2x and max_pool_2x2."""
  import flax.linen as nn
  import jax.numpy as jnp
  from instseg_jax.models import heads
  from instseg_jax.models import layers

  class FlaxLayersUNet(nn.Module):
    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
      skips = []
      for depth, width in enumerate(self.features):
        x = layers.DoubleConv(width, name=f"down_{depth}")(x)
        if depth < len(self.features) - 1:
          skips.append(x)
          x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for depth in reversed(range(len(self.features) - 1)):
        x = nn.ConvTranspose(
            self.features[depth], (2, 2), strides=(2, 2), name=f"upsample_{depth}"
        )(x)
        x = layers.DoubleConv(self.features[depth], name=f"up_{depth}")(
            jnp.concatenate([x, skips[depth]], axis=-1)
        )
      return heads.InstanceHeads(config.model.embedding_dim, config.data.num_classes, name="heads")(
          x
      )

  return FlaxLayersUNet(tuple(config.model.features))


def _torch_step(threads: int):
  """(step(), parameter count) for the PyTorch UNet of the same layers as ours."""
  import torch
  from torch import nn

  sys.path.insert(0, REPO)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from configs import default
  import torch_unet

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  config = default.get_config()

  model = torch_unet.from_config(config).to(DEVICE)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  rng = np.random.default_rng(0)
  images = torch.from_numpy(rng.uniform(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32))
  images = images.permute(0, 3, 1, 2).contiguous().to(DEVICE)
  labels = torch.from_numpy(_labels(rng).astype(np.int64)).to(DEVICE)
  device_type = "cuda" if DEVICE.startswith("cuda") else "cpu"

  def step():
    optimizer.zero_grad(set_to_none=True)
    # Mixed precision as PyTorch users get it: float32 weights, bfloat16 compute under autocast.
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=DTYPE == "bfloat16"):
      embedding, semantic = model(images)
      loss = embedding.float().pow(2).mean() + nn.functional.cross_entropy(semantic.float(), labels)
    loss.backward()
    optimizer.step()
    if device_type == "cuda":
      torch.cuda.synchronize()  # the step's kernels are queued, not done, until here

  return {"default": step}, sum(p.numel() for p in model.parameters())


def child(spec: str, threads: int, warmup: int) -> None:
  """Builds the steps, says "ready", then answers "run N VARIANT" lines with N step times (ms)."""
  framework, name = spec.split(":")
  start = time.perf_counter()
  steps, count = _torch_step(threads) if framework == "torch" else _jax_step(name)
  for step in steps.values():
    for _ in range(warmup):
      step()
  print(
      json.dumps(
          {
              "ready": spec,
              "params": int(count),
              "variants": sorted(steps),
              "setup_s": time.perf_counter() - start,
          }
      ),
      flush=True,
  )
  for line in sys.stdin:
    if not line.startswith("run"):
      break
    _, iters, variant = line.split()
    times = []
    for _ in range(int(iters)):
      t = time.perf_counter()
      steps[variant]()
      times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"times_ms": times}), flush=True)


class Child:
  """A child process pinned to `threads` cores, driven line by line."""

  def __init__(self, spec: str, threads: int, warmup: int):
    env = dict(os.environ)
    # Spinning OpenMP workers collapse on a shared machine; passive waiting is
    # PyTorch's best case there and costs it little otherwise.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if DEVICE == "cpu":
      env.setdefault("JAX_PLATFORMS", "cpu")
    cores = sorted(os.sched_getaffinity(0))[:threads]
    self.spec = spec
    self.proc = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath(__file__),
            f"--child={spec}",
            f"--threads={threads}",
            f"--warmup={warmup}",
            f"--batch={BATCH}",
            f"--size={SIZE}",
            f"--dtype={DTYPE}",
            f"--device={DEVICE}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    self.info = self._read()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"child {self.spec} died (exit {self.proc.wait()})")
    return json.loads(line)

  def run(self, iters: int, variant: str = "default") -> list[float]:
    self.proc.stdin.write(f"run {iters} {variant}\n")
    self.proc.stdin.flush()
    return self._read()["times_ms"]

  def close(self) -> None:
    self.proc.stdin.write("quit\n")
    self.proc.stdin.close()
    self.proc.wait()


def bench_models(threads: int, iters: int, warmup: int) -> None:
  sys.path.insert(0, REPO)
  from instseg_jax import models

  print(
      f"Part 1: train step, batch {BATCH} of {SIZE}x{SIZE}, {threads} thread(s), median of "
      f"{iters} steps per variant (the two variants alternate step by step)"
  )
  print(
      f"{'model':<12} {'parameters':>11} {'default ms':>11} {'no_ynn ms':>10} {'setup s':>8}",
      flush=True,
  )
  for name in models.MODELS:
    proc = Child(f"jax:{name}", threads, warmup)
    times = {"default": [], "no_ynn": []}
    for _ in range(iters):
      for variant, values in times.items():
        values += proc.run(1, variant)
    proc.close()
    print(
        f"{name:<12} {proc.info['params']:>11,} {np.median(times['default']):>11.0f} "
        f"{np.median(times['no_ynn']):>10.0f} {proc.info['setup_s']:>8.0f}",
        flush=True,
    )


def bench_unet(threads: int, rounds: int, iters: int, warmup: int, pair: tuple[str, ...]) -> None:
  procs = [Child(spec, threads, warmup) for spec in pair]
  counts = {p.spec: p.info["params"] for p in procs}
  if len(set(counts.values())) != 1:
    raise AssertionError(f"the UNets differ: parameter counts {counts}")
  rows = [(p, v) for p in procs for v in p.info["variants"]]
  label = lambda p, v: p.spec if v == "default" else f"{p.spec} {v}"
  per_round = {label(p, v): [] for p, v in rows}
  for r in range(rounds):
    for p, v in rows:
      per_round[label(p, v)].append(float(np.median(p.run(iters, v))))
    print(
        f"round {r + 1}/{rounds}: "
        + ", ".join(f"{name} {values[-1]:.0f} ms" for name, values in per_round.items()),
        flush=True,
    )
  for p in procs:
    p.close()
  ours = np.array(per_round["jax:unet"])
  print(
      f"\nPart 2: UNet ({counts['jax:unet']:,} parameters each), train step, batch {BATCH} "
      f"of {SIZE}x{SIZE}, {DTYPE} on {DEVICE}, {threads} thread(s), median over {rounds} rounds "
      f"of the median of {iters} steps"
  )
  print(
      f"{'implementation':<30} {'step ms':>9} {'/ jax:unet (medians)':>21} "
      f"{'/ jax:unet (per round)':>23}"
  )
  for name, values in per_round.items():
    values = np.array(values)
    print(
        f"{name:<30} {np.median(values):>9.0f} {np.median(values) / np.median(ours):>21.2f} "
        f"{np.median(values / ours):>23.2f}"
    )


def main() -> None:
  global BATCH, SIZE, DTYPE, DEVICE
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--child", default=None, help="framework:model; run as a driven child")
  parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--iters", type=int, default=3, help="steps per round (part 2) or per model")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--skip-models", action="store_true", help="only part 2")
  parser.add_argument("--skip-unet", action="store_true", help="only part 1")
  parser.add_argument(
      "--skip-flax-layers",
      action="store_true",
      help="part 2 without our UNet built of flax's layers",
  )
  parser.add_argument("--batch", type=int, default=BATCH)
  parser.add_argument("--size", type=int, default=SIZE, help="height and width")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=DTYPE)
  parser.add_argument("--device", default=DEVICE, help="cpu, or cuda for a GPU")
  args = parser.parse_args()
  BATCH, SIZE, DTYPE, DEVICE = args.batch, args.size, args.dtype, args.device
  if args.child:
    child(args.child, args.threads, args.warmup)
    return
  if not args.skip_models:
    bench_models(args.threads, max(args.iters, 5), args.warmup)
  if not args.skip_unet:
    pair = UNET_PAIR[:2] if args.skip_flax_layers else UNET_PAIR
    bench_unet(args.threads, args.rounds, args.iters, args.warmup, pair)


if __name__ == "__main__":
  main()
