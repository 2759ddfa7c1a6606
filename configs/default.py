"""Base configuration every other config builds on: every field, its default and its meaning.

    python -m instseg_jax.main --config=configs/default.py --workdir=runs/default

The code reads every field as plain `config.x.y`. A config stored by an older version (an exported
bundle's config.json) may lack newer fields: `with_defaults` fills them in from here.
"""

from collections.abc import Mapping
from typing import Any

import ml_collections

from instseg_jax.models import layers


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter initialization, shuffling and augmentation

  config.data = ml_collections.ConfigDict()
  config.data.name = "circles"  # a key of instseg_jax.data.builders.BUILDERS
  config.data.builder_config = "default"  # the TFDS builder config; "" = the builder's default
  # Where TFDS writes array_record files; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets.
  config.data.data_dir = ""
  config.data.manual_dir = ""  # raw data for builders that cannot download
  config.data.train_split = "train"  # the split training reads
  config.data.eval_split = "test"  # the split evaluate, tune and evaluations in training read
  config.data.image_size = (128, 128)  # (H, W) fed to the network
  config.data.num_classes = 2  # semantic classes, background included
  config.data.max_instances = 32  # static bound on instances per image (loss segments)
  config.data.augment = True  # random crops, flips, turns and colour jitter in training
  config.data.shuffle_buffer = 0  # 0 = global shuffle through grain's index sampler
  config.data.worker_count = 0  # grain worker processes; 0 = in the main process
  config.data.num_eval_images = 100  # images of eval_split evaluated; 0 = all of them
  config.data.read_threads = 2  # grain threads per process, each making a whole batch
  config.data.prefetch_batches = 2  # batches read ahead per process (bounds host memory)
  config.data.aug_max_degrees = 15.0  # small-angle rotation drawn from [-x, x] degrees; 0 = off
  config.data.aug_scale_range = (0.75, 1.33)  # zoom range of the random crop; (1, 1) = resize
  config.data.aug_brightness = 0.2  # colour jitter: brightness shift drawn from [-x, x]
  config.data.aug_contrast = 0.2  # colour jitter: contrast factor from [1 - x, 1 + x]
  config.data.aug_saturation = 0.0  # colour jitter: saturation factor from [1 - x, 1 + x]
  config.data.aug_gamma = 0.0  # colour jitter first: intensities ** exp(U(-x, x)); 0 = off
  config.data.aug_hflip = True  # random left-right flips
  config.data.aug_vflip = True  # random up-down flips (off for street scenes)
  config.data.aug_rot90 = True  # random quarter turns (only 0/180 when H != W)
  # Probability that a crop is centred on a random instance pixel (small objects, large images).
  config.data.aug_foreground_crop = 0.0
  # A key of data.transforms.SIZE_MODES: "stretch" the whole image to image_size, "fit" it
  # keeping the aspect (padded), or crop at its "native" scale.
  config.data.size_mode = "stretch"
  # Per-image intensities, in training and inference alike: a key of
  # data.transforms.INTENSITY_NORMALIZATIONS ("nuclei": grey, dark background; "nuclei_local":
  # that grey, it stretched locally, and the stain's hue).
  config.data.normalize = "none"
  # Training visits of each image per epoch by its kind (data.transforms.image_kind), for
  # microscopy data that mixes kinds unevenly; all 1 = every image once.
  config.data.repeat_by_kind = ml_collections.ConfigDict(
      {"fluorescence": 1, "stained": 1, "brightfield": 1}
  )
  config.data.ignore_label = -1  # label of pixels the losses skip (VOC void, COCO crowd)
  # Pixels from outside the image (padding, rotation corners) get ignore_label, not 0.
  config.data.ignore_padding = False
  # Held out as "validation" from data without such a split (cvppp, instance_folder).
  config.data.validation_fraction = 0.2
  # Skip bad files and images over max_instances with a warning instead of failing.
  config.data.skip_bad_examples = False

  config.model = ml_collections.ConfigDict()
  config.model.name = "unet"  # a key of instseg_jax.models.MODELS
  config.model.features = (16, 32, 64, 128)  # channels per resolution level, shallow to deep
  config.model.embedding_dim = 8  # D: the size of each pixel's embedding
  config.model.dtype = "float32"  # compute dtype, a key of models.DTYPES; parameters stay f32
  # A key of models.layers.NORMS: "group" (GroupNorm), "affine" (frozen BatchNorm, pretrained).
  config.model.norm = "group"
  config.model.coord_conv = False  # append (y, x, r) coordinate channels to the input
  # Added to the embeddings: a key of models.layers.POSITION_ENCODINGS ("xy": semi-convolutional).
  config.model.position_encoding = "none"
  # position_encoding "pixels": image pixels per embedding unit. Smaller: neighbours start
  # further apart, and the network must pull the pixels of one object together over more units.
  config.model.pixels_per_unit = layers.PIXELS_PER_UNIT
  # Units per direction of a bi-LSTM context sweep before the embedding head; 0 = off.
  config.model.context_features = 0
  config.model.cell = "lstm"  # recurrent cell of ReSeg and the context sweep: renet.GATES
  config.model.remat = False  # recompute recurrent sweeps in the backward pass
  config.model.counter = False  # predict "count" = instances / max_instances (counter head)
  # Predict each pixel's nearness to its instance's centre (losses.seed_loss), for cluster "seeds".
  config.model.seed_head = False
  config.model.resnet_blocks = (2, 2, 2, 2)  # deeplabv3: residual blocks per stage
  # Local torch state_dict for the encoder (reseg: VGG-16, deeplabv3: ResNet); "" = none.
  config.model.pretrained = ""

  config.loss = ml_collections.ConfigDict()
  # The discriminative loss's options, named as `discriminative_loss` names them (its docstring
  # maps them to the paper's symbols); these defaults are the paper's loss. A preset sets the
  # options it names, whose fields below must then keep these values; the other fields still apply.
  config.loss.preset = ""  # a key of losses.LOSS_PRESETS, e.g. "authors"; "" = none
  config.loss.pull_margin = 0.5  # pixels nearer their mean are not pulled (paper: delta_v)
  config.loss.push_margin = 3.0  # means nearer than this are pushed apart (paper: 2 delta_d)
  config.loss.pull_weight = 1.0  # weight of the pull (variance) term (paper: alpha)
  config.loss.push_weight = 1.0  # weight of the push (distance) term (paper: beta)
  config.loss.regularization_weight = 0.001  # weight of the regularizer (paper: gamma)
  config.loss.pull_distance = "euclidean"  # pixel to its mean: "euclidean" | "manhattan"
  config.loss.push_distance = "euclidean"  # mean to mean: "euclidean" | "manhattan"
  config.loss.regularization_distance = "euclidean"  # mean to origin: "euclidean" | "manhattan"
  config.loss.pull_error = "squared"  # of the pull hinge: "squared" | "absolute" | "log_cosh"
  config.loss.push_error = "squared"  # of the push hinge: "squared" | "absolute" | "log_cosh"
  config.loss.regularization_error = "absolute"  # of a mean's distance from 0; "absolute": paper
  config.loss.normalization = "paper"  # "paper" | "pixel" (pull over all pixels) | "authors"
  config.loss.background_as_instance = False  # the background is one more cluster (authors' code)
  config.loss.max_label_id = 0  # promise: instance ids <= this (a table, no sort); 0 = none
  config.loss.embedding_weight = 1.0  # weight of the discriminative (embedding) loss in the sum
  config.loss.semantic_weight = 1.0  # weight of the semantic (foreground) loss in the sum
  config.loss.class_aware = False  # instances of different semantic classes never interact
  config.loss.dice_weight = 0.0  # soft Dice loss added to the semantic cross-entropy
  config.loss.count_weight = 1.0  # weight of the counter head's loss (model.counter)
  config.loss.seed_weight = 1.0  # weight of the seed head's loss (model.seed_head)
  # The seed head's centre (losses.seed.SEED_TARGETS): "embedding", the instance's mean embedding,
  # or "centroid", its middle in the image.
  config.loss.seed_target = "embedding"
  # Seed target exp(-d^2 / (2 sigma^2)). "embedding": d the embedding distance from the instance's
  # mean; well under pull_margin, which leaves an instance's pixels within 0.5: at sigma 0.5 every
  # leaf pixel's target was 0.6-1 and the map marked leaves, not centres (configs/cvppp_cpu.py).
  # "centroid": d the image distance from its centroid over the instance's radius.
  config.loss.seed_sigma = 0.2

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"  # a key of instseg_jax.optim.OPTIMIZERS
  config.optim.learning_rate = 1e-3  # peak learning rate, reached after the warm-up
  config.optim.warmup_steps = 100  # linear warm-up from 0
  config.optim.schedule = "cosine"  # after the warm-up: a key of instseg_jax.optim.SCHEDULES
  config.optim.weight_decay = 0.0  # decoupled weight decay ("adamw")
  config.optim.grad_clip_norm = 1.0  # clip gradients to this global norm; 0 = off

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 8  # global batch, split over all devices
  config.train.num_steps = 2000  # training steps in all
  config.train.log_every = 50  # steps between metrics.jsonl rows and TensorBoard scalars
  config.train.checkpoint_every = 500  # steps between checkpoints
  # Also save when this long passed since the last save (checked at log steps); 0 = off.
  config.train.checkpoint_every_seconds = 0.0
  # Also evaluate on eval_split every N steps (TensorBoard eval/*); 0 = only at the last step.
  config.train.eval_every = 0
  config.train.keep_checkpoints = 2  # latest checkpoints kept (the best is apart, WORKDIR/best)
  # jax.profiler trace of this many steps after the first log_every, into WORKDIR; 0 = off.
  config.train.profile_steps = 0
  config.train.skip_nonfinite = False  # skip (and count) steps with NaN/Inf loss or gradients

  config.cluster = ml_collections.ConfigDict()
  config.cluster.method = "meanshift"  # a key of instseg_jax.cluster.METHODS
  # Mean shifts and seeds: about 2 * loss.pull_margin, one instance's radius in embedding space.
  config.cluster.bandwidth = 1.0
  # Seeds: the lowest seed score that starts an instance. A trained seed head (seed_sigma 0.2)
  # peaks at 0.3-0.4 on leaves, not 1: its targets are 1 only where a pixel sits on the mean.
  config.cluster.seed_threshold = 0.2
  config.cluster.num_clusters = 0  # kmeans: instances per image; 0 = the counter's prediction
  config.cluster.min_cluster_size = 20  # hdbscan: the smallest instance, in pixels
  config.cluster.min_size = 0  # drop instances under this many pixels (network's grid)
  config.cluster.fg_threshold = 0.5  # foreground probability above which a pixel is clustered
  config.cluster.fill_unclustered = False  # dropped fragments join their nearest instance
  config.cluster.flip_average = False  # foreground averaged over the image and two flips (3x)
  config.cluster.largest_piece = False  # an instance keeps only its largest connected piece
  # Instances whose mean foreground probability is under this become background (0 = keep all).
  config.cluster.min_confidence = 0.0
  # evaluate/predict/export take bandwidth, threshold, sizes from WORKDIR/postprocess.json (tune).
  config.cluster.use_tuned = True
  # The split --mode=tune chooses on ("" = data.eval_split). A score on the split tuned on is
  # optimistic: recipes that report eval_split's scores tune on "train".
  config.cluster.tune_split = ""
  config.cluster.tune_images = 0  # the first N images of tune_split; 0 = data.num_eval_images

  config.predict = ml_collections.ConfigDict()
  config.predict.max_side = 2048  # size_mode "native": longer sides shrink to this; 0 = never

  config.eval = ml_collections.ConfigDict()
  # The main score: picks the best checkpoint, what tune maximizes, ranks worst.png
  # ("accuracy@0.5" for nuclei, "AP" for COCO-style data; "|DiC|" ranks low first).
  config.eval.metric = "SBD"
  # What evaluate, predict, export and tune load: a key of evaluate.CHECKPOINTS ("best":
  # WORKDIR/best, the latest if none was kept).
  config.eval.checkpoint = "best"
  config.eval.num_panels = 8  # images in panels.png and TensorBoard's eval/panels
  config.eval.mask_ap = True  # also COCO-style mask AP, AP50, AP75
  config.eval.matching = True  # also object matching (StarDist): accuracy, F1, PQ
  return config


def with_defaults(stored: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A stored config (a bundle's config.json) laid over `get_config()`, for every loaded config.

  Recursive: a field the stored config lacks (it was written before the field existed) takes
  its default; a stored value wins. Stored fields unknown here are kept: dropping them would
  silently lose what a newer version wrote, and the code reads only the fields it knows.
  """
  return ml_collections.ConfigDict(_overlay(get_config().to_dict(), stored))


def _overlay(defaults: dict[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
  merged = dict(defaults)
  for key, value in stored.items():
    if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
      merged[key] = _overlay(merged[key], value)
    else:
      merged[key] = value
  return merged
