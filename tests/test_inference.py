"""The one inference path: geometry, post-processing, the original grid, every caller agreeing."""

import contextlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from instseg_jax import cluster
from instseg_jax import evaluate
from instseg_jax import export
from instseg_jax import inference
from instseg_jax import models
from instseg_jax import predict
from instseg_jax import train
from instseg_jax import tune
from instseg_jax.cluster import buckets
from instseg_jax.data import transforms
from instseg_jax.metrics import cvppp


def _geometry(mode, size=(32, 32), stride=4, max_side=0):
  return inference.Geometry(mode=mode, size=size, stride=stride, max_side=max_side)


def test_stretch_and_fit_give_the_window_the_training_pipeline_evaluates_on():
  image = np.random.default_rng(0).random((50, 70, 3)).astype(np.float32)
  for mode in ("stretch", "fit"):
    network_input, content = _geometry(mode).network_input(image)
    expected = transforms.fixed_window({"image": image}, size=(32, 32), mode=mode)["image"]
    np.testing.assert_array_equal(network_input, expected)
    assert content == ((32, 32) if mode == "stretch" else (23, 32))


def test_native_keeps_the_scale_and_pads_to_the_stride():
  image = np.random.default_rng(0).random((50, 70, 3)).astype(np.float32)
  network_input, content = _geometry("native").network_input(image)
  assert network_input.shape == (52, 72, 3) and content == (50, 70)
  np.testing.assert_array_equal(network_input[:50, :70], image)
  assert not network_input[50:].any() and not network_input[:, 70:].any()
  shrunk, content = _geometry("native", max_side=35).network_input(image)
  assert content == (25, 35) and shrunk.shape == (28, 36, 3)


def test_upsampled_labels_keep_ids_and_put_boundaries_between_source_pixels():
  labels = np.array([[1, 1, 2, 2]] * 4, np.int32)
  out = inference.upsample_labels(labels, np.ones((8, 8), bool))
  np.testing.assert_array_equal(out, np.array([[1] * 4 + [2] * 4] * 8))
  same = inference.upsample_labels(labels, np.ones((4, 4), bool))
  np.testing.assert_array_equal(same, labels)
  off = inference.upsample_labels(labels, np.zeros((8, 8), bool))
  assert not off.any()


def _output(embedding, foreground):
  h, w = foreground.shape
  return inference.NetworkOutput(
      embedding=embedding.astype(np.float32),
      foreground=foreground.astype(np.float32),
      classes=np.ones((h, w), np.int32),
      count=None,
      shape=(h, w),
  )


def _plain_postprocess() -> inference.PostProcess:
  """Mean shift at bandwidth 1 with nothing dropped or filled: what the tests vary from."""
  return inference.PostProcess(
      method="meanshift",
      options={"bandwidth": 1.0},
      fg_threshold=0.5,
      min_size=0,
      fill_unclustered=False,
      max_instances=8,
  )


def _two_leaves_and_a_fragment():
  """Two 8x8 instances side by side; the right one has a 2x2 fragment of its own embedding."""
  embedding = np.zeros((8, 16, 2))
  embedding[:, :8] = (0.0, 0.0)
  embedding[:, 8:] = (3.0, 0.0)
  embedding[3:5, 11:13] = (0.0, 3.0)
  return _output(embedding, np.ones((8, 16)))


def test_fragments_are_dropped_or_given_to_their_nearest_instance():
  output = _two_leaves_and_a_fragment()
  base = _plain_postprocess()
  assert inference.apply_postprocess(output, base).labels.max() == 3
  dropped = inference.apply_postprocess(output, base.replace(min_size=5)).labels
  assert dropped.max() == 2 and not dropped[3:5, 11:13].any()
  filled = inference.apply_postprocess(output, base.replace(min_size=5, fill_unclustered=True))
  assert filled.labels.max() == 2
  assert (filled.labels[3:5, 11:13] == filled.labels[0, 15]).all()


def test_an_instance_in_pieces_keeps_only_its_largest():
  # Two instances side by side; a 2x2 patch inside the right one has the left one's embedding.
  embedding = np.zeros((8, 16, 2))
  embedding[:, 8:] = (3.0, 0.0)
  embedding[3:5, 11:13] = (0.0, 0.0)
  output = _output(embedding, np.ones((8, 16)))
  base = _plain_postprocess()
  merged = inference.apply_postprocess(output, base).labels
  assert merged[3, 11] == merged[0, 0] != merged[0, 15]
  kept = inference.apply_postprocess(output, base.replace(largest_piece=True)).labels
  assert (kept[3:5, 11:13] == 0).all() and kept.max() == 2
  assert (kept[:, :8] == kept[0, 0]).all() and (kept[kept > 0] == merged[kept > 0]).all()


