#!/usr/bin/env bash
# N processes of the same command on this machine, joined by jax.distributed over localhost.
#   launch/local_multiprocess.sh 2 --config=configs/circles.py --workdir=runs/circles_2proc
# DEVICES_PER_PROCESS (default 1) fake CPU devices per process; PORT (default 12355) for the coordinator.
set -euo pipefail
num_processes=${1:?usage: $0 NUM_PROCESSES [flags for instseg_jax.main]}
shift
python=${PYTHON:-python}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
port=${PORT:-12355}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
for ((i = 0; i < num_processes; i++)); do
  "$python" -m instseg_jax.main --multihost --coordinator_address="localhost:$port" \
    --num_processes="$num_processes" --process_id="$i" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
