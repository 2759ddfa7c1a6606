"""Base configuration every other config builds on.

    python -m instseg_jax.main --config=configs/default.py --workdir=runs/default
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "circles"          # a key of instseg_jax.data.builders.BUILDERS
  config.data.builder_config = "default"  # the TFDS builder config
  config.data.data_dir = ""             # where TFDS writes array_record files; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
  config.data.manual_dir = ""           # raw data for builders that cannot download
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.image_size = (128, 128)   # (H, W) fed to the network
  config.data.num_classes = 2           # semantic classes, background included
  config.data.max_instances = 32        # static bound on instances per image (loss segments)
  config.data.augment = True
  config.data.shuffle_buffer = 0        # 0 = global shuffle through grain's index sampler
  config.data.worker_count = 0          # grain worker processes; 0 = in the main process
  config.data.num_eval_images = 100
  config.data.read_threads = 2          # grain threads per process, each decoding + augmenting a whole batch
  config.data.prefetch_batches = 2      # batches read ahead per process (bounds host memory)
  config.data.aug_max_degrees = 15.0    # small-angle rotation drawn from [-x, x] degrees; 0 = off
  config.data.aug_scale_range = (0.75, 1.33)  # zoom range of the random scale-crop; (1, 1) = plain resize
  config.data.aug_brightness = 0.2      # colour jitter: brightness shift drawn from [-x, x]
  config.data.aug_contrast = 0.2        # colour jitter: contrast factor drawn from [1 - x, 1 + x]
  config.data.aug_saturation = 0.0      # colour jitter: saturation factor drawn from [1 - x, 1 + x]; 0 = off
  config.data.aug_hflip = True          # random left-right flips
  config.data.aug_vflip = True          # random up-down flips (off for street scenes)
  config.data.aug_rot90 = True          # random multiples of 90 degrees (0/180 only for non-square image_size)
  config.data.aug_foreground_crop = 0.0  # probability that a crop is centred on a random instance pixel (small objects in large images)
  config.data.size_mode = "stretch"     # "stretch" whole image to image_size | "fit" keep aspect, pad | "native" crop at own scale
  config.data.normalize = "none"         # per-image intensities, in training and inference alike: "none" | "percentile" | "nuclei" (grey, dark background)
  config.data.ignore_label = -1         # label of pixels the losses skip (VOC void, COCO crowd); must be negative
  config.data.ignore_padding = False    # pixels from outside the image (padding, rotation corners) get ignore_label, not 0
  config.data.validation_fraction = 0.2  # held out as "validation" from data without such a split (cvppp, instance_folder)
  config.data.skip_bad_examples = False  # skip bad files / images over max_instances with a warning instead of failing

  config.model = ml_collections.ConfigDict()
  config.model.name = "unet"            # a key of instseg_jax.models.MODELS
  config.model.features = (16, 32, 64, 128)
  config.model.embedding_dim = 8
  config.model.dtype = "float32"
  config.model.norm = "group"           # "group" (GroupNorm) | "affine" (frozen-BatchNorm style; for pretrained ResNets)
  config.model.coord_conv = False       # append (y, x, r) coordinate channels to the input (CoordConv)
  config.model.position_encoding = "none"  # added to the embeddings: "none" | "xy" (semi-convolutional) | "sine"
  config.model.context_features = 0     # units per direction of a bi-LSTM context sweep before the embedding head; 0 = off
  config.model.cell = "lstm"            # recurrent cell of ReSeg's ReNet layers and the context sweep: "lstm" | "gru"
  config.model.remat = False            # recompute recurrent sweeps in the backward pass (less memory, more time)
  config.model.counter = False          # predict "count" = instance count / max_instances from the deepest features
  config.model.resnet_blocks = (2, 2, 2, 2)  # deeplabv3: residual blocks per stage ((3, 4, 6, 3) = ResNet-34)
  config.model.pretrained = ""          # local torch state_dict for the encoder (reseg: VGG-16, deeplabv3: ResNet); "" = none

  config.loss = ml_collections.ConfigDict()
  # The discriminative loss's options, named as `discriminative_loss` names them (its docstring
  # maps them to the paper's symbols); these defaults are the paper's loss. A preset sets the
  # options it names, whose fields below must then keep these values; the other fields still apply.
  config.loss.preset = ""               # a key of losses.LOSS_PRESETS, e.g. "authors"; "" = none
  config.loss.pull_margin = 0.5         # pixels nearer their mean are not pulled (paper: delta_v)
  config.loss.push_margin = 3.0         # means nearer than this are pushed apart (paper: 2 delta_d)
  config.loss.pull_weight = 1.0         # weight of the pull (variance) term (paper: alpha)
  config.loss.push_weight = 1.0         # weight of the push (distance) term (paper: beta)
  config.loss.regularization_weight = 0.001  # weight of the regularizer (paper: gamma)
  config.loss.pull_distance = "euclidean"  # pixel to its mean: "euclidean" | "manhattan"
  config.loss.push_distance = "euclidean"  # mean to mean: "euclidean" | "manhattan"
  config.loss.regularization_distance = "euclidean"  # mean to origin: "euclidean" | "manhattan"
  config.loss.pull_error = "squared"    # of the pull hinge: "squared" | "absolute" | "log_cosh"
  config.loss.push_error = "squared"    # of the push hinge: "squared" | "absolute" | "log_cosh"
  config.loss.regularization_error = "absolute"  # of a mean's distance from 0; "absolute": paper
  config.loss.normalization = "paper"   # "paper" | "pixel" (pull over all pixels) | "authors"
  config.loss.background_as_instance = False  # the background is one more cluster (authors' code)
  config.loss.max_label_id = 0          # promise: instance ids <= this (a table, no sort); 0 = none
  config.loss.embedding_weight = 1.0
  config.loss.semantic_weight = 1.0

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100
  config.optim.schedule = "cosine"      # "constant" | "cosine"
  config.optim.weight_decay = 0.0
  config.optim.grad_clip_norm = 1.0

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 8           # global batch, split over all devices
  config.train.num_steps = 2000
  config.train.log_every = 50           # steps between rows of metrics.jsonl and TensorBoard scalars
  config.train.checkpoint_every = 500
  config.train.checkpoint_every_seconds = 0.0  # also save when this long passed since the last save (checked at log steps); 0 = off
  config.train.eval_every = 0           # also evaluate on the eval split every N steps (eval/* scalars, pictures in TensorBoard); 0 = only at the last step
  config.train.keep_checkpoints = 2
  config.train.profile_steps = 0        # jax.profiler trace of this many steps after the first log_every, into WORKDIR (TensorBoard's profile tab); 0 = off
  config.train.skip_nonfinite = False   # True: a step with a NaN/Inf loss or gradient is skipped and counted, not fatal

  config.cluster = ml_collections.ConfigDict()
  config.cluster.method = "meanshift"
  config.cluster.bandwidth = 1.0        # about 2 * delta_v: the radius of one instance's pixels
  config.cluster.num_clusters = 0       # kmeans: instances per image; 0 = the counter head's prediction
  config.cluster.min_size = 0           # instances smaller than this many pixels of the network's grid are dropped
  config.cluster.fg_threshold = 0.5     # foreground probability above which a pixel is clustered
  config.cluster.fill_unclustered = False  # dropped fragments join their nearest instance instead of the background
  config.cluster.flip_average = False   # foreground probability averaged over the image and its two flips (3x the network)
  config.cluster.use_tuned = True       # evaluate/predict/export take bandwidth, threshold, sizes from WORKDIR/postprocess.json (--mode=tune)

  config.predict = ml_collections.ConfigDict()
  config.predict.max_side = 2048        # size_mode "native": a longer side is shrunk to this for the network (0 = never)

  config.eval = ml_collections.ConfigDict()
  config.eval.metric = "SBD"            # the main score: picks the best checkpoint (WORKDIR/best), what --mode=tune maximizes, ranks worst.png ("accuracy@0.5" for nuclei, "AP" for COCO-style data; "|DiC|" ranks low first)
  config.eval.checkpoint = "best"       # what evaluate, predict, export and tune load: "best" (WORKDIR/best; the latest if none was kept) | "latest"
  config.eval.num_panels = 8            # images shown in panels.png and TensorBoard's eval/panels
  config.eval.mask_ap = True            # also COCO-style mask AP, AP50, AP75 (scores: mean foreground probability)
  config.eval.matching = True           # also object matching (StarDist): accuracy, F1, PQ at IoU 0.5 ... 0.9
  return config
