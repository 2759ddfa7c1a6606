"""DSB2018 nuclei in under an hour of training on a 2-core CPU: configs/dsb2018.py, shorter.

    python -m instseg_jax.main --config=configs/dsb2018_cpu.py --workdir=runs/dsb2018_cpu \
        --config.data.manual_dir=../shared/data/dsb2018
    python -m instseg_jax.main --config=configs/dsb2018_cpu.py --workdir=runs/dsb2018_cpu \
        --config.data.manual_dir=../shared/data/dsb2018 --mode=tune

Not measured yet.
"""

from configs import dsb2018


def get_config():
  config = dsb2018.get_config()
  config.train.num_steps = 2000
  config.train.checkpoint_every = 250
  config.train.keep_checkpoints = 10
  return config
