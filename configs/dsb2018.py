"""DSB2018 nuclei, or any images/ + labels/ folder pair (the instance_folder builder).

    python -m instseg_jax.main --config=configs/dsb2018.py --workdir=runs/dsb2018 \
        --config.data.manual_dir=/path/to/dsb2018

    python -m instseg_jax.main --config=configs/dsb2018.py --workdir=runs/dsb2018 \
        --config.data.manual_dir=/path/to/dsb2018 --mode=inspect

manual_dir holds images/<stem>.png|.tif and labels/<stem>.png|.tif (16-bit
instance ids), matched by stem; or train/, validation/, test/ each with that
pair. Without split folders, a deterministic 20 % is held out as "validation".
Try it on the four committed images: --config.data.manual_dir=third_party/dsb2018_sample
(with --config.data.validation_fraction=0.25 --config.train.batch_size=2).

Images range from 256x256 to 1040x1388 and nuclei keep their size in
micrometres, so training crops 256x256 windows at the images' own scale
("native": zoomed by 0.75-1.33) instead of shrinking whole images;
evaluate and predict run the network on each whole image at its own scale.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "instance_folder"
  config.data.builder_config = "default"
  config.data.eval_split = "validation"
  config.data.image_size = (256, 256)
  config.data.size_mode = "native"
  # The largest image holds 375 nuclei; the limit is checked on whole images.
  config.data.max_instances = 384
  config.data.num_eval_images = 0  # the whole validation split
  # Tune on the first 113 training images (as many as validation holds), not on validation.
  config.cluster.tune_split = "train"
  config.cluster.tune_images = 113
  config.data.aug_max_degrees = 15.0
  config.data.aug_scale_range = (0.75, 1.33)
  # Mixed modalities (dark fluorescence, stained tissue, brightfield) become one: bright nuclei
  # on a dark background, each image stretched by its own percentiles.
  config.data.normalize = "nuclei"
  config.data.aug_brightness = 0.1
  config.data.aug_contrast = 0.2
  # Hundreds of alike nuclei: pixel coordinates in the embedding separate distant ones for free,
  # so the push term works on neighbours; "pixels" is the same on crops and whole images.
  config.model.position_encoding = "pixels"
  # One unit per 8 pixels, about a nucleus's radius: neighbours start a unit or more apart in
  # embedding space (32, the default, let touching nuclei merge: see configs/dsb2018_cpu.py).
  config.model.pixels_per_unit = 8.0
  # The foreground is what limits nuclei (configs/dsb2018_cpu.py): a soft Dice term beside the
  # cross-entropy weighs a missed dim nucleus by its share of the foreground, not of the image.
  config.loss.dice_weight = 1.0
  config.train.batch_size = 8
  config.train.num_steps = 10000
  config.train.checkpoint_every = 1000
  config.eval.metric = "accuracy@0.5"  # what nuclei users compare (StarDist's matching)
  return config