def test_a_faint_instance_is_dropped_under_min_confidence():
  # Two instances pass the pixel threshold; the right one only just (probability 0.55).
  embedding = np.zeros((8, 16, 2))
  embedding[:, 8:] = (3.0, 0.0)
  foreground = np.full((8, 16), 0.95)
  foreground[:, 8:] = 0.55
  output = _output(embedding, foreground)
  base = _plain_postprocess()
  assert inference.apply_postprocess(output, base).labels.max() == 2
  kept = inference.apply_postprocess(output, base.replace(min_confidence=0.7)).labels
  assert kept.max() == 1 and (kept[:, :8] == 1).all() and not kept[:, 8:].any()
  assert inference.apply_postprocess(output, base.replace(min_confidence=0.5)).labels.max() == 2


def test_tuning_can_maximize_a_matching_score():
  output = _two_leaves_and_a_fragment()
  truth = np.zeros((8, 16), np.int32)
  truth[:, :8], truth[:, 8:] = 1, 2
  base = _plain_postprocess()
  split = tune.score([output], [truth], base, matching=True)
  assert split["accuracy@0.5"] == pytest.approx(2 / 3)  # 2 matched, the fragment a false positive
  filled = tune.score(
      [output], [truth], base.replace(min_size=5, fill_unclustered=True), matching=True
  )
  assert filled["accuracy@0.5"] == 1.0 and "accuracy@0.5" not in tune.score([output], [truth], base)


def test_native_geometry_normalizes_the_whole_image_as_training_does():
  rng = np.random.default_rng(0)
  image = rng.uniform(0.1, 0.3, (30, 45, 3)).astype(np.float32)
  geometry = inference.Geometry(mode="native", size=(16, 16), stride=8, normalize="nuclei")
  padded, content = geometry.network_input(image)
  assert padded.shape == (32, 48, 3) and content == (30, 45)
  np.testing.assert_array_equal(padded[:30, :45], transforms.normalize_intensity(image, "nuclei"))
  np.testing.assert_array_equal(padded[30:], 0.0)


def test_flip_averaging_averages_the_foreground_and_seeds_of_the_image_and_its_flips():
  def apply_fn(variables, images):
    del variables
    # Not flip-equivariant: the logits grow along x (foreground) and along y (seeds).
    x = jnp.arange(images.shape[2], dtype=jnp.float32)[None, None, :]
    y = jnp.arange(images.shape[1], dtype=jnp.float32)[None, :, None]
    logits = jnp.broadcast_to(x, images.shape[:3])[..., None]
    return {
        "embedding": images,
        "semantic_logits": jnp.concatenate([-logits, logits], -1),
        "seed_logits": jnp.broadcast_to(y - 1.0, images.shape[:3]),
    }

  images = jnp.zeros((1, 2, 3, 3))
  plain = inference.network_outputs({}, images, apply_fn=apply_fn, flip_average=False)
  mean = inference.network_outputs({}, images, apply_fn=apply_fn, flip_average=True)
  expected = (2 * plain["foreground"] + plain["foreground"][:, :, ::-1]) / 3
  np.testing.assert_allclose(mean["foreground"], expected, rtol=1e-6)
  expected_seed = (2 * plain["seed"] + plain["seed"][:, ::-1, :]) / 3
  np.testing.assert_allclose(mean["seed"], expected_seed, rtol=1e-6)
  assert not np.allclose(mean["seed"], plain["seed"])
  np.testing.assert_array_equal(mean["embedding"], plain["embedding"])


def test_the_original_grid_scores_a_small_instance_the_shrunk_grid_loses():
  gt = np.zeros((64, 64), np.int32)
  gt[4:36, 4:36] = 1
  gt[43:46, 43:46] = 2  # 3x3 pixels between the sampled rows and columns of a 4x shrink
  predicted = gt.copy()
  predicted[43:46, 43:46] = 0  # the prediction missed it
  full = cvppp.cvppp_scores(predicted, gt)
  shrink = lambda a: transforms.resize(
      {"image": np.zeros((64, 64, 3), np.float32), "instances": a}, size=(16, 16)
  )["instances"]
  assert 2 not in shrink(gt)
  small = cvppp.cvppp_scores(shrink(predicted), shrink(gt))
  assert small["SBD"] == pytest.approx(1.0) and full["SBD"] < 0.75
  assert full["DiC"] == -1 and small["DiC"] == 0


