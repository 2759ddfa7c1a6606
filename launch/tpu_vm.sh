#!/usr/bin/env bash
# The same command on every worker of a TPU VM slice; jax.distributed finds the others itself.
#   launch/tpu_vm.sh TPU_NAME ZONE --config=configs/cityscapes.py --workdir=gs://bucket/runs/cs
set -euo pipefail
tpu=${1:?usage: $0 TPU_NAME ZONE [flags for instseg_jax.main]}
zone=${2:?usage: $0 TPU_NAME ZONE [flags for instseg_jax.main]}
shift 2
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
  --command="cd instseg-jax && .venv/bin/python -m instseg_jax.main --multihost $(printf '%q ' "$@")"
