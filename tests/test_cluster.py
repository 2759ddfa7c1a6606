"""Tests for instseg_jax.cluster on synthetic, well-separated embeddings."""

import jax
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from instseg_jax import cluster as cl
from instseg_jax.cluster import buckets

SIZE = 32
DIM = 8


def _blobs(seed: int, num_instances: int, *, fg_frac: float = 0.6, noise: float = 0.15):
  """Embeddings of K instances whose centres lie >= 3 apart, scattered over the image.

  Returns:
    embeddings (SIZE, SIZE, DIM) float32, mask (SIZE, SIZE) bool, truth (SIZE, SIZE) int32.
  """
  rng = np.random.default_rng(seed)
  centres = []
  while len(centres) < num_instances:
    c = rng.normal(0.0, 2.0, DIM)
    if all(np.linalg.norm(c - o) >= 3.0 for o in centres):
      centres.append(c)
  centres = np.stack(centres)
  mask = rng.random((SIZE, SIZE)) < fg_frac
  truth = np.where(mask, rng.integers(1, num_instances + 1, (SIZE, SIZE)), 0).astype(np.int32)
  embeddings = rng.normal(0.0, 3.0, (SIZE, SIZE, DIM))  # background: anywhere, even on a centre.
  embeddings[mask] = centres[truth[mask] - 1] + rng.normal(0.0, noise, (mask.sum(), DIM))
  return embeddings.astype(np.float32), mask, truth


def _ari(truth, pred, mask):
  return adjusted_rand_score(truth[mask], np.asarray(pred)[mask])


def _check_labels(pred, mask):
  """0 exactly off the mask, and the instance ids 1..K consecutive."""
  pred = np.asarray(pred)
  assert pred.dtype == np.int32
  np.testing.assert_array_equal(pred[~mask], 0)
  assert np.all(pred[mask] > 0)
  np.testing.assert_array_equal(np.unique(pred[mask]), np.arange(1, pred.max() + 1))


@pytest.fixture(scope="module")
def blobs():
  return _blobs(0, 6)


@pytest.mark.parametrize("method", [cl.mean_shift, cl.fast_mean_shift])
def test_jax_mean_shifts_recover_blobs(method, blobs):
  embeddings, mask, truth = blobs
  pred = method(embeddings, mask)
  assert isinstance(pred, jax.Array)
  assert pred.shape == mask.shape
  _check_labels(pred, mask)
  assert _ari(truth, pred, mask) > 0.99
  assert int(pred.max()) == truth.max()


def test_mean_shift_flat_kernel_and_traced_bandwidth(blobs):
  embeddings, mask, truth = blobs
  pred = cl.mean_shift(embeddings, mask, kernel="flat", bandwidth=1.5)
  assert _ari(truth, pred, mask) > 0.99
  # Inside a caller's jit the bandwidth is a tracer; it must not need to be static.
  traced = jax.jit(lambda e, m, h: cl.mean_shift(e, m, bandwidth=h))(embeddings, mask, 1.0)
  np.testing.assert_array_equal(traced, cl.mean_shift(embeddings, mask, bandwidth=1.0))


def test_mean_shift_separates_instances_two_delta_d_apart():
  # Two instances at exactly 2 * delta_d = 3.0, the closest training allows, one ten times the
  # other: the flat kernel of sklearn's reference merges such pairs, ours must not.
  rng = np.random.default_rng(1)
  mask = np.ones((SIZE, SIZE), bool)
  truth = np.where(rng.random((SIZE, SIZE)) < 0.1, 2, 1).astype(np.int32)
  centres = np.zeros((2, DIM))
  centres[1, 0] = 3.0
  embeddings = centres[truth - 1] + rng.normal(0.0, 0.15, (SIZE, SIZE, DIM))
  pred = cl.mean_shift(embeddings.astype(np.float32), mask)
  assert _ari(truth, pred, mask) > 0.99


def test_empty_mask_gives_zeros(blobs):
  embeddings, mask, _ = blobs
  empty = np.zeros_like(mask)
  for method in cl.METHODS:
    options = {"num_clusters": 3} if method == "kmeans" else {}
    if cl.METHODS[method].needs_seed:
      options["seed"] = np.ones(mask.shape, np.float32)
    pred = cl.cluster(embeddings, empty, method=method, **options)
    assert pred.shape == mask.shape
    assert not np.asarray(pred).any(), method


