"""Config checks before any work: enumerated and bounded fields, one ConfigError each."""

import pytest

from configs import dsb2018
from configs import tiny
from instseg_jax import validate


def _set(config, path, value):
  *parents, field = path.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[field] = value


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("data.size_mode", "fitt", "config.data.size_mode='fitt' is not one of"),
        ("data.builder_config", "tinny", "config.data.builder_config='tinny' is not one of"),
        ("cluster.bandwidth", 0.0, "config.cluster.bandwidth=0.0 must be > 0"),
        ("cluster.bandwidth", -1.0, "config.cluster.bandwidth=-1.0 must be > 0"),
        ("cluster.min_confidence", -0.1, "config.cluster.min_confidence=-0.1 must be >= 0"),
        ("predict.max_side", -5, "config.predict.max_side=-5 must be >= 0"),
        ("model.pixels_per_unit", 0.0, "config.model.pixels_per_unit=0.0 must be > 0"),
        ("train.keep_checkpoints", 0, "config.train.keep_checkpoints=0 must be >= 1"),
        (
            "data.repeat_by_kind.stained",
            0,
            "config.data.repeat_by_kind.stained=0 must be a positive integer",
        ),
    ],
)
def test_bad_values_are_named_with_the_field(path, value, message):
  config = tiny.get_config()
  _set(config, path, value)
  with pytest.raises(validate.ConfigError, match="^" + message.replace("(", r"\(")) as raised:
    validate.validate(config, num_devices=8)
  assert "\n" not in str(raised.value)


def test_choices_come_from_the_registries():
  config = tiny.get_config()
  config.data.size_mode = "fitt"
  with pytest.raises(validate.ConfigError, match="'fit', 'native', 'stretch'"):
    validate.validate(config, num_devices=8)
  config = tiny.get_config()
  config.data.builder_config = "tinny"
  # The circles builder's configs, and "default" for the builder's default.
  with pytest.raises(validate.ConfigError, match="'default'.*'tiny'"):
    validate.validate(config, num_devices=8)


@pytest.mark.parametrize(
    "path, value",
    [
        ("data.size_mode", "fit"),
        ("data.builder_config", "tiny"),
        ("data.builder_config", "default"),
        ("cluster.bandwidth", 0.5),
        ("predict.max_side", 0),
        ("train.keep_checkpoints", 1),
        ("data.repeat_by_kind.brightfield", 4),
    ],
)
def test_good_values_pass(path, value):
  config = tiny.get_config()
  _set(config, path, value)
  validate.validate(config, num_devices=8)


def test_folder_data_set_configs_pass():
  config = dsb2018.get_config()
  validate.validate(config, num_devices=8)


@pytest.mark.parametrize(
    "path, value, registry",
    [
        ("optim.name", "adamax", ("optim", "OPTIMIZERS")),
        ("optim.schedule", "linear", ("optim", "SCHEDULES")),
        ("cluster.method", "dbscan", ("cluster", "METHODS")),
        ("model.name", "resnet9000", ("models", "MODELS")),
        ("model.dtype", "float16", ("models", "DTYPES")),
    ],
)
def test_a_wrong_name_lists_the_names_of_its_registry(path, value, registry):
  import importlib  # pylint: disable=g-import-not-at-top

  module, name = registry
  valid = sorted(getattr(importlib.import_module(f"instseg_jax.{module}"), name))
  config = tiny.get_config()
  _set(config, path, value)
  message = f"config.{path}={value!r} is not one of {valid}"
  with pytest.raises(validate.ConfigError) as raised:
    validate.validate(config, num_devices=8)
  assert str(raised.value) == message


def test_an_added_optimizer_is_valid_with_no_change_to_validate(monkeypatch):
  import optax  # pylint: disable=g-import-not-at-top
  from instseg_jax import optim  # pylint: disable=g-import-not-at-top

  monkeypatch.setitem(optim.OPTIMIZERS, "lion", lambda schedule, _: optax.lion(schedule))
  config = tiny.get_config()
  config.optim.name = "lion"
  validate.validate(config, num_devices=8)
  assert isinstance(optim.make_optimizer(config), optax.GradientTransformation)


def test_library_callers_get_the_same_error_from_the_registry():
  from instseg_jax import optim  # pylint: disable=g-import-not-at-top

  config = tiny.get_config()
  config.optim.name = "adamax"
  with pytest.raises(validate.ConfigError, match=r"config.optim.name='adamax' .*'adam', 'adamw'"):
    optim.make_optimizer(config)


@pytest.mark.parametrize(
    "batch_size, parts, what, share", [(16, 8, "devices", 2), (8, 2, "processes", 4)]
)
def test_a_batch_splits_evenly_or_is_refused(batch_size, parts, what, share):
  assert validate.check_batch_split(batch_size, parts, what) == share
  with pytest.raises(validate.ConfigError, match=f"=12 is not divisible by the 8 {what}"):
    validate.check_batch_split(12, 8, what)
  with pytest.raises(validate.ConfigError, match="positive multiple"):
    validate.check_batch_split(0, parts, what)


def test_a_batch_the_devices_cannot_share_is_refused_before_any_work():
  config = tiny.get_config()
  config.train.batch_size = 12
  with pytest.raises(validate.ConfigError, match="batch_size=12 is not divisible by the 8 devices"):
    validate.validate(config, num_devices=8)


def test_eval_checkpoint_choices_come_from_evaluate():
  config = tiny.get_config()
  config.eval.checkpoint = "first"
  with pytest.raises(validate.ConfigError, match=r"\['best', 'latest'\]"):
    validate.validate(config, num_devices=8)
