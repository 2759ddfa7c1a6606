"""--model: a bundle folder, or the name of a bundle shipped in instseg_jax/pretrained/."""

import pytest

from instseg_jax import export


def test_a_name_resolves_to_the_packaged_bundle_and_a_folder_to_itself(tmp_path, monkeypatch):
  monkeypatch.setattr(export, "PRETRAINED_DIR", str(tmp_path / "pretrained"))
  (tmp_path / "pretrained" / "nuclei").mkdir(parents=True)
  (tmp_path / "mine").mkdir()
  assert export.resolve_bundle("nuclei") == str(tmp_path / "pretrained" / "nuclei")
  assert export.resolve_bundle(str(tmp_path / "mine")) == str(tmp_path / "mine")
  with pytest.raises(FileNotFoundError, match=r"--model=leaves .*\(nuclei\)"):
    export.resolve_bundle("leaves")


def test_with_nothing_packaged_the_error_says_so(tmp_path, monkeypatch):
  monkeypatch.setattr(export, "PRETRAINED_DIR", str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="none is packaged"):
    export.resolve_bundle("nuclei")
