"""Command line: python -m instseg_jax.main --config=configs/circles.py --workdir=DIR [--mode=...]."""

from absl import app
from absl import flags
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and pictures.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict"],
                  "train (then evaluate), evaluate a checkpoint, or predict images.")
flags.DEFINE_string("input", None, "predict: an image file or a folder of images.")
flags.DEFINE_string("output", None, "predict: the folder for label and overlay PNGs.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported here so that --help answers without loading jax.
  from instseg_jax import evaluate, predict, train  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "evaluate":
    evaluate.evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "predict":
    if not FLAGS.input or not FLAGS.output:
      raise app.UsageError("--mode=predict needs --input and --output")
    predict.predict(config, FLAGS.workdir, FLAGS.input, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
