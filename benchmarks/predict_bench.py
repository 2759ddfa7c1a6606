"""Prediction throughput: `--mode=predict`'s path against the peers' pipeline, images/s.

Three folders of nuclei-like PNGs (benchmarks/scenes.py layouts, bright nuclei on a dark
background): 256x256, 512x512, and mixed sizes as DSB2018 has them. For every image both sides
read the file, run the network on the whole image at its own scale (configs/dsb2018.py: the
default UNet, "native" size mode, max_instances 384), cluster the foreground embeddings and write
a 16-bit label PNG and a colour overlay PNG:

* ours: `predict.read_rgb`, `inference.Segmenter.network`, `inference.apply_postprocess` (mean
  shift, bandwidth config.cluster.bandwidth), `viz.save_png` of the labels and the overlay, as
  `predict.predict` does for each file;
* peers: PIL, the same UNet in PyTorch (benchmarks/torch_unet.py) under `torch.no_grad()`,
  sklearn `MeanShift(bandwidth=--peer_bandwidth, bin_seeding=True)` on the foreground
  embeddings, PIL for both PNGs.

No trained nuclei model is used: the networks have random weights, so their embeddings mean
nothing. After each network has run, its embedding and foreground are replaced by trained-like
ones of the image's true layout (scenes.embeddings, written beside the folder), the same for both
sides: the network's time is paid, and both clusterers get equal inputs, so their matching
accuracy (the StarDist protocol at IoU 0.5, pooled over the folder) is compared fairly.

Each side runs in its own process on the same cores (benchmarks/driver.py); the driver has each
process the whole folder in turn, alternating which goes first, for --rounds rounds, and reports
the median over rounds; the first round of ours, which compiles the network once per image
shape and the mean shift once per power of two of pixels, is also reported on its own.

Run:
  .venv/bin/python benchmarks/predict_bench.py [--images 6] [--rounds 3] [--folders 256 512 mixed]
      [--device cpu|cuda] [--tiny]

--tiny: the tiny config's model, 48-96 pixel images, 2 per folder, 3 rounds (a smoke test).
"""

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import driver  # pylint: disable=g-import-not-at-top,wrong-import-position
import scenes  # pylint: disable=g-import-not-at-top,wrong-import-position

# DSB2018's most common sizes, largest last; a folder of them compiles one network per size.
MIXED = ((256, 256), (256, 320), (260, 347), (360, 360), (512, 640), (520, 696))
TINY_MIXED = ((48, 48), (48, 64), (56, 56), (64, 80))


def _config(tiny: bool):
  from configs import dsb2018  # pylint: disable=g-import-not-at-top
  from configs import tiny as tiny_config  # pylint: disable=g-import-not-at-top

  config = dsb2018.get_config()
  if tiny:
    small = tiny_config.get_config()
    config.model.features = small.model.features
    config.model.embedding_dim = small.model.embedding_dim
  return config