@contextlib.contextmanager
def _compiled_programs():
  """The names of the programs XLA compiles inside the block (persistent-cache hits included)."""
  names = []

  def listener(event, duration, **kwargs):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      names.append(str(kwargs.get("fun_name", "")))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("size_mode", ["fit", "native"])
def test_a_folder_of_ten_image_sizes_compiles_the_stated_number_of_programs(size_mode):
  config = tiny.get_config()
  config.data.size_mode = size_mode
  config.cluster.fg_threshold = 0.0  # every pixel is clustered, whatever the random network says
  model = models.create_model(config)
  # Random weights of the model's shapes: compiling its initialisers took longer than the test.
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(s.dtype), shapes)
  segmenter = inference.Segmenter(config, params)
  cluster.mean_shift.clear_cache()  # programs of the same bucket and bound from earlier tests
  # Pairs one pixel apart: in "native" mode each pair pads to one multiple of the stride.
  sizes = [
      (24, 40),
      (23, 39),
      (40, 24),
      (39, 23),
      (34, 34),
      (33, 33),
      (70, 90),
      (69, 89),
      (90, 64),
      (89, 63),
  ]
  images = [rng.random(size + (3,)).astype(np.float32) for size in sizes]
  inputs = [segmenter.geometry.network_input(image) for image in images]
  with _compiled_programs() as names:
    for image in images:
      assert segmenter(image).labels.shape == image.shape[:2]
  # The README's statement: one network program per distinct padded input ("stretch" and "fit"
  # pad every image to image_size), one clustering program per power of two of grid pixels.
  network = len({padded.shape for padded, _ in inputs})
  clustering = len({buckets.bucket_pixels(h * w) for _, (h, w) in inputs})
  assert (network, clustering) == ((1, 1) if size_mode == "fit" else (5, 2))
  assert sum("network_outputs" in name for name in names) == network
  assert sum("mean_shift" in name for name in names) == clustering
  assert len(names) == network + clustering, names


def _disc_image(rng, height, width):
  yy, xx = np.mgrid[0:height, 0:width]
  image = np.full((height, width, 3), 20, np.uint8)
  labels = np.zeros((height, width), np.uint16)
  for ident in range(1, 4):
    cy, cx, r = rng.integers(6, height - 6), rng.integers(6, width - 6), rng.integers(4, 7)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[inside] = rng.integers(120, 255, 3)
    labels[inside] = ident
  return image, labels


def _train_on_a_folder(tmp_path_factory, **model):
  """A tiny model (config.model overrides) trained on a folder of images of several sizes, none
  of them image_size: (config, workdir, the validation images' folder)."""
  root = tmp_path_factory.mktemp("folder")
  rng = np.random.default_rng(0)
  sizes = {"train": [(40, 56)] * 8, "validation": [(36, 44), (50, 30), (41, 41)]}
  for split, shapes in sizes.items():
    for part in ("images", "labels"):
      (root / split / part).mkdir(parents=True)
    for i, (height, width) in enumerate(shapes):
      image, labels = _disc_image(rng, height, width)
      Image.fromarray(image).save(root / split / "images" / f"{split}{i}.png")
      Image.fromarray(labels).save(root / split / "labels" / f"{split}{i}.png")
  config = tiny.get_config()
  config.data.name = "instance_folder"
  config.data.builder_config = "default"
  config.data.manual_dir = str(root)
  config.data.eval_split = "validation"
  config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
  config.data.num_eval_images = 0
  config.model.update(model)
  config.train.num_steps = 4
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(config, workdir)
  return config, workdir, root / "validation" / "images"


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
  return _train_on_a_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def seed_folder_run(tmp_path_factory):
  """folder_run's model with the seed head, clustered by its seeds."""
  config, workdir, images = _train_on_a_folder(tmp_path_factory, seed_head=True)
  config.cluster.method = "seeds"
  # Four steps leave the seed map near its starting 0.05: let every foreground pixel start one.
  config.cluster.seed_threshold = 0.0
  return config, workdir, images


def _label_pngs(folder):
  return {
      name[: -len("_labels.png")]: np.asarray(Image.open(os.path.join(folder, name)))
      for name in os.listdir(folder)
      if name.endswith("_labels.png")
  }


