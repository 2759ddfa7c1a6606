#!/usr/bin/env bash
# GPU figures in one go on one GPU: the loss, model, clustering and prediction benchmarks,
# written with the device's name to one file. Sized for under 5 minutes from the CPU timings of
# its parts (sklearn's side, on the CPU, is the largest); not yet run on a GPU.
#
#   benchmarks/gpu.sh [OUT]                 # OUT: default runs/gpu_bench/<UTC time>.md
#   GPU_BENCH_TINY=1 benchmarks/gpu.sh      # tiny sizes on whatever jax sees, CPU included:
#                                           # checks that every step runs (about 3 min on 2 cores)
#
# Needs jax with CUDA and torch with CUDA in $PYTHON's environment (default .venv/bin/python),
# e.g. pip install -e '.[bench]' 'jax[cuda12]'. What it runs:
#   loss:       B=32, 512x512, D=32, 32 instances, ours (jit value_and_grad) against the PyTorch
#               loop and vectorised losses, and against the memory-bandwidth floor: the bytes any
#               forward+backward moves (embeddings and labels read, gradient written) over the
#               device's peak bandwidth (PEAK_GBPS, or the table below by device name);
#   model:      the UNet's train step, batch 32 at 256x256, ours in bfloat16
#               (config.model.dtype) against the same UNet in PyTorch under bfloat16 autocast;
#   clustering: ours on the GPU against sklearn MeanShift (CPU), 256 and 512, bandwidths 1 and 1.5;
#   prediction: predict's path against the PyTorch UNet (on the GPU) + sklearn MeanShift.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TINY=${GPU_BENCH_TINY:-0}
OUT=${1:-runs/gpu_bench/$(date -u +%Y%m%d_%H%M%S).md}
mkdir -p "$(dirname "$OUT")"
# Two frameworks share the device in the prediction benchmark: neither may take it all.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

DEVICE_LINE=$("$PY" -c '
import jax
d = jax.devices()[0]
print(d.platform, d.device_kind)' 2>/dev/null | tail -n 1) || true
if [[ -z "$DEVICE_LINE" ]]; then
  echo "$PY cannot import jax; set PYTHON to an environment with jax and torch" >&2
  exit 1
fi
read -r PLATFORM DEVICE_NAME <<< "$DEVICE_LINE"
if [[ "$PLATFORM" != gpu && "$PLATFORM" != cuda && "$TINY" != 1 ]]; then
  echo "jax sees no GPU (platform $PLATFORM); GPU_BENCH_TINY=1 $0 runs tiny sizes on it" >&2
  exit 1
fi
TORCH_DEVICE=cpu
if [[ "$PLATFORM" == gpu || "$PLATFORM" == cuda ]]; then TORCH_DEVICE=cuda; fi

# Peak memory bandwidth, GB/s, of common data-centre GPUs (vendors' data sheets).
if [[ -z "${PEAK_GBPS:-}" ]]; then
  case "$DEVICE_NAME" in
    *H200*) PEAK_GBPS=4800 ;;
    *H100*PCIe*) PEAK_GBPS=2000 ;;
    *H100*) PEAK_GBPS=3350 ;;
    *A100*80GB*) PEAK_GBPS=2039 ;;
    *A100*) PEAK_GBPS=1555 ;;
    *L40S*) PEAK_GBPS=864 ;;
    *L4*) PEAK_GBPS=300 ;;
    *V100*) PEAK_GBPS=900 ;;
    *T4*) PEAK_GBPS=320 ;;
    *) PEAK_GBPS=0 ;;  # unknown: the floor is reported as the measured x * 2 only
  esac
fi

if [[ "$TINY" == 1 ]]; then
  LOSS=(--batch 2 --size 32 --dim 4 --instances 4 --rounds 1 --iters 2 --warmup 1)
  MODEL=(--batch 1 --size 32 --rounds 1 --iters 1 --warmup 1)
  CLUSTER=(--tiny)
  PREDICT=(--tiny)
else
  LOSS=(--batch 32 --size 512 --dim 32 --instances 32 --rounds 3 --iters 10 --warmup 3)
  MODEL=(--batch 32 --size 256 --rounds 3 --iters 5 --warmup 3)
  CLUSTER=(--num_images 2 --rounds 1 --sizes 256 512)
  PREDICT=(--images 3 --rounds 3 --folders 512 mixed)
fi

{
  echo "# GPU benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "device: $DEVICE_NAME (jax platform $PLATFORM; PyTorch on $TORCH_DEVICE)" \
       "peak bandwidth ${PEAK_GBPS} GB/s; $(nproc) CPU cores; tiny=$TINY"
  if command -v nvidia-smi > /dev/null; then
    echo
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory,driver_version \
      --format=csv
  fi
} | tee "$OUT"

step() {
  local name=$1
  shift
  local start=$SECONDS
  { echo; echo "## $name"; echo; echo '```'; } | tee -a "$OUT"
  "$PY" "$@" 2>&1 | { grep -v -i "warning" || true; } | tee -a "$OUT"
  { echo '```'; echo "($((SECONDS - start)) s)"; } | tee -a "$OUT"
}

step "loss" benchmarks/loss_bench.py "${LOSS[@]}" --device "$TORCH_DEVICE" \
  --peak_gbps "$PEAK_GBPS"
step "model: train step, bfloat16 against autocast" benchmarks/model_bench.py --skip-models \
  --skip-flax-layers --dtype bfloat16 --device "$TORCH_DEVICE" "${MODEL[@]}"
step "clustering" benchmarks/cluster_bench.py "${CLUSTER[@]}"
step "prediction" benchmarks/predict_bench.py "${PREDICT[@]}" --device "$TORCH_DEVICE"
echo "total ${SECONDS} s; written to $OUT"
