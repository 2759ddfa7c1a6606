"""benchmarks/centre_oracle.py: the ceilings it reports are computed as its docstring says."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import centre_oracle  # pylint: disable=g-import-not-at-top,wrong-import-position
from instseg_jax import inference  # pylint: disable=g-import-not-at-top,wrong-import-position


def _output(embedding: np.ndarray, shape: tuple[int, int]) -> inference.NetworkOutput:
  h, w = embedding.shape[:2]
  return inference.NetworkOutput(
      embedding=embedding.astype(np.float32),
      foreground=np.ones((h, w), np.float32),
      classes=np.ones((h, w), np.int32),
      count=None,
      shape=shape,
  )


def _two_instances() -> tuple[np.ndarray, np.ndarray]:
  """A 4x8 grid: instance 1 on the left half, 2 on the right, embeddings spread around 0 and 3."""
  truth = np.zeros((4, 8), np.int32)
  truth[:, :4], truth[:, 4:] = 1, 2
  noise = np.random.default_rng(0).normal(0, 0.4, (4, 8, 2))
  embedding = np.where((truth == 1)[..., None], [0.0, 0.0], [3.0, 0.0]) + noise
  return embedding, truth


def test_nearest_true_centre_gives_each_pixel_its_instance_on_the_image_grid():
  embedding, truth = _two_instances()
  labels = centre_oracle.nearest_true_centre(_output(embedding, (8, 16)), truth, 0.5)
  assert labels.shape == (8, 16)
  expected = np.kron(truth, np.ones((2, 2), np.int32))
  np.testing.assert_array_equal(labels, expected)


def test_nearest_row_matches_a_direct_argmin_across_chunks():
  rng = np.random.default_rng(1)
  points, centres = rng.normal(size=(50, 3)), rng.normal(size=(7, 3))
  direct = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=-1)
  np.testing.assert_array_equal(centre_oracle.nearest_row(points, centres, chunk=8), direct)


def test_tightened_moves_pixels_towards_their_instance_mean_only():
  embedding, truth = _two_instances()
  output = _output(embedding, (4, 8))
  _, means = centre_oracle.true_means(embedding, truth)
  collapsed = centre_oracle.tightened(output, truth, 0.0).embedding
  np.testing.assert_allclose(collapsed[truth == 1], np.broadcast_to(means[0], (16, 2)), atol=1e-6)
  half = centre_oracle.tightened(output, truth, 0.5).embedding
  np.testing.assert_allclose(
      half[truth == 2] - means[1], 0.5 * (embedding[truth == 2] - means[1]), atol=1e-6
  )
  np.testing.assert_array_equal(output.embedding, embedding.astype(np.float32))  # not in place
