#!/usr/bin/env bash
# A recipe as a user runs it: train, tune the post-processing (on config.cluster.tune_split:
# the train split for the recipes), predict the validation images' files, score the written
# label PNGs on their own grid.
#
#   benchmarks/holdout.sh configs/cvppp_cpu.py runs/cvppp_cpu ../shared/data/cvppp_a1_train
#   benchmarks/holdout.sh configs/dsb2018_cpu.py runs/dsb2018_cpu ../shared/data/dsb2018
#   benchmarks/holdout.sh configs/cvppp.py runs/cvppp DATA   # a GPU recipe, on a GPU
#   benchmarks/holdout.sh CONFIG WORKDIR DATA --config.loss.pull_margin=0.25   # a trial
#
# Prints the training time and the scores (also in WORKDIR/holdout.txt).
set -euo pipefail
CONFIG=${1:?config}; WORKDIR=${2:?workdir}; DATA=$(realpath "${3:?CVPPP folder}")
PY=${PYTHON:-.venv/bin/python}
OVERRIDES=("${@:4}")  # --config.field=value for every step
DATA_ARGS=(--config="$CONFIG" --config.data.manual_dir="$DATA" "${OVERRIDES[@]}")
ARGS=("${DATA_ARGS[@]}" --workdir="$WORKDIR")
mkdir -p "$WORKDIR"
start=$(date +%s)
"$PY" -m instseg_jax.main "${ARGS[@]}"
echo "training and the final evaluation took $(( $(date +%s) - start )) s on $(hostname)"
"$PY" -m instseg_jax.main "${ARGS[@]}" --mode=tune
"$PY" benchmarks/holdout.py images "${DATA_ARGS[@]}" --folder="$WORKDIR/holdout_images"
"$PY" -m instseg_jax.main "${ARGS[@]}" --mode=predict --input="$WORKDIR/holdout_images" \
    --output="$WORKDIR/holdout_predictions"
"$PY" benchmarks/holdout.py score "${DATA_ARGS[@]}" --folder="$WORKDIR/holdout_predictions" \
    | tee "$WORKDIR/holdout.txt"
