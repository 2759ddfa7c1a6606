"""DSB2018 nuclei in under an hour of training on a 2-core CPU: configs/dsb2018.py, shorter.

    python -m instseg_jax.main --config=configs/dsb2018_cpu.py --workdir=runs/dsb2018_cpu \
        --config.data.manual_dir=../shared/data/dsb2018
    python -m instseg_jax.main --config=configs/dsb2018_cpu.py --workdir=runs/dsb2018_cpu \
        --config.data.manual_dir=../shared/data/dsb2018 --mode=tune

Measured 2026-12-04 on the project's 2-core x86_64 CPU machine (no GPU): 1800 steps at
1.55 s/step when alone (46 min of training; the run shared the cores part of the time, 77 min of
wall clock); on the 113 validation images, through --mode=tune then --mode=predict, the label
PNGs scored on their own grid (benchmarks/holdout.sh): matching accuracy@0.5 0.554, F1@0.5
0.713, SBD 0.757, FBD 0.888, DiC -4.3, |DiC| 8.8 (before tuning: accuracy@0.5 0.500; with the
clustering of that day, before its subsample grew to 16 points per seed: 0.548). Short of
the 0.80 asked for and StarDist's 0.86: dim nuclei come out small and dense fields merge. The
model is shipped as --model=nuclei (instseg_jax/pretrained/README.md).

Where the errors are (the tuned predictions, by kind of image): dark fluorescence with large
nuclei, accuracy@0.5 0.80 (29 images); dark fluorescence with mid-sized nuclei 0.56 (40; in
dense rows neighbours share an instance); dark fluorescence with small nuclei 0.72 (22);
stained tissue 0.38-0.43 (18); brightfield 0.13 (4; the inverted cytoplasm is taken for
nuclei: 418 false positives). The ground truth's own foreground cut into connected components
would score 0.776, so the split of touching nuclei matters as much as the foreground.

Probe, 2026-12-05, same machine: model.pixels_per_unit 8 instead of 32, the same 1800-step
schedule stopped at step 500 (13 min), --mode=evaluate on the 113 validation images with the
config's post-processing: accuracy@0.5 0.480, F1@0.5 0.648, AP50 0.544, DiC +6.1, against
0.404, 0.576, 0.413, DiC -10.1 for this recipe's own step-500 checkpoint. Neighbours start
apart; the merges turn into splits. Not yet trained to the end.
"""

from configs import dsb2018


def get_config():
  config = dsb2018.get_config()
  config.train.num_steps = 1800  # as measured above
  config.train.checkpoint_every = 250
  config.train.keep_checkpoints = 10
  return config
