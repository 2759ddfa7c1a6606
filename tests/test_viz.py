"""Every picture on a tiny input: its size, and neighbouring instances in distinct colours."""

import numpy as np

from instseg_jax import evaluate
from instseg_jax import viz

# Two touching squares and a third one a row of background below the first.
LABELS = np.zeros((24, 30), np.int32)
LABELS[2:10, 2:12] = 1
LABELS[2:10, 12:22] = 2
LABELS[11:19, 2:12] = 3
# Clearly distinct: at least this far apart in RGB.
DISTINCT = 80.0


def _distance(a, b):
  return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


def _embedding():
  """(24, 30, 4): each instance around its own point, background around the origin."""
  rng = np.random.default_rng(0)
  centres = np.array([[0, 0, 0, 0], [3, 0, 0, 1], [0, 3, 0, -1], [0, 0, 3, 1]], float)
  return centres[LABELS] + 0.1 * rng.normal(size=(*LABELS.shape, 4))


def test_neighbours_are_instances_within_reach():
  assert viz.neighbour_pairs(LABELS).tolist() == [[1, 2], [1, 3], [2, 3]]
  assert viz.neighbour_pairs(LABELS, reach=1).tolist() == [[1, 2]]


def test_touching_instances_get_distinct_colours_even_among_many():
  # A row of 40 thin touching stripes: each next to two others.
  stripes = np.repeat(np.arange(1, 41), 2)[None].repeat(5, axis=0)
  colors = viz.instance_colors(stripes)
  for a, b in viz.neighbour_pairs(stripes):
    assert _distance(colors[a], colors[b]) > DISTINCT, (a, b)
  assert (colors[0] == 0).all()


def test_panel_size_and_colours():
  image = np.random.default_rng(0).random((24, 30, 3)).astype(np.float32)
  panel = viz.panel(image, LABELS, LABELS, gap=4)
  assert panel.shape == (24, 3 * 30 + 2 * 4, 3) and panel.dtype == np.uint8
  prediction = panel[:, 34:64]
  one, two, three = prediction[5, 5], prediction[5, 15], prediction[15, 5]
  assert _distance(one, two) > DISTINCT and _distance(one, three) > DISTINCT
  assert _distance(two, three) > DISTINCT
  assert (prediction[22, 28] == 0).all()  # background is black


def test_embedding_rgb_size_and_instances_apart():
  rgb = viz.embedding_rgb(_embedding(), LABELS > 0)
  assert rgb.shape == (24, 30, 3) and rgb.dtype == np.uint8
  means = [rgb[LABELS == i].astype(float).mean(axis=0) for i in (1, 2, 3)]
  assert _distance(means[0], means[1]) > DISTINCT and _distance(means[0], means[2]) > DISTINCT
  assert _distance(means[1], means[2]) > DISTINCT
  # The background is dimmed below every instance.
  assert rgb[LABELS == 0].astype(float).sum(axis=1).mean() < min(m.sum() for m in means)


def test_embedding_scatter_size_and_one_colour_per_instance():
  size = 64
  scatter = viz.embedding_scatter(_embedding(), LABELS, size=size)
  assert scatter.shape == (size, size, 3) and scatter.dtype == np.uint8
  colors = viz.instance_colors(LABELS)
  drawn = {tuple(c) for c in scatter.reshape(-1, 3)} - {(255, 255, 255)}
  assert drawn == {tuple(colors[i]) for i in (1, 2, 3)}
  # Each instance's dots sit together, apart from the others' (it is well separated).
  centres = []
  for i in (1, 2, 3):
    rows, cols = np.nonzero((scatter == colors[i]).all(axis=2))
    centres.append((rows.mean(), cols.mean()))
  assert min(_distance(centres[a], centres[b]) for a, b in ((0, 1), (0, 2), (1, 2))) > size / 4
  empty = viz.embedding_scatter(_embedding(), np.zeros_like(LABELS), size=size)
  assert (empty == 255).all()


def test_pca_axes_have_a_fixed_sign():
  rng = np.random.default_rng(1)
  points = rng.normal(size=(50, 3)) * np.array([5.0, 1.0, 0.1])
  _, basis = viz.pca(points, 2)
  _, flipped = viz.pca(-points, 2)
  np.testing.assert_allclose(basis, flipped, atol=1e-9)
  assert abs(basis[0, 0]) > 0.99


def test_worst_sheet_keeps_the_lowest_scores_worst_first_with_captions():
  worst = evaluate.WorstImages(2, higher_is_better=True)
  drawn = []
  for score, name in ((0.9, "a"), (0.2, "b"), (0.5, "c"), (0.95, "d")):
    panel = np.full((10, 20, 3), int(score * 100), np.uint8)
    worst.offer(score, name, lambda p=panel, n=name: drawn.append(n) or p)
  sheet = worst.sheet("SBD")
  caption_height = viz.caption(np.zeros((10, 20, 3), np.uint8), "x").shape[0] - 10
  assert sheet.shape == (2 * (10 + caption_height) + 4, 20, 3)
  assert sheet[caption_height + 5, 5, 0] == 20 and sheet[-5, 5, 0] == 50
  assert "d" not in drawn  # better than both kept: never drawn
  lower_first = evaluate.WorstImages(1, higher_is_better=False)
  for score, name in ((1.0, "a"), (3.0, "b")):
    lower_first.offer(score, name, lambda: np.zeros((4, 4, 3), np.uint8))
  assert lower_first._kept[0][2] == "b"  # pylint: disable=protected-access
