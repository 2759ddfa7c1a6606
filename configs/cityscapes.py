"""Cityscapes fine annotations: instances of the 8 classes of the benchmark.

    python -m instseg_jax.main --config=configs/cityscapes.py --workdir=runs/cityscapes \
        --config.data.manual_dir=/path/to/cityscapes

    python -m instseg_jax.main --config=configs/cityscapes.py --workdir=runs/cityscapes \
        --config.data.manual_dir=/path/to/cityscapes --mode=inspect

manual_dir holds leftImg8bit/ and gtFine/ (train and val). Classes: 0 other,
1 person, 2 rider, 3 car, 4 truck, 5 bus, 6 train, 7 motorcycle, 8 bicycle.
Groups drawn as one region ("cars") are ignored as instances; void pixels and
the caravan and trailer classes are ignored in both maps.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "cityscapes"
  config.data.builder_config = "fine"
  config.data.eval_split = "validation"
  config.data.num_classes = 9
  config.data.image_size = (512, 1024)  # 2048x1024 halved, aspect kept
  config.data.max_instances = 128
  config.data.num_eval_images = 0  # the whole validation split (500)
  config.data.aug_vflip = False  # streets have an up
  config.data.aug_rot90 = False
  config.data.aug_max_degrees = 5.0
  config.data.aug_scale_range = (1.0, 2.0)  # zoom in: small objects at full resolution
  config.data.aug_saturation = 0.2
  config.data.read_threads = 4
  config.train.batch_size = 8
  config.train.num_steps = 60000
  config.train.checkpoint_every = 2000
  config.eval.metric = "AP"  # COCO-style mask AP, what these data sets report
  return config