def test_one_instance(blobs):
  embeddings, mask, _ = blobs
  one = np.broadcast_to(embeddings[0, 0], embeddings.shape)
  one = one + np.random.default_rng(2).normal(0.0, 0.15, one.shape).astype(np.float32)
  for method in ("meanshift", "fast_meanshift", "hdbscan", "sklearn_meanshift"):
    pred = np.asarray(cl.cluster(one, mask, method=method))
    np.testing.assert_array_equal(pred, mask.astype(np.int32), err_msg=method)


def test_fewer_foreground_pixels_than_seeds(blobs):
  embeddings, _, truth = blobs
  mask = np.zeros((SIZE, SIZE), bool)
  # Five pixels of instance 1 and three of instance 2: far fewer than the 128 seeds.
  for k, n in ((1, 5), (2, 3)):
    ys, xs = np.nonzero(truth == k)
    mask[ys[:n], xs[:n]] = True
  for method in (cl.mean_shift, cl.fast_mean_shift):
    pred = np.asarray(method(embeddings, mask))
    _check_labels(pred, mask)
    assert _ari(truth, pred, mask) == 1.0


def test_max_instances_caps_the_count(blobs):
  embeddings, mask, _ = blobs
  assert int(cl.mean_shift(embeddings, mask, max_instances=4).max()) == 4
  assert int(cl.fast_mean_shift(embeddings, mask, max_instances=4).max()) == 4


def test_unknown_kernel_raises(blobs):
  embeddings, mask, _ = blobs
  with pytest.raises(ValueError, match="gaussian"):
    cl.mean_shift(embeddings, mask, kernel="epanechnikov")


