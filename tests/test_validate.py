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


@pytest.mark.parametrize("path, value, message", [
    ("data.size_mode", "fitt", "config.data.size_mode='fitt' is not one of"),
    ("data.builder_config", "tinny", "config.data.builder_config='tinny' is not one of"),
    ("cluster.bandwidth", 0.0, "config.cluster.bandwidth=0.0 must be > 0"),
    ("cluster.bandwidth", -1.0, "config.cluster.bandwidth=-1.0 must be > 0"),
    ("predict.max_side", -5, "config.predict.max_side=-5 must be >= 0"),
    ("train.keep_checkpoints", 0, "config.train.keep_checkpoints=0 must be >= 1"),
])
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


@pytest.mark.parametrize("path, value", [
    ("data.size_mode", "fit"), ("data.builder_config", "tiny"),
    ("data.builder_config", "default"), ("cluster.bandwidth", 0.5),
    ("predict.max_side", 0), ("train.keep_checkpoints", 1),
])
def test_good_values_pass(path, value):
  config = tiny.get_config()
  _set(config, path, value)
  validate.validate(config, num_devices=8)


def test_folder_data_set_configs_pass():
  config = dsb2018.get_config()
  validate.validate(config, num_devices=8)
