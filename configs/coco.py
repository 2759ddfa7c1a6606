"""COCO 2017 instances: 80 classes, crowds ignored.

    python -m instseg_jax.main --config=configs/coco.py --workdir=runs/coco \
        --config.data.manual_dir=/path/to/coco

    python -m instseg_jax.main --config=configs/coco.py --workdir=runs/coco \
        --config.data.manual_dir=/path/to/coco --mode=inspect

manual_dir holds annotations/instances_{train,val}2017.json, train2017/ and
val2017/. Writing the 118k training images takes a few hours on first use;
later runs reuse the files in config.data.data_dir. Crowd regions reach the
batches as config.data.ignore_label in the instance map (their class is kept
in the semantic map).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "coco"
  config.data.builder_config = "2017"
  config.data.eval_split = "validation"
  config.data.num_classes = 81  # background + 80 categories
  config.data.image_size = (512, 512)  # images are at most 640x640
  config.data.size_mode = "fit"
  config.data.ignore_padding = True
  # A few images hold more than 100 objects; raise this or set
  # skip_bad_examples=True to leave them out of training (the error names them).
  config.data.max_instances = 128
  config.data.num_eval_images = 500
  config.data.aug_vflip = False
  config.data.aug_rot90 = False
  config.data.aug_max_degrees = 10.0
  config.data.aug_scale_range = (0.75, 1.5)
  config.data.aug_saturation = 0.3
  config.data.read_threads = 4
  config.train.batch_size = 16
  config.train.num_steps = 100000
  config.train.checkpoint_every = 5000
  config.eval.metric = "AP"  # COCO-style mask AP, what these data sets report
  return config
