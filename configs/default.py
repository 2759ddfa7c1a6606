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

  config.model = ml_collections.ConfigDict()
  config.model.name = "unet"            # a key of instseg_jax.models.MODELS
  config.model.features = (16, 32, 64, 128)
  config.model.embedding_dim = 8
  config.model.dtype = "float32"

  config.loss = ml_collections.ConfigDict()
  config.loss.delta_v = 0.5
  config.loss.delta_d = 1.5
  config.loss.alpha = 1.0
  config.loss.beta = 1.0
  config.loss.gamma = 0.001
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
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.train.eval_every = 0           # 0 = only at the end
  config.train.keep_checkpoints = 2
  config.train.skip_nonfinite = False   # True: a step with a NaN/Inf loss or gradient is skipped and counted, not fatal

  config.cluster = ml_collections.ConfigDict()
  config.cluster.method = "meanshift"
  config.cluster.bandwidth = 1.0        # about 2 * delta_v: the radius of one instance's pixels
  config.cluster.min_size = 0           # instances smaller than this many pixels are dropped
  config.cluster.fg_threshold = 0.5     # foreground probability above which a pixel is clustered

  config.predict = ml_collections.ConfigDict()
  config.predict.max_side = 2048          # larger images are shrunk for the network, labels scaled back

  config.eval = ml_collections.ConfigDict()
  config.eval.num_panels = 8
  return config