@pytest.mark.parametrize(
    "run, size_mode",
    [
        ("folder_run", "stretch"),
        ("folder_run", "fit"),
        ("folder_run", "native"),
        ("seed_folder_run", "stretch"),
    ],
)
def test_evaluate_predict_and_a_bundle_give_the_same_labels(run, size_mode, tmp_path, request):
  config, workdir, images = request.getfixturevalue(run)
  config = config.copy_and_resolve_references()
  config.data.size_mode = size_mode
  params = evaluate.load_params(config, workdir)
  # Record ids are paths below manual_dir; predict names its outputs by file stem.
  evaluated = {
      os.path.splitext(os.path.basename(example["id"]))[0]: result.labels
      for example, _, result in evaluate.network_and_segmentation(config, params)
  }
  assert len(evaluated) == 3
  assert any(labels.any() for labels in evaluated.values())  # labels to compare, not zeros
  predict.predict(config, workdir, str(images), str(tmp_path / "workdir"))
  bundle = export.export(config, workdir, str(tmp_path / "bundle"))
  bundle_config, bundle_params = export.load_bundle(bundle)
  predict.predict(
      bundle_config, None, str(images), str(tmp_path / "bundle_out"), params=bundle_params
  )
  from_workdir, from_bundle = _label_pngs(tmp_path / "workdir"), _label_pngs(
      tmp_path / "bundle_out"
  )
  assert set(from_workdir) == set(from_bundle) == set(evaluated)
  for stem, labels in evaluated.items():
    with Image.open(images / f"{stem}.png") as image:
      assert labels.shape == (image.height, image.width)
    np.testing.assert_array_equal(from_workdir[stem], labels)
    np.testing.assert_array_equal(from_bundle[stem], labels)


def test_tuned_post_processing_is_stored_and_used_by_evaluate_and_export(
    folder_run, tmp_path, capsys
):
  config, workdir, _ = folder_run
  result = tune.tune(config, workdir)
  assert result["after"]["SBD"] >= result["before"]["SBD"]
  # The trials show their progress, as the network's pass over the images does.
  assert f"tune: {result['trials']} trials" in capsys.readouterr().err
  with open(os.path.join(workdir, tune.TUNED_FILE)) as f:
    assert json.load(f)["cluster"] == result["cluster"]
  summary = evaluate.evaluate(config, workdir, verbose=False)
  assert summary["SBD"] == pytest.approx(result["after"]["SBD"])
  bundle_config, _ = export.load_bundle(export.export(config, workdir, str(tmp_path / "b")))
  for field, value in result["cluster"].items():
    assert bundle_config.cluster[field] == value
  config = config.copy_and_resolve_references()
  config.cluster.use_tuned = False
  assert tune.with_tuned(config, workdir) is config
  os.remove(os.path.join(workdir, tune.TUNED_FILE))


def test_tuning_reads_its_own_split(folder_run, tmp_path):
  config, workdir, _ = folder_run
  config = config.copy_and_resolve_references()
  config.cluster.tune_split, config.cluster.tune_images = "train", 5
  tuned_dir = str(tmp_path / "tuned")
  shutil.copytree(workdir, tuned_dir)
  result = tune.tune(config, tuned_dir)
  assert (result["split"], result["images"]) == ("train", 5)
  config.cluster.tune_split = "no_such_split"
  with pytest.raises(Exception, match="no_such_split"):
    tune.tune(config, tuned_dir)


def test_coordinate_ascent_finds_the_best_of_a_separable_objective():
  start = _plain_postprocess()
  target = {"bandwidth": 1.5, "fg_threshold": 0.3, "min_size": 16}
  objective = lambda p: -(
      abs(p.options["bandwidth"] - 1.5) + abs(p.fg_threshold - 0.3) + abs(p.min_size - 16) / 100
  )
  grid = {"bandwidth": (0.6, 1.0, 1.5), "fg_threshold": (0.3, 0.5), "min_size": (0, 16, 32)}
  best, _ = tune.coordinate_ascent(objective, start, grid)
  assert tune.tuned_fields(best, grid) == target


def test_export_refuses_a_folder_it_did_not_write_and_replaces_its_own(folder_run, tmp_path):
  config, workdir, _ = folder_run
  user = tmp_path / "b" / "params"
  user.mkdir(parents=True)
  (user / "mine.txt").write_text("keep me")
  with pytest.raises(Exception, match="did not write"):
    export.export(config, workdir, str(tmp_path / "b"), serialize=False)
  assert (user / "mine.txt").read_text() == "keep me"
  fresh = export.export(config, workdir, str(tmp_path / "c"), serialize=False)
  stale = os.path.join(fresh, "predict.jax")
  open(stale, "w").close()  # not in the manifest: the folder is no longer only the export's
  with pytest.raises(Exception, match="did not write"):
    export.export(config, workdir, fresh, serialize=False)
  os.remove(stale)
  export.export(config, workdir, fresh, serialize=True)  # its own bundle: replaced whole
  assert os.path.isfile(stale)
  assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]
