"""Exported bundles stand alone, `--model` finds them by folder or packaged name; predict
survives every kind of bad input in a folder."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import tiny
import helpers
from instseg_jax import export
from instseg_jax import inference
from instseg_jax import models
from instseg_jax import predict
from instseg_jax import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  config = helpers.tiny_config(data_dir)
  config.data.num_eval_images = 4
  workdir = str(tmp_path_factory.mktemp("run"))
  summary = train.train_and_evaluate(config, workdir)
  return config, workdir, summary


def _write_inputs(folder, rng):
  folder.mkdir()
  Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / "rgb.png")
  return folder


def _labels(folder, stem):
  return np.asarray(Image.open(folder / f"{stem}_labels.png"))


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run(
      [sys.executable, "-m", "instseg_jax.main", *args],
      cwd=helpers.REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )


def test_bundle_predicts_and_evaluates_like_the_workdir_after_it_is_deleted(trained, tmp_path):
  config, workdir, summary = trained
  inputs = _write_inputs(tmp_path / "in", np.random.default_rng(0))
  predict.predict(config, workdir, str(inputs), str(tmp_path / "before"))
  bundle = export.export(config, workdir, str(tmp_path / "bundle"))
  kept = str(tmp_path / "workdir_copy")
  shutil.move(workdir, kept)  # The training workdir is gone for the commands below.
  try:
    result = _main(
        "--mode=predict", f"--model={bundle}", f"--input={inputs}", f"--output={tmp_path / 'after'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_array_equal(
        _labels(tmp_path / "after", "rgb"), _labels(tmp_path / "before", "rgb")
    )
    result = _main("--mode=evaluate", f"--model={bundle}", f"--output={tmp_path / 'eval'}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "eval" / "results.json") as f:
      assert json.load(f)["summary"] == pytest.approx(summary)
  finally:
    shutil.move(kept, workdir)


def test_serialized_predict_runs_without_the_model_code(trained, tmp_path):
  config, workdir, _ = trained
  bundle = export.export(config, workdir, str(tmp_path / "bundle"))
  images = np.random.default_rng(1).random((3, 32, 32, 3)).astype(np.float32)
  serialized = export.load_serialized_predict(bundle)(images)
  _, params = export.load_bundle(bundle)
  direct = inference.network_outputs(
      params, images, apply_fn=models.create_model(config).apply, flip_average=False
  )
  np.testing.assert_allclose(serialized["embedding"], direct["embedding"], atol=1e-5)


def test_incomplete_bundle_is_refused_by_name(tmp_path):
  (tmp_path / "half").mkdir()
  result = _main(
      "--mode=predict",
      f"--model={tmp_path / 'half'}",
      f"--input={tmp_path}",
      f"--output={tmp_path / 'out'}",
  )
  assert result.returncode == 2
  assert "config.json is missing" in result.stderr and "Traceback" not in result.stderr


def test_predict_handles_each_kind_of_bad_input(trained, tmp_path, monkeypatch):
  config, workdir, _ = trained
  rng = np.random.default_rng(2)
  folder = tmp_path / "in"
  folder.mkdir()
  good = {
      "rgb": (rng.random((32, 40, 3)) * 255).astype(np.uint8),
      "grey": (rng.random((24, 24)) * 255).astype(np.uint8),
      "rgba": (rng.random((32, 32, 4)) * 255).astype(np.uint8),
      "deep16": (rng.random((32, 32)) * 65535).astype(np.uint16),
      "tiny": (rng.random((3, 5, 3)) * 255).astype(np.uint8),
      "large": (rng.random((300, 260, 3)) * 255).astype(np.uint8),
  }
  for name, array in good.items():
    Image.fromarray(array).save(folder / f"{name}.png")
  (folder / "notes.txt").write_text("not an image")
  (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
  truncated = (folder / "rgb.png").read_bytes()
  (folder / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
  Image.fromarray(np.zeros((400, 400, 3), np.uint8)).save(folder / "bomb.png")
  (folder / "..escape.png").write_bytes((folder / "rgb.png").read_bytes())
  # A small pixel limit makes the 400x400 image (but not 300x260) a decompression bomb here;
  # between 1x and 2x the limit Pillow only warns, and predict refuses that too.
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
  config.predict.max_side = 128
  out = tmp_path / "out"
  failures = predict.predict(config, workdir, str(folder), str(out))

  assert set(failures) == {
      str(folder / n) for n in ("notes.txt", "garbage.png", "truncated.png", "bomb.png")
  }
  assert "decompression bomb" in failures[str(folder / "bomb.png")].lower()
  for name, array in {**good, "escape": good["rgb"]}.items():
    labels = _labels(out, name)
    assert labels.shape == array.shape[:2] and labels.dtype == np.uint16
    assert Image.open(out / f"{name}_overlay.png").size == (array.shape[1], array.shape[0])
  assert not list(tmp_path.glob("*_labels.png"))  # nothing escaped the output folder
  assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_inputs_with_one_stem_get_one_label_map_each(trained, tmp_path, capsys):
  config, workdir, _ = trained
  folder = tmp_path / "in"
  folder.mkdir()
  image = (np.random.default_rng(3).random((32, 32, 3)) * 255).astype(np.uint8)
  Image.fromarray(image).save(folder / "a.png")
  Image.fromarray(image[::-1]).save(folder / "a.tif")
  predict.predict(config, workdir, str(folder), str(tmp_path / "out"))
  assert sorted(p.name for p in (tmp_path / "out").glob("*_labels.png")) == [
      "a_png_labels.png",
      "a_tif_labels.png",
  ]
  assert "wrote 2 label maps" in capsys.readouterr().out


def test_predict_reads_every_image_mode_as_the_training_data_stores_it(tmp_path):
  from configs import dsb2018  # pylint: disable=g-import-not-at-top
  from instseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(4)
  root = tmp_path / "data"
  for part in ("images", "labels"):
    (root / "validation" / part).mkdir(parents=True)
    (root / "train" / part).mkdir(parents=True)
  palette = Image.fromarray((rng.random((20, 24)) * 200).astype(np.uint8)).convert(
      "P", palette=Image.Palette.ADAPTIVE, colors=16
  )
  images = {
      "palette.png": palette,
      "cmyk.tif": Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).convert("CMYK"),
      "deep16.png": Image.fromarray((rng.random((20, 24)) * 4000 + 100).astype(np.uint16)),
  }
  labels = np.zeros((20, 24), np.uint16)
  labels[5:10, 5:10] = 1
  for split in ("train", "validation"):
    for name, image in images.items():
      image.save(root / split / "images" / name)
      Image.fromarray(labels).save(root / split / "labels" / (os.path.splitext(name)[0] + ".png"))
  config = dsb2018.get_config()
  config.data.manual_dir = str(root)
  config.data.data_dir = str(tmp_path / "tfds")
  stored = {
      os.path.basename(e["id"]): e["image"] for e in pipeline.eval_records(config, data_dir=None)
  }
  assert len(stored) == 3
  for name in images:
    read = predict.read_rgb(str(root / "validation" / "images" / name))
    np.testing.assert_array_equal(read, stored[os.path.splitext(name)[0]], err_msg=name)


def test_a_bundle_does_not_need_the_pretrained_weights_file(tmp_path):
  from instseg_jax import validate  # pylint: disable=g-import-not-at-top

  config = tiny.get_config()
  config.model.pretrained = str(tmp_path / "gone.pth")
  bundled = export.bundle_config(config, str(tmp_path))
  assert bundled.model.pretrained == "" and config.model.pretrained
  validate.validate(bundled, num_devices=1)


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