@pytest.mark.parametrize("method", ["meanshift", "fast_meanshift"])
def test_batch_matches_per_image(method):
  images = [_blobs(seed, k) for seed, k in ((3, 2), (4, 5))]
  embeddings = np.stack([e for e, _, _ in images])
  mask = np.stack([m for _, m, _ in images])
  mask[0, :, : SIZE // 2] = False  # a different foreground size per image.
  batched = np.asarray(cl.cluster(embeddings, mask, method=method))
  for b in range(2):
    single = np.asarray(cl.cluster(embeddings[b], mask[b], method=method))
    np.testing.assert_array_equal(batched[b], single)
    assert _ari(images[b][2], batched[b], mask[b]) > 0.99
  if method == "meanshift":
    np.testing.assert_array_equal(batched, np.asarray(cl.mean_shift(embeddings, mask)))


def test_mean_shift_on_a_batch_sharded_over_devices():
  # Evaluation hands over global arrays sharded along the batch axis.
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top

  devices = np.array(jax.devices())
  images = [_blobs(seed, 3) for seed in range(len(devices))]
  embeddings = np.stack([e for e, _, _ in images])
  mask = np.stack([m for _, m, _ in images])
  sharding = NamedSharding(Mesh(devices, ("data",)), PartitionSpec("data"))
  labels = cl.cluster(
      jax.device_put(embeddings, sharding), jax.device_put(mask, sharding), min_size=2
  )
  assert labels.sharding.is_equivalent_to(sharding, labels.ndim)
  np.testing.assert_array_equal(labels, cl.mean_shift(embeddings, mask))


def test_kmeans_with_the_right_count(blobs):
  embeddings, mask, truth = blobs
  pred = cl.kmeans(embeddings, mask, num_clusters=6)
  assert isinstance(pred, np.ndarray)
  _check_labels(pred, mask)
  assert _ari(truth, pred, mask) > 0.99


def test_kmeans_takes_a_count_per_image(blobs):
  embeddings, mask, _ = blobs
  batch = np.stack([embeddings, embeddings])
  pred = cl.cluster(batch, np.stack([mask, mask]), method="kmeans", num_clusters=[2.2, 6])
  assert pred.shape == (2, SIZE, SIZE)
  assert pred[0].max() == 2 and pred[1].max() == 6


def test_hdbscan_recovers_blobs(blobs):
  embeddings, mask, truth = blobs
  pred = cl.hdbscan(embeddings, mask)
  _check_labels(pred, mask)
  assert _ari(truth, pred, mask) > 0.99


def test_sklearn_mean_shift_recovers_easy_blobs(blobs):
  embeddings, mask, truth = blobs
  pred = cl.sklearn_mean_shift(embeddings, mask)
  _check_labels(pred, mask)
  assert _ari(truth, pred, mask) > 0.99


def test_dispatch(blobs):
  embeddings, mask, _ = blobs
  assert set(cl.METHODS) == {
      "meanshift",
      "fast_meanshift",
      "kmeans",
      "hdbscan",
      "sklearn_meanshift",
      "seeds",
  }
  with pytest.raises(ValueError, match="fast_meanshift.*kmeans.*meanshift"):
    cl.cluster(embeddings, mask, method="dbscan")
  with pytest.raises(TypeError):
    cl.cluster(embeddings, mask, method="kmeans", bandwidth=1.0)
  assert isinstance(cl.cluster(embeddings, mask), jax.Array)


def test_cluster_removes_small_instances(blobs):
  embeddings, mask, truth = blobs
  sizes = np.bincount(truth.ravel())[1:]
  min_size = int(np.sort(sizes)[2])  # drops exactly the two smallest instances.
  for method in ("meanshift", "hdbscan"):
    pred = np.asarray(cl.cluster(embeddings, mask, method=method, min_size=min_size))
    assert pred.max() == len(sizes) - 2, method
    np.testing.assert_array_equal(np.unique(pred), np.arange(len(sizes) - 1))
    assert not pred[np.isin(truth, np.argsort(sizes)[:2] + 1)].any()


def test_remove_small_instances_numpy_and_jax():
  labels = np.array([[0, 1, 1, 1], [2, 3, 3, 0], [3, 5, 5, 5]], np.int32)
  want = np.array([[0, 1, 1, 1], [0, 2, 2, 0], [2, 3, 3, 3]], np.int32)
  out = cl.remove_small_instances(labels, min_size=3)
  assert isinstance(out, np.ndarray)
  np.testing.assert_array_equal(out, want)
  out = cl.remove_small_instances(jax.numpy.asarray(labels), min_size=3)
  assert isinstance(out, jax.Array)
  np.testing.assert_array_equal(out, want)
  batch = np.stack([labels, np.where(labels == 5, 0, labels)])
  want_batch = np.stack([want, np.where(want == 3, 0, want)])
  np.testing.assert_array_equal(cl.remove_small_instances(batch, min_size=3), want_batch)
  np.testing.assert_array_equal(
      cl.remove_small_instances(jax.numpy.asarray(batch), min_size=3), want_batch
  )
  np.testing.assert_array_equal(cl.remove_small_instances(labels, min_size=0), labels)


def _many_blobs(num_instances: int, *, pixels: int = 10, dim: int = 4, spacing: float = 4.0):
  """num_instances instances of `pixels` pixels each, centres on a grid `spacing` apart.

  Returns:
    embeddings (H, W, dim) float32, mask (H, W) bool (all True), truth (H, W) int32.
  """
  rng = np.random.default_rng(0)
  side = int(np.ceil(num_instances ** (1 / dim)))
  grid = np.stack(np.meshgrid(*[np.arange(side)] * dim, indexing="ij"), -1).reshape(-1, dim)
  centres = grid[rng.permutation(len(grid))[:num_instances]] * spacing
  truth = np.repeat(np.arange(1, num_instances + 1), pixels).reshape(-1, 50).astype(np.int32)
  embeddings = centres[truth - 1] + rng.normal(0.0, 0.1, truth.shape + (dim,))
  return embeddings.astype(np.float32), np.ones(truth.shape, bool), truth


def test_mean_shift_finds_as_many_instances_as_the_caller_allows(caplog):
  embeddings, mask, truth = _many_blobs(500)
  pred = cl.cluster(embeddings, mask, method="meanshift", bandwidth=1.0, max_instances=512)
  assert int(np.max(pred)) == 500
  assert _ari(truth, pred, mask) > 0.99
  assert "max_instances" not in caplog.text


@pytest.mark.parametrize("method", ["meanshift", "fast_meanshift"])
def test_reaching_max_instances_is_reported(method, caplog):
  embeddings, mask, _ = _many_blobs(200)
  pred = cl.cluster(embeddings, mask, method=method, bandwidth=1.0, max_instances=150)
  assert int(np.max(pred)) == 150
  assert "max_instances=150" in caplog.text


def test_bucket_sizes():
  assert buckets.bucket_pixels(1) == buckets.MIN_PIXELS == 64 * 64
  assert buckets.bucket_pixels(64 * 64) == 64 * 64
  assert buckets.bucket_pixels(64 * 64 + 1) == 2 * 64 * 64
  assert buckets.bucket_pixels(1040 * 1388) == 2**21


@pytest.mark.parametrize("method", ["meanshift", "fast_meanshift"])
def test_padding_to_a_bucket_changes_no_label(method):
  embeddings, mask, _ = _blobs(6, 5)
  embeddings, mask = embeddings[:, 3:27], mask[:, 3:27]  # 32x24: not a power of two wide.
  padded, padded_mask = buckets.pad_to_bucket(embeddings, mask)
  assert padded.shape == (1, 4096, DIM) and padded_mask.sum() == mask.sum()
  direct = np.asarray(cl.cluster(embeddings, mask, method=method))
  via_bucket = buckets.unpad(np.asarray(cl.cluster(padded, padded_mask, method=method)), mask.shape)
  assert direct.max() == 5
  np.testing.assert_array_equal(via_bucket, direct)


def _reference_modes(seeds, points, bandwidth, max_iters, tol):
  """All seeds step together until none moves farther than tol (the plain mean shift)."""
  x = np.asarray(seeds, np.float64)
  for _ in range(max_iters):
    d2 = np.sum((x[:, None] - points[None]) ** 2, axis=-1)
    w = np.exp(-2.0 * d2 / bandwidth**2)
    new = w @ points / w.sum(-1, keepdims=True)
    moved = np.sqrt(np.sum((new - x) ** 2, axis=-1))
    x = new
    if moved.max() <= tol:
      break
  return x


def test_stragglers_alone_reach_the_modes_all_seeds_reach_together():
  # Seeds spread between the clusters (as stragglers are) take many steps; once few still move
  # they step alone, and every seed must end where stepping all of them together ends.
  from instseg_jax.cluster import meanshift

  rng = np.random.default_rng(0)
  means = rng.normal(0, 2.0, (6, 4))
  points = np.concatenate([m + rng.normal(0, 0.3, (60, 4)) for m in means]).astype(np.float32)
  seeds = np.concatenate([points[::12], (means[:3] + means[3:]) / 2]).astype(np.float32)
  tol = 1e-4
  modes, _ = meanshift._shift_to_modes(
      seeds,
      points,
      np.ones(len(points), bool),
      bandwidth=np.float32(1.5),
      kernel="gaussian",
      max_iters=200,
      tol=np.float32(tol),
  )
  assert len(seeds) > meanshift._STRAGGLERS
  np.testing.assert_allclose(modes, _reference_modes(seeds, points, 1.5, 200, tol), atol=1e-2)


def test_labelling_in_blocks_of_centres_is_one_argmin():
  # Centres compared block by block, stopping at the number in use, label like one arg-min over
  # the centres in use, ties included (the first centre wins).
  from instseg_jax.cluster import meanshift

  rng = np.random.default_rng(1)
  flat = rng.normal(0, 1, (300, 3)).astype(np.float32)
  centres = rng.normal(0, 1, (70, 3)).astype(np.float32)
  centres[40] = centres[5]  # a tie: pixels nearest to both take centre 5
  for num_centres in (0, 1, 33, 41, 70):
    packed = meanshift._pack_foreground(
        jax.numpy.asarray(flat), jax.numpy.asarray(np.arange(300) % 4 != 0), chunk=64
    )
    got = np.asarray(meanshift._assign_nearest(packed, centres, np.int32(num_centres)))
    fg = flat[np.arange(300) % 4 != 0]
    d2 = np.sum((fg[:, None] - centres[None, : max(num_centres, 1)]) ** 2, axis=-1)
    want = np.argmin(d2, axis=1) + 1 if num_centres else np.zeros(len(fg), int)
    np.testing.assert_array_equal(got[: len(fg)], want)
    assert not got[len(fg) :].any()
