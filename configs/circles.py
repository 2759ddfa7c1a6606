"""The embedded default: synthetic circles, no download, about 11 minutes on a 2-core CPU.

python -m instseg_jax.main --config=configs/circles.py --workdir=runs/circles
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "circles"
  config.data.builder_config = "default"
  config.data.image_size = (96, 96)
  config.data.max_instances = 16
  config.data.num_eval_images = 100
  config.train.batch_size = 8
  config.train.num_steps = 2400
  config.train.checkpoint_every = 500
  config.train.eval_every = 800  # validation curves and pictures in TensorBoard while it trains
  # The smallest disc covers 78 pixels; fragments under 30 are boundary stragglers split off an
  # instance. Chosen on the training split: |DiC| 0.50 -> 0.35 there.
  config.cluster.min_size = 30
  return config
