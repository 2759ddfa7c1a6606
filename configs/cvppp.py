"""CVPPP leaf segmentation (A1 by default): one instance per leaf.

    python -m instseg_jax.main --config=configs/cvppp.py --workdir=runs/cvppp \
        --config.data.manual_dir=/path/to/CVPPP2017_LSC_training/training

    # What the data hold and what the network sees (counts, sizes, sample sheet):
    python -m instseg_jax.main --config=configs/cvppp.py --workdir=runs/cvppp \
        --config.data.manual_dir=/path/to/cvppp --mode=inspect

manual_dir is the unpacked challenge archive, a folder holding A1/ A2/ ...,
or a flat folder of plantXXX_rgb.png + plantXXX_label.png (e.g. one subset).
Another subset: --config.data.builder_config=A2 (A1..A4, or "all"). The
labelled plants are split into train and a deterministic 20 % "validation"
(--config.data.validation_fraction); unlabelled testing folders become "test".
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "cvppp"
  config.data.builder_config = "A1"
  config.data.eval_split = "validation"
  config.data.image_size = (256, 256)   # 530x500 plants, shrunk about 2x
  config.data.max_instances = 32        # A1 has 11-20 leaves per plant
  config.data.num_eval_images = 0       # the whole validation split
  config.data.aug_max_degrees = 15.0    # rosettes have no up or down
  config.data.aug_scale_range = (0.8, 1.25)
  config.data.aug_saturation = 0.2
  config.train.batch_size = 8
  config.train.num_steps = 10000
  config.train.checkpoint_every = 1000
  return config
