"""CVPPP leaf segmentation (A1 by default): one instance per leaf. The full recipe, for a GPU.

    python -m instseg_jax.main --config=configs/cvppp.py --workdir=runs/cvppp \
        --config.data.manual_dir=/path/to/CVPPP2017_LSC_training/training
    # then choose the post-processing on the train split (stored in the workdir):
    python -m instseg_jax.main --config=configs/cvppp.py --workdir=runs/cvppp \
        --config.data.manual_dir=/path/to/CVPPP2017_LSC_training/training --mode=tune

    # What the data hold and what the network sees (counts, sizes, sample sheet):
    python -m instseg_jax.main --config=configs/cvppp.py --workdir=runs/cvppp \
        --config.data.manual_dir=/path/to/cvppp --mode=inspect

manual_dir is the unpacked challenge archive, a folder holding A1/ A2/ ...,
or a flat folder of plantXXX_rgb.png + plantXXX_label.png (e.g. one subset).
Another subset: --config.data.builder_config=A2 (A1..A4, or "all"). The
labelled plants are split into train and a deterministic 20 % "validation"
(--config.data.validation_fraction); unlabelled testing folders become "test".

The network sees each 530x500 plant stretched to 256x256 (about half its
scale), in training and in evaluate, predict and exported bundles alike; the
labels go back to the plant's own grid, where they are scored. A five-level
UNet gives a receptive field that spans a rosette at that scale. A seed head
marks where each leaf's embeddings centre, and each instance starts at a peak of
it ("seeds"), not at a mode of mean shift: a small leaf beside a large one keeps
a centre of its own (configs/cvppp_cpu.py measures both). This recipe
has not been measured on a GPU yet (no device was lent); configs/cvppp_cpu.py,
the same model for 3800 steps of 4 plants, is measured in its docstring.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "cvppp"
  config.data.builder_config = "A1"
  config.data.eval_split = "validation"
  config.data.image_size = (256, 256)  # 530x500 plants, shrunk about 2x
  config.data.max_instances = 32  # A1 has 11-20 leaves per plant
  config.data.num_eval_images = 0  # the whole validation split
  config.cluster.tune_split = "train"  # the validation plants stay unseen by tune too
  config.data.aug_max_degrees = 15.0  # rosettes have no up or down
  config.data.aug_scale_range = (0.8, 1.25)
  config.data.aug_saturation = 0.2
  config.model.features = (16, 32, 64, 128, 256)
  config.model.embedding_dim = 16
  # Neighbouring leaves start apart in embedding space (configs/cvppp_cpu.py measures the gain).
  config.model.position_encoding = "pixels"
  config.model.seed_head = True
  config.cluster.method = "seeds"
  # Seeds claim a radius about the distance between two means (loss.push_margin 3.0) less
  # a leaf's spread; the tune on the training plants chose 2.0 of 1.2-3.0.
  config.cluster.bandwidth = 2.0
  config.train.batch_size = 8
  config.train.num_steps = 10000
  config.train.checkpoint_every = 1000
  return config
