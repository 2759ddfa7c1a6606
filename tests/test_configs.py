"""The configs under configs/: each field has its default in configs/default.py, stored configs
of older versions are filled in from it, and the data-set recipes pass the checks of a run."""

import importlib
import json
import os

import pytest

from configs import default
from instseg_jax import export
from instseg_jax import validate
from instseg_jax.data import builders

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
NAMES = sorted(
    name[:-3] for name in os.listdir(CONFIGS_DIR) if name.endswith(".py") and name != "__init__.py"
)


def _fields(tree, prefix=""):
  """Every field of a nested mapping as "a.b.c"; a mapping is a section, not a field."""
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      yield from _fields(value, f"{path}.")
    else:
      yield path


def test_every_config_file_is_found():
  assert {"default", "tiny", "circles", "dsb2018", "cvppp"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_field_of_a_config_has_its_default(name):
  config = importlib.import_module(f"configs.{name}").get_config().to_dict()
  known = set(_fields(default.get_config().to_dict()))
  unknown = sorted(set(_fields(config)) - known)
  assert not unknown, f"configs/{name}.py sets fields configs/default.py lacks: {unknown}"


def test_the_comparison_names_a_field_missing_from_the_defaults():
  config = default.get_config()
  config.cluster.typo_field = 1
  known = set(_fields(default.get_config().to_dict()))
  assert sorted(set(_fields(config.to_dict())) - known) == ["cluster.typo_field"]


def test_a_stored_config_missing_fields_takes_their_defaults():
  stored = default.get_config().to_dict()
  del stored["data"]["normalize"]
  del stored["eval"]  # a whole section, as a version before it wrote
  stored["cluster"]["bandwidth"] = 0.7
  config = default.with_defaults(json.loads(json.dumps(stored)))
  expected = default.get_config()
  assert config.data.normalize == expected.data.normalize
  assert config.eval.to_dict() == expected.eval.to_dict()
  assert config.cluster.bandwidth == 0.7  # stored values win
  assert config.cluster.method == expected.cluster.method
  assert set(_fields(config.to_dict())) == set(_fields(expected.to_dict()))


def test_stored_fields_unknown_to_the_defaults_are_kept():
  config = default.with_defaults({"model": {"name": "reseg", "from_the_future": 3}})
  assert config.model.name == "reseg" and config.model.from_the_future == 3
  assert config.model.features == default.get_config().model.features


def test_the_shipped_bundle_loads_with_every_field_and_passes_the_checks():
  config, _ = export.load_bundle("nuclei")
  missing = set(_fields(default.get_config().to_dict())) - set(_fields(config.to_dict()))
  assert not missing
  assert config.data.normalize == "nuclei_local"  # its own values, not the defaults
  validate.validate(config, num_devices=1)


@pytest.mark.parametrize("name", ["cvppp", "dsb2018", "voc", "coco", "cityscapes"])
def test_data_set_configs_are_valid(name):
  module = importlib.import_module(f"configs.{name}")
  assert f"--config=configs/{name}.py" in module.__doc__
  assert "--config.data.manual_dir=" in module.__doc__
  config = module.get_config()
  validate.validate(config, num_devices=1)
  assert config.data.name in builders.BUILDERS
  assert config.data.eval_split == "validation"
  cls = builders.BUILDERS[config.data.name]
  assert config.data.builder_config in {c.name for c in cls.BUILDER_CONFIGS}
  if (
      issubclass(cls, builders.FolderBuilder)
      and len(cls.CLASS_NAMES) > 1
      and (config.data.name != "coco")
  ):
    assert config.data.num_classes == len(cls.CLASS_NAMES)
