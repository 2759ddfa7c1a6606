"""The seed head: its targets and loss, the "seeds" clustering, and the paths that carry the map."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from instseg_jax import cluster
from instseg_jax import inference
from instseg_jax import losses
from instseg_jax import models
from instseg_jax import tune
from instseg_jax import validate
from instseg_jax.losses import seed as seed_lib


def test_seed_targets_fall_off_with_the_distance_from_the_instance_mean():
  # One row: instance 1 at 0 and 2 (mean 1), background, instance 2 at 5, the ignore label.
  embeddings = jnp.array([[[[0.0], [2.0], [9.0], [5.0], [7.0]]]])
  labels = jnp.array([[[1, 1, 0, 2, 255]]])
  targets, valid = seed_lib.seed_targets(
      embeddings, labels, sigma=0.5, max_instances=4, ignore_label=255
  )
  np.testing.assert_allclose(targets[0, 0], [np.exp(-2.0), np.exp(-2.0), 0.0, 1.0, 0.0], 1e-6)
  np.testing.assert_array_equal(valid[0, 0], [True, True, True, True, False])


def test_centroid_targets_peak_at_one_in_the_middle_of_every_instance_whatever_its_size():
  labels = np.zeros((1, 12, 12), np.int32)
  labels[0, 1:4, 1:4] = 1  # 3x3: radius sqrt(9 / pi), centroid at (2, 2)
  labels[0, 5:12, 4:11] = 2  # 7x7, centroid at (8, 7)
  rng = np.random.default_rng(0)
  embeddings = jnp.asarray(rng.normal(size=(1, 12, 12, 4)), jnp.float32)  # they play no part
  targets, valid = seed_lib.seed_targets(
      embeddings, jnp.asarray(labels), sigma=0.5, max_instances=4, target="centroid"
  )
  targets = np.asarray(targets[0])
  assert targets[2, 2] == pytest.approx(1.0) and targets[8, 7] == pytest.approx(1.0)
  # A corner of the small one, sqrt(2) from its centroid: exp(-2 / (2 * 0.5^2 * 9 / pi)).
  assert targets[1, 1] == pytest.approx(np.exp(-2.0 / (2 * 0.25 * 9 / np.pi)), rel=1e-5)
  # The same image distance is nearer the middle of the larger one.
  assert targets[7, 6] == pytest.approx(np.exp(-2.0 / (2 * 0.25 * 49 / np.pi)), rel=1e-5)
  assert np.all(targets[labels[0] == 0] == 0) and np.all(np.asarray(valid))
  with pytest.raises(ValueError, match="seed target 'middle'"):
    seed_lib.seed_targets(
        embeddings, jnp.asarray(labels), sigma=0.5, max_instances=4, target="middle"
    )


def test_seed_loss_is_smallest_at_the_targets_and_leaves_the_embeddings_alone():
  rng = np.random.default_rng(0)
  embeddings = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, (2, 6, 6)), jnp.int32)
  targets, _ = seed_lib.seed_targets(embeddings, labels, sigma=0.5, max_instances=8)
  exact = jnp.log(targets + 1e-12) - jnp.log1p(-targets + 1e-12)  # sigmoid(exact) = targets

  def loss(logits, emb):
    return losses.seed_loss(logits, emb, labels, sigma=0.5, max_instances=8)

  at_targets = loss(exact, embeddings)
  assert at_targets < loss(exact + 0.5, embeddings)
  assert at_targets < loss(exact - 0.5, embeddings)
  assert not np.any(np.asarray(jax.grad(loss, argnums=1)(exact, embeddings)))


def _big_and_small_instance():
  """A 20x20 instance and a 4x4 one whose embeddings lie 1.3 from the large one's (2-D).

  Mean shift at bandwidth 1 takes them as one mode; a seed map peaked at each instance's mean
  (the seed head's target) separates them.
  """
  rng = np.random.default_rng(0)
  truth = np.zeros((24, 24), np.int32)
  truth[:20, :20] = 1
  truth[20:, 20:] = 2
  means = np.array([[0.0, 0.0], [0.0, 0.0], [1.3, 0.0]])
  spread = np.array([0.0, 0.35, 0.15])
  embeddings = means[truth] + rng.normal(size=(24, 24, 2)) * spread[truth][..., None]
  mask = truth > 0
  distance = np.linalg.norm(embeddings - means[truth], axis=-1)
  seed = np.where(mask, np.exp(-(distance**2) / (2 * 0.5**2)), 0.0)
  return embeddings.astype(np.float32), mask, seed.astype(np.float32), truth


def test_seeds_find_a_small_instance_that_mean_shift_merges_into_its_neighbour():
  embeddings, mask, seed, truth = _big_and_small_instance()
  merged = np.asarray(cluster.cluster(embeddings, mask, method="meanshift", bandwidth=1.0))
  assert merged.max() == 1
  labels = np.asarray(cluster.cluster(embeddings, mask, method="seeds", seed=seed, bandwidth=1.0))
  assert labels.max() == 2
  assert (labels[truth == 2] == labels[19, 19]).mean() < 0.1  # the small one is its own
  assert (labels[truth == 1] == labels[0, 0]).mean() > 0.95
  assert not labels[~mask].any()


def test_no_seed_over_the_threshold_gives_no_instance_and_a_batch_matches_its_images():
  embeddings, mask, seed, _ = _big_and_small_instance()
  empty = cluster.seed_clustering(embeddings, mask, seed=seed, seed_threshold=1.01)
  assert not np.asarray(empty).any()
  batch = cluster.seed_clustering(
      np.stack([embeddings, embeddings[::-1]]),
      np.stack([mask, mask[::-1]]),
      seed=np.stack([seed, seed[::-1]]),
  )
  np.testing.assert_array_equal(batch[0], cluster.seed_clustering(embeddings, mask, seed=seed))
  np.testing.assert_array_equal(
      batch[1], cluster.seed_clustering(embeddings[::-1], mask[::-1], seed=seed[::-1])
  )


def test_the_seed_head_is_an_output_only_when_asked_for():
  config = tiny.get_config()
  images = jnp.zeros((2, 32, 32, 3))
  plain = models.create_model(config)
  assert "seed_logits" not in plain.apply(plain.init(jax.random.key(0), images), images)
  config.model.seed_head = True
  model = models.create_model(config)
  outputs = model.apply(model.init(jax.random.key(0), images), images)
  assert outputs["seed_logits"].shape == (2, 32, 32)
  batch = {
      "instances": jnp.ones((2, 32, 32), jnp.int32),
      "semantic": jnp.ones((2, 32, 32), jnp.int32),
      "num_instances": jnp.ones((2,), jnp.int32),
  }
  total, metrics = losses.total_loss(outputs, batch, config)
  assert np.isfinite(total) and metrics["seed"] > 0
  config.loss.seed_target = "centroid"
  _, centroid_metrics = losses.total_loss(outputs, batch, config)
  assert centroid_metrics["seed"] != metrics["seed"]
  config.loss.seed_target = "middle"
  with pytest.raises(validate.ConfigError, match="config.loss.seed_target"):
    validate.validate(config, num_devices=8)


def test_seed_clustering_needs_the_seed_head():
  config = tiny.get_config()
  config.cluster.method = "seeds"
  with pytest.raises(validate.ConfigError, match="needs the seed head"):
    validate.validate(config, num_devices=8)
  config.model.seed_head = True
  validate.validate(config, num_devices=8)
  assert "seed_threshold" in tune.candidates(config)
  embeddings, mask, seed, _ = _big_and_small_instance()
  output = inference.NetworkOutput(
      embedding=embeddings,
      foreground=mask.astype(np.float32),
      classes=np.ones(mask.shape, np.int32),
      count=None,
      shape=mask.shape,
  )
  postprocess = inference.PostProcess.from_config(config)
  with pytest.raises(ValueError, match="needs the seed head"):
    inference.apply_postprocess(output, postprocess)
  seeded = inference.apply_postprocess(dataclasses.replace(output, seed=seed), postprocess)
  assert seeded.labels.max() == 2
