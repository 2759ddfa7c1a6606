"""Command line: python -m instseg_jax.main --config=CONFIG --workdir=DIR [--mode=...]."""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and pictures.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "evaluate", "predict", "export", "inspect", "tune"],
    "train (then evaluate), evaluate a checkpoint, predict images, export a checkpoint (the "
    "best, see config.eval.checkpoint) as a bundle, inspect the data, or tune the "
    "post-processing on the eval split.",
)
flags.DEFINE_string("input", None, "predict: an image file or a folder of images.")
flags.DEFINE_string(
    "output",
    None,
    "predict: the folder for label and overlay PNGs; "
    "export: the bundle folder (default WORKDIR/export); evaluate with "
    "--model: the folder for results.json and panels.",
)
flags.DEFINE_string(
    "model",
    None,
    "evaluate/predict: an exported bundle folder, or the "
    "name of a bundle shipped in instseg_jax/pretrained/; then neither "
    "--config nor --workdir is needed.",
)
flags.DEFINE_bool(
    "multihost",
    False,
    "Call jax.distributed.initialize() first: auto-detected on SLURM, TPU "
    "and cloud; give the three flags below anywhere else.",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --multihost).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --multihost).")
flags.DEFINE_integer("process_id", None, "This process's index (with --multihost).")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)

FLAGS = flags.FLAGS

USAGE_ERROR = 2


def fail(message: str) -> None:
  """One line on stderr and exit code 2: for mistakes in the command or config."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USAGE_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with config typos reported in one line instead of a traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    fail(str(error).splitlines()[0])
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    fail(" ".join(str(error).strip("'\"").replace("\\n", " ").split()))
  return []


def initialize_distributed() -> None:
  import jax  # pylint: disable=g-import-not-at-top

  if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
    # CPU collectives across processes need gloo; accelerators bring their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes,
      process_id=FLAGS.process_id,
  )


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    # orbax and tfds log every step of a save at INFO; the user wants progress bars and results.
    logging.set_verbosity(logging.WARNING)
  if FLAGS.multihost:
    initialize_distributed()
  # Imported after jax.distributed.initialize, which must precede any other jax call.
  import jax  # pylint: disable=g-import-not-at-top
  from instseg_jax import compilation_cache  # pylint: disable=g-import-not-at-top
  from instseg_jax import data, evaluate, export, predict, train, tune, validate  # pylint: disable=g-import-not-at-top

  compilation_cache.enable()
  mode = FLAGS.mode
  if mode == "predict" and (not FLAGS.input or not FLAGS.output):
    fail("--mode=predict needs --input=IMAGE_OR_FOLDER and --output=FOLDER")
  params = None
  if FLAGS.model and mode in ("evaluate", "predict"):
    try:
      config, params = export.load_bundle(FLAGS.model)
    except FileNotFoundError as error:
      fail(str(error))
    # The bundle carries its tuned post-processing; no workdir's postprocess.json applies.
    workdir = FLAGS.output if mode == "evaluate" else None
    if mode == "evaluate" and not workdir:
      fail("--mode=evaluate --model=BUNDLE needs --output=FOLDER for results.json and panels")
  else:
    if FLAGS.config is None or not FLAGS.workdir:
      fail(
          f"--mode={mode} needs --config=configs/NAME.py and --workdir=DIR"
          + (" (or --model=BUNDLE)" if mode in ("evaluate", "predict") else "")
      )
    config, workdir = FLAGS.config, FLAGS.workdir
  try:
    validate.validate(config, num_devices=jax.device_count())
  except validate.ConfigError as error:
    fail(str(error))
  try:
    if mode == "train":
      train.train_and_evaluate(config, workdir)
    elif mode == "evaluate":
      evaluate.evaluate(config, workdir, params=params)
    elif mode == "predict":
      predict.predict(config, workdir, FLAGS.input, FLAGS.output, params=params)
    elif mode == "tune":
      tune.tune(config, workdir)
    elif mode == "inspect":
      from instseg_jax.data import inspect as data_inspect  # pylint: disable=g-import-not-at-top

      data_inspect.inspect(config, workdir)
    elif mode == "export":
      bundle = export.export(config, workdir, FLAGS.output or f"{workdir}/export")
      print(f"exported to {bundle}; use it with --model={bundle}", flush=True)
  except validate.ConfigError as error:
    fail(str(error))
  except train.StoppedError as stopped:
    # Its message is printed; the status tells scripts and schedulers the run is unfinished.
    sys.exit(stopped.exit_code)
  except (FileNotFoundError, train.NonFiniteLossError, data.DataError) as error:
    # Conditions the user can act on: no traceback, one line, a non-zero exit.
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
