"""Seconds-long runs for tests and smoke checks.

python -m instseg_jax.main --config=configs/tiny.py --workdir=/tmp/tiny
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "circles"
  config.data.builder_config = "tiny"
  config.data.image_size = (32, 32)
  config.data.max_instances = 8
  config.data.num_eval_images = 8
  config.model.features = (8, 16)
  config.model.embedding_dim = 4
  config.train.batch_size = 8
  config.train.num_steps = 6
  config.train.log_every = 2
  config.train.checkpoint_every = 3
  config.optim.warmup_steps = 2
  config.eval.num_panels = 2
  return config