def _render(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
  """(H, W, 3) uint8: nuclei of varied brightness, blurred edges and noise on a dark ground."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top

  brightness = np.concatenate([[0.05], rng.uniform(0.4, 0.9, labels.max())])
  image = ndimage.gaussian_filter(brightness[labels], 1.0) + rng.normal(0, 0.03, labels.shape)
  grey = (np.clip(image, 0, 1) * 255).astype(np.uint8)
  return np.stack([grey // 3, grey // 2, grey], axis=-1)  # a stain's tint


def write_folders(root: str, sizes: dict[str, list[tuple[int, int]]], dim: int, seed: int) -> None:
  """root/<folder>/<stem>.png, and the truth and embeddings in root/<folder>_truth/<stem>.npz."""
  rng = np.random.default_rng(seed)
  for folder, shapes in sizes.items():
    os.makedirs(os.path.join(root, folder))
    os.makedirs(os.path.join(root, f"{folder}_truth"))
    for i, shape in enumerate(shapes):
      labels = scenes.nuclei_layout(rng, shape)
      embedding = scenes.embeddings(rng, labels, dim=dim)
      stem = f"nuclei{i:02d}_{shape[0]}x{shape[1]}"
      Image.fromarray(_render(rng, labels)).save(os.path.join(root, folder, f"{stem}.png"))
      np.savez(
          os.path.join(root, f"{folder}_truth", f"{stem}.npz"), labels=labels, embedding=embedding
      )


def _truth(folder: str) -> dict[str, dict[str, np.ndarray]]:
  truth_dir = folder.rstrip("/") + "_truth"
  return {
      name[:-4]: dict(np.load(os.path.join(truth_dir, name)))
      for name in sorted(os.listdir(truth_dir))
  }


def _images(folder: str) -> list[str]:
  return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".png")]


def _accuracy(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
  from instseg_jax.metrics import matching  # pylint: disable=g-import-not-at-top

  pooled = matching.MatchingAccumulator(thresholds=(0.5,))
  for truth, labels in pairs:
    pooled.add(truth, labels)
  return pooled.summary()["accuracy@0.5"]


def jax_child(tiny: bool) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from instseg_jax import inference  # pylint: disable=g-import-not-at-top
  from instseg_jax import models  # pylint: disable=g-import-not-at-top
  from instseg_jax import predict  # pylint: disable=g-import-not-at-top
  from instseg_jax import viz  # pylint: disable=g-import-not-at-top

  config = _config(tiny)
  model = models.create_model(config)
  stride = model.stride
  params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, stride, stride, 3), np.float32))
  segmenter = inference.Segmenter(config, params["params"])

  def run(folder: str, output: str) -> dict:
    truth = _truth(folder)
    os.makedirs(output, exist_ok=True)
    pairs, start = [], time.perf_counter()
    for path in _images(folder):
      stem = os.path.basename(path)[:-4]
      image = predict.read_rgb(path)
      network = segmenter.network(image)
      # Trained-like embeddings of the true layout in place of the random network's (see above).
      network = dataclasses.replace(
          network,
          embedding=truth[stem]["embedding"],
          foreground=(truth[stem]["labels"] > 0).astype(np.float32),
      )
      labels = inference.apply_postprocess(network, segmenter.postprocess).labels
      viz.save_png(os.path.join(output, f"{stem}_labels.png"), labels.astype(np.uint16))
      viz.save_png(os.path.join(output, f"{stem}_overlay.png"), viz.overlay(image, labels))
      pairs.append((truth[stem]["labels"], labels))
    seconds = time.perf_counter() - start
    return {"s": seconds, "images": len(pairs), "accuracy": _accuracy(pairs)}

  driver.serve({"run": run, "device": lambda: str(jax.devices()[0].device_kind)})


def torch_child(tiny: bool, bandwidth: float, device: str, threads: int) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  from sklearn.cluster import MeanShift  # pylint: disable=g-import-not-at-top
  import torch_unet  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = torch_unet.from_config(_config(tiny)).to(device).eval()
  palette = np.random.default_rng(0).integers(64, 256, (65536, 3)).astype(np.uint8)

  def network(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embedding (H, W, D), foreground probability (H, W)) of an image padded to the stride."""
    height, width = image.shape[:2]
    pad_h, pad_w = -height % model.stride, -width % model.stride
    x = torch.from_numpy(np.pad(image, ((0, pad_h), (0, pad_w), (0, 0))))
    with torch.no_grad():
      embedding, semantic = model(x.permute(2, 0, 1)[None].to(device))
      embedding = embedding[0, :, :height, :width].permute(1, 2, 0).cpu().numpy()
      foreground = torch.softmax(semantic, 1)[0, 1, :height, :width].cpu().numpy()
    return embedding, foreground

  def segment(image: np.ndarray, truth: dict[str, np.ndarray]) -> np.ndarray:
    network(image)
    # Trained-like embeddings of the true layout in place of the random network's (see above).
    embedding, mask = truth["embedding"], truth["labels"] > 0
    labels = np.zeros(mask.shape, np.int32)
    if mask.any():
      labels[mask] = (
          MeanShift(bandwidth=bandwidth, bin_seeding=True).fit_predict(embedding[mask]) + 1
      )
    return labels

  def run(folder: str, output: str) -> dict:
    truth = _truth(folder)
    os.makedirs(output, exist_ok=True)
    pairs, start = [], time.perf_counter()
    for path in _images(folder):
      stem = os.path.basename(path)[:-4]
      rgb = np.asarray(Image.open(path).convert("RGB"))
      labels = segment(rgb.astype(np.float32) / 255.0, truth[stem])
      Image.fromarray(labels.astype(np.uint16)).save(os.path.join(output, f"{stem}_labels.png"))
      colours = np.where(labels[..., None] > 0, palette[labels], rgb)
      overlay = (0.5 * rgb + 0.5 * colours).astype(np.uint8)
      Image.fromarray(overlay).save(os.path.join(output, f"{stem}_overlay.png"))
      pairs.append((truth[stem]["labels"], labels))
    seconds = time.perf_counter() - start
    return {"s": seconds, "images": len(pairs), "accuracy": _accuracy(pairs)}

  driver.serve(
      {"run": run, "device": lambda: torch.cuda.get_device_name() if device == "cuda" else "cpu"}
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--child", choices=("jax", "torch"), default=None)
  parser.add_argument("--images", type=int, default=6, help="images per same-size folder")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--folders", nargs="+", default=["256", "512", "mixed"])
  parser.add_argument(
      "--peer_bandwidth",
      type=float,
      default=1.5,
      help="sklearn's: delta_d, as the peers' code clusters",
  )
  parser.add_argument("--device", default="cpu", help="the PyTorch device of the peers")
  parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tiny", action="store_true", help="a smoke test of a few seconds")
  args = parser.parse_args()
  if args.child == "jax":
    jax_child(args.tiny)
    return
  if args.child == "torch":
    torch_child(args.tiny, args.peer_bandwidth, args.device, args.threads)
    return
  if args.tiny:
    args.images, args.rounds = 2, 3
  square = {"256": 64, "512": 96} if args.tiny else {"256": 256, "512": 512}
  sizes = {
      name: (
          [(square[name], square[name])] * args.images
          if name in square
          else list(TINY_MIXED if args.tiny else MIXED)
      )
      for name in args.folders
  }
  root = tempfile.mkdtemp(prefix="predict_bench_")
  try:
    config = _config(args.tiny)
    write_folders(root, sizes, config.model.embedding_dim, args.seed)
    tiny = ["--tiny"] if args.tiny else []
    script = os.path.abspath(__file__)
    ours = driver.Child(script, ["--child=jax", *tiny], args.threads)
    peers = driver.Child(
        script,
        [
            "--child=torch",
            f"--peer_bandwidth={args.peer_bandwidth}",
            f"--device={args.device}",
            f"--threads={args.threads}",
            *tiny,
        ],
        args.threads,
    )
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {driver.machine()}; ours on "
        f"{ours.call('device')}, peers' network on {peers.call('device')}; {args.threads} "
        f"threads per process; load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds; "
        f"ours: bandwidth {config.cluster.bandwidth}, peers: MeanShift(bandwidth="
        f"{args.peer_bandwidth}, bin_seeding=True)",
        flush=True,
    )
    print(
        "\n| folder | images | ours images/s (first round) | peers images/s | ours faster by | "
        "matching accuracy@0.5 ours / peers |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, shapes in sizes.items():
      folder = os.path.join(root, name)
      seconds = {"ours": [], "peers": []}
      results = {}
      for r in range(args.rounds):
        order = [("ours", ours), ("peers", peers)]
        for side, child in order if r % 2 == 0 else order[::-1]:
          results[side] = child.call("run", folder=folder, output=os.path.join(root, "out", side))
          seconds[side].append(results[side]["s"])
      n = len(shapes)
      # The first round of ours compiles; the median over rounds is the steady state.
      ours_ips, peers_ips = n / np.median(seconds["ours"]), n / np.median(seconds["peers"])
      label = ("mixed " if name == "mixed" else "") + ", ".join(
          dict.fromkeys(f"{h}x{w}" for h, w in shapes)
      )  # distinct sizes, in order
      print(
          f"| {label} | {n} | {ours_ips:.2f} ({n / seconds['ours'][0]:.2f}) | "
          f"{peers_ips:.3f} | {ours_ips / peers_ips:.1f}x | "
          f"{results['ours']['accuracy']:.3f} / {results['peers']['accuracy']:.3f} |",
          flush=True,
      )
    ours.close()
    peers.close()
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
