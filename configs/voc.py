"""PASCAL VOC 2012 object segmentation: 20 classes, instance embeddings.

    python -m instseg_jax.main --config=configs/voc.py --workdir=runs/voc \
        --config.data.manual_dir=/path/to/VOCdevkit/VOC2012

    python -m instseg_jax.main --config=configs/voc.py --workdir=runs/voc \
        --config.data.manual_dir=/path/to/VOCdevkit/VOC2012 --mode=inspect

Splits: ImageSets/Segmentation/train.txt and val.txt. Object boundaries
(label 255) reach the batches as config.data.ignore_label and are left out of
both losses, as are the padding pixels around images fitted into the square
input (ignore_padding).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "voc"
  config.data.builder_config = "2012"
  config.data.eval_split = "validation"
  config.data.num_classes = 21  # background + 20 classes
  config.data.image_size = (320, 320)  # images are at most 500x500
  config.data.size_mode = "fit"  # keep the aspect ratio, pad the rest
  config.data.ignore_padding = True
  config.data.max_instances = 64
  config.data.aug_vflip = False  # photographs have an up
  config.data.aug_rot90 = False
  config.data.aug_max_degrees = 10.0
  config.data.aug_scale_range = (0.75, 1.5)
  config.data.aug_saturation = 0.3
  config.train.batch_size = 8
  config.train.num_steps = 30000
  config.train.checkpoint_every = 2000
  config.eval.metric = "AP"  # COCO-style mask AP, what these data sets report
  return config
