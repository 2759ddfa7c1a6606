"""Tests of instseg_jax.losses against a plain NumPy loop over instances."""

import functools
import inspect

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from configs import default
from instseg_jax import losses
from instseg_jax.losses import LOSS_PRESETS, discriminative_loss

M = 6  # max_instances in the tests: small, so a test image can fill it
PAPER = LOSS_PRESETS["paper"]  # every option of the loss, at its default


def _ref_distance(v, kind):
  return np.sqrt(np.sum(v * v, -1)) if kind == "euclidean" else np.sum(np.abs(v), -1)


def _ref_error(h, kind):
  return {"squared": h * h, "absolute": h, "log_cosh": np.log(np.cosh(h))}[kind]


def reference_loss(
    emb,
    labels,
    *,
    max_instances=32,
    ignore_label=None,
    semantic_labels=None,
    max_label_id=None,
    num_classes=None,
    **options,
):
  """The loss as the paper reads: a loop over images, classes and instances, in float64.

  Returns:
    Per-image losses (B,) and the batch means of the (pull, push, regularization) terms.
  """
  del max_label_id, num_classes  # speed hints only
  o = {**PAPER, **options}
  background_as_instance, normalization = o["background_as_instance"], o["normalization"]
  emb = np.asarray(emb, np.float64)
  batch, dim = emb.shape[0], emb.shape[-1]
  all_x = emb.reshape(batch, -1, dim)
  all_ids = np.asarray(labels).reshape(batch, -1)
  all_cls = None if semantic_labels is None else np.asarray(semantic_labels).reshape(batch, -1)
  terms = []
  for b in range(batch):
    x, ids = all_x[b], all_ids[b]
    cls = np.zeros_like(ids) if all_cls is None else all_cls[b]
    valid = (ids >= 0) & (cls >= 0)
    if ignore_label is not None:
      valid &= (ids != ignore_label) & (cls != ignore_label)
    member = valid & ((ids > 0) | background_as_instance)
    keys = sorted(set(zip(cls[member].tolist(), ids[member].tolist())))
    # The instances beyond max_instances (largest keys) are left out.
    if all_cls is None:
      keys = [k for k in keys if k[1] == 0] + [k for k in keys if k[1] > 0][:max_instances]
    else:
      keys = keys[: max_instances + (1 if background_as_instance else 0)]
    pull = push = reg = 0.0
    classes = sorted({k[0] for k in keys})
    for c_id in classes:
      members = [k for k in keys if k[0] == c_id]
      c = len(members)
      means, per_instance, pixel_total, pixel_count = [], [], 0.0, 0
      for cls_key, id_key in members:
        pixels = x[member & (cls == cls_key) & (ids == id_key)]
        mu = pixels.mean(0)
        means.append(mu)
        gap = _ref_distance(pixels - mu, o["pull_distance"]) - o["pull_margin"]
        err = _ref_error(np.maximum(gap, 0), o["pull_error"])
        per_instance.append(err.mean())
        pixel_total += err.sum()
        pixel_count += len(pixels)
      if normalization == "paper":
        pull += sum(per_instance) / c
      elif normalization == "pixel":
        pull += pixel_total / pixel_count
      else:
        pull += sum(per_instance)
      if c > 1:
        total = 0.0
        for a in range(c):
          for other in range(c):
            if a != other:
              gap = _ref_distance(means[a] - means[other], o["push_distance"])
              total += _ref_error(max(o["push_margin"] - gap, 0.0), o["push_error"])
        push += total / 2 / (c - 1) if normalization == "authors" else total / (c * (c - 1))
      if normalization != "authors":
        reg += (
            sum(
                _ref_error(
                    _ref_distance(mu, o["regularization_distance"]), o["regularization_error"]
                )
                for mu in means
            )
            / c
        )
    n = max(len(classes), 1)
    terms.append((pull / n, push / n, reg / n))
  terms = np.array(terms)
  per_image = terms @ np.array([o["pull_weight"], o["push_weight"], o["regularization_weight"]])
  return per_image, terms.mean(0)


def _labels(large_ids: bool) -> np.ndarray:
  """(7, 8, 9) labels covering the edge cases; ids <= M unless large_ids."""
  rng = np.random.default_rng(1)
  lab = np.zeros((7, 8, 9), np.int32)
  # 0: no instance at all.
  # 1: a single instance.
  lab[1, 2:6, 3:7] = 2
  # 2: non-consecutive ids, one of them a 1-pixel instance.
  lab[2] = rng.choice([0, 1, 3, 5], size=(8, 9))
  lab[2, 7, 8] = 6
  # 3: two instances whose means coincide (data set below), plus a third.
  lab[3, :4] = 1
  lab[3, 4:] = 2
  lab[3, :, :2] = 4
  # 4: exactly M instances.
  lab[4] = rng.integers(1, M + 1, size=(8, 9))
  # 5, 6: random, with background.
  lab[5] = rng.integers(0, 4, size=(8, 9))
  lab[6] = rng.integers(0, M + 1, size=(8, 9))
  if large_ids:
    lab = np.where(lab > 0, lab * 37 + 1000, 0).astype(np.int32)
  return lab


def _embeddings(labels: np.ndarray, dim: int = 3) -> np.ndarray:
  rng = np.random.default_rng(2)
  x = rng.normal(size=labels.shape + (dim,)) * 1.5
  # Image 3: instances 1 and 2 share one constant embedding, so their means coincide and every
  # distance to the mean is exactly 0.
  x[3, :, 2:] = 0.25
  return x.astype(np.float32)


def _semantic(labels: np.ndarray) -> np.ndarray:
  rng = np.random.default_rng(3)
  return np.where(labels > 0, rng.integers(1, 3, size=labels.shape), 0).astype(np.int32)


SMALL = _labels(large_ids=False)
LARGE = _labels(large_ids=True)
X = _embeddings(SMALL)
SEM = _semantic(SMALL)

MANHATTAN = {
    "pull_distance": "manhattan",
    "push_distance": "manhattan",
    "regularization_distance": "manhattan",
}
# Each option value at least once, and the combinations whose normalizations interact; every
# preset.
OPTION_SETS = {
    "default": {},
    "pixel_manhattan_background_ignore": {
        "normalization": "pixel",
        "background_as_instance": True,
        "ignore_label": 5,
        **MANHATTAN,
    },
    "authors_ignore": {"normalization": "authors", "ignore_label": 3},
    "log_cosh_pull_absolute_push": {
        "pull_distance": "manhattan",
        "pull_error": "log_cosh",
        "push_error": "absolute",
        "regularization_error": "squared",
        "pull_margin": 0.2,
        "push_margin": 1.0,
        "pull_weight": 2.0,
        "push_weight": 0.5,
        "regularization_weight": 0.1,
    },
    "absolute_pull_log_cosh_push": {
        "pull_margin": 0.1,
        "push_margin": 1.4,
        "pull_weight": 0.5,
        "push_weight": 2.0,
        "regularization_weight": 0.01,
        "pull_error": "absolute",
        "push_error": "log_cosh",
        "push_distance": "manhattan",
        "regularization_error": "log_cosh",
        "regularization_distance": "manhattan",
    },
    **{f"preset_{name}": options for name, options in LOSS_PRESETS.items()},
}
# Options that change which pixels form which cluster: also run on ids that need the sort.
RELABEL_SENSITIVE = {"default", "pixel_manhattan_background_ignore"}


# Options that hold only with semantic labels (max_instances 2 * M: (class, id) pairs).
SEMANTIC_OPTION_SETS = {
    "sort_authors_ignore": {"normalization": "authors", "ignore_label": 2},
    "table_background_pixel": {
        "num_classes": 3,
        "max_label_id": 2000,
        "background_as_instance": True,
        "normalization": "pixel",
    },
    "tf_metric_loss_pixel_background": dict(
        LOSS_PRESETS["tf_metric_loss"], normalization="pixel", background_as_instance=True
    ),
}

# The loss before its options got one name each (issue 16), on the data above:
# (option set, labels, semantic) -> (loss, variance, distance, regularization, gradient . V).
PINNED = {
    ("preset_paper", "small", False): (6.49401045, 3.11584592, 3.37760234, 0.56184423, 0.360430124),
    ("preset_authors", "small", False): (24.2650948, 15.8802824, 8.38481331, 0, 0.122220274),
    ("preset_pixel", "small", False): (6.55926085, 3.18109632, 3.37760234, 0.56184423, 0.412058806),
    ("preset_tf_metric_loss", "small", False): (
        10.4533386,
        10.4503155,
        0.00297618983,
        0.462721854,
        0.268823728,
    ),
    ("default", "large", False): (6.49401045, 3.11584592, 3.37760234, 0.56184423, 0.360430124),
    ("pixel_manhattan_background_ignore", "large", False): (
        13.0973377,
        10.3355856,
        2.76088309,
        0.869327128,
        0.00173366086,
    ),
    ("absolute_pull_log_cosh_push", "small", False): (
        1.00165737,
        1.64578474,
        0.087275818,
        0.421336323,
        0.0901909374,
    ),
    ("log_cosh_pull_absolute_push", "small", False): (
        4.02433348,
        1.93730509,
        0.20690231,
        0.462721854,
        0.141238677,
    ),
    ("sort_authors_ignore", "large", True): (16.3627434, 11.3679724, 4.99477148, 0, -1.34051736),
    ("table_background_pixel", "large", True): (
        5.84231806,
        3.71258545,
        2.12898374,
        0.748498321,
        0.210086031,
    ),
    ("tf_metric_loss_pixel_background", "small", True): (
        12.7797489,
        12.7766933,
        0.00297619007,
        0.789291739,
        0.880775655,
    ),
}


@pytest.mark.parametrize("case", PINNED, ids=lambda case: "-".join(map(str, case)))
def test_values_pinned_before_the_options_were_renamed(case):
  name, labels, semantic = case
  options = {**OPTION_SETS, **SEMANTIC_OPTION_SETS}[name]
  labels = {"small": SMALL, "large": LARGE}[labels]
  shape = {"max_instances": 2 * M, "semantic_labels": SEM} if semantic else {"max_instances": M}
  fn = lambda x: discriminative_loss(x, labels, **shape, **options)
  (loss, aux), grad = jax.value_and_grad(fn, has_aux=True)(X)
  v = np.random.default_rng(5).normal(size=X.shape).astype(np.float32).astype(np.float64)
  got = [
      loss,
      aux["variance"],
      aux["distance"],
      aux["regularization"],
      np.vdot(np.asarray(grad, np.float64), v),
  ]
  np.testing.assert_allclose(got, PINNED[case], rtol=1e-6, atol=1e-6)


def _check_against_reference(options, labels, semantic=None, max_instances=M):
  loss, aux = discriminative_loss(
      X, labels, max_instances=max_instances, semantic_labels=semantic, **options
  )
  per_image, terms = reference_loss(
      X, labels, max_instances=max_instances, semantic_labels=semantic, **options
  )
  np.testing.assert_allclose(aux["per_image_loss"], per_image, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(loss, per_image.mean(), rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(
      [aux["variance"], aux["distance"], aux["regularization"]], terms, rtol=2e-5, atol=2e-5
  )


@pytest.mark.parametrize("name", OPTION_SETS)
def test_matches_reference(name):
  _check_against_reference(OPTION_SETS[name], SMALL)  # ids are their own slots
  if name in RELABEL_SENSITIVE:
    _check_against_reference(OPTION_SETS[name], LARGE)  # ids beyond max_instances: the sort


def test_table_relabelling_matches_reference():
  _check_against_reference({"max_label_id": 2000}, LARGE)


@pytest.mark.parametrize("name", SEMANTIC_OPTION_SETS)
def test_semantic_matches_reference(name):
  # (class, id) pairs are the instances: up to twice as many as the ids.
  options = SEMANTIC_OPTION_SETS[name]
  _check_against_reference(options, SMALL, semantic=SEM, max_instances=2 * M)
  _check_against_reference(options, LARGE, semantic=SEM, max_instances=2 * M)


def test_paper_form_by_hand():
  # One row of pixels in 1-D: instance 1 at 0 and 2, instance 2 at 2.5 and 3.5, one background.
  x = np.array([0.0, 2.0, 2.5, 3.5, 9.0], np.float32).reshape(1, 1, 5, 1)
  y = np.array([1, 1, 2, 2, 0], np.int32).reshape(1, 1, 5)
  loss, aux = discriminative_loss(x, y)
  # Means 1 and 3. Pull: instance 1 pixels at distance 1 -> (1 - 0.5)^2 = 0.25 each; instance 2
  # at 0.5 -> 0; L_var = (0.25 + 0) / 2. Push: distance 2 < 3 -> (3 - 2)^2 = 1 for both ordered
  # pairs, / (2 * 1). L_reg = (1 + 3) / 2.
  np.testing.assert_allclose(aux["variance"], 0.125, rtol=1e-6)
  np.testing.assert_allclose(aux["distance"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(aux["regularization"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.125 + 1.0 + 0.001 * 2.0, rtol=1e-6)
  np.testing.assert_array_equal(aux["num_instances"], [2])


def test_one_instance_has_no_push():
  x = np.array([0.0, 2.0, 2.5, 3.5, 9.0], np.float32).reshape(1, 1, 5, 1)
  y = np.array([1, 1, 1, 0, 0], np.int32).reshape(1, 1, 5)
  _, aux = discriminative_loss(x, y)
  assert float(aux["distance"]) == 0.0 and float(aux["variance"]) > 0.0


def test_tf_metric_loss_preset_pins_push_of_identical_centroids():
  # Two instances with the same centroid: push = (0.25 - 0)^2 = 0.0625.
  x = np.zeros((1, 1, 5, 1), np.float32)
  y = np.array([1, 1, 2, 2, 0], np.int32).reshape(1, 1, 5)
  _, aux = discriminative_loss(x, y, **LOSS_PRESETS["tf_metric_loss"])
  np.testing.assert_allclose(aux["distance"], 0.0625, rtol=1e-6)
  np.testing.assert_allclose(aux["variance"], 0.0, atol=1e-7)
  # Centroids farther apart than the margin are not penalised.
  x[0, 0, 2:4] = 0.3
  _, aux = discriminative_loss(x, y, **LOSS_PRESETS["tf_metric_loss"])
  np.testing.assert_allclose(aux["distance"], 0.0, atol=1e-7)


def test_jit_matches_eager():
  fn = jax.jit(lambda x, y: discriminative_loss(x, y, max_instances=M))
  for labels in (SMALL, LARGE):
    eager, eager_aux = discriminative_loss(X, labels, max_instances=M)
    jitted, jit_aux = fn(X, labels)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)
    np.testing.assert_array_equal(eager_aux["num_instances"], jit_aux["num_instances"])
    np.testing.assert_array_equal(jit_aux["num_instances"], [0, 1, 4, 3, M, 3, M])


@pytest.mark.parametrize(
    "options",
    [
        {},
        dict(
            LOSS_PRESETS["tf_metric_loss"],
            push_error="absolute",
            normalization="pixel",
            background_as_instance=True,
            semantic_labels=SEM[[1, 2, 4, 5]],
            max_instances=2 * M,
        ),
        {
            "pull_error": "log_cosh",
            "push_error": "log_cosh",
            "regularization_error": "log_cosh",
            "normalization": "authors",
        },
    ],
    ids=["paper", "tf_metric_loss_semantic_pixel_background", "log_cosh_authors"],
)
def test_gradient_matches_finite_differences(options):
  # Image 3 (zero distances, coincident means) sits on kinks of the loss; the others do not.
  _check_gradient(X[[1, 2, 4, 5]], SMALL[[1, 2, 4, 5]], options)


def _check_gradient(x, labels, options):
  options = {"max_instances": M, **options}
  with jax.enable_x64(True):
    x = jnp.asarray(x, jnp.float64)
    # One program for the gradient and the finite differences.
    fn = jax.jit(jax.value_and_grad(lambda x: discriminative_loss(x, labels, **options)[0]))
    _, grad = fn(x)
    assert grad.dtype == jnp.float64
    rng = np.random.default_rng(4)
    for _ in range(3):
      v = jnp.asarray(rng.normal(size=x.shape))
      numeric = (fn(x + 1e-6 * v)[0] - fn(x - 1e-6 * v)[0]) / 2e-6
      np.testing.assert_allclose(jnp.vdot(grad, v), numeric, rtol=1e-6, atol=1e-8)


_DEGENERATE_OPTIONS = {
    "default": {},
    # Unit-length pull gradients at distance 0, Manhattan kinks, log-cosh regularizer.
    "absolute_no_margin": {
        "pull_error": "absolute",
        "pull_margin": 0.0,
        "push_distance": "manhattan",
        "regularization_error": "log_cosh",
    },
}


@functools.cache
def _value_and_grad(name):
  options = _DEGENERATE_OPTIONS[name]
  return jax.jit(
      jax.value_and_grad(lambda x, y: discriminative_loss(x, y, max_instances=M, **options)[0])
  )


@pytest.mark.parametrize("name", _DEGENERATE_OPTIONS)
def test_degenerate_inputs_give_finite_loss_and_gradient(name):
  # All-zero embeddings: every distance and every mean is 0. The test data adds empty images, a
  # 1-pixel instance and coincident means.
  for x in (np.zeros_like(X), X):
    loss, grad = _value_and_grad(name)(x, SMALL)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


def test_empty_batch_gives_zero_loss_and_zero_gradient():
  loss, grad = _value_and_grad("default")(X, np.zeros_like(SMALL))
  assert float(loss) == 0.0
  np.testing.assert_array_equal(grad, 0.0)


def test_pixel_passes_in_chunks_match(monkeypatch):
  # Large CPU inputs run the pixel passes in chunks; force that on the small test data.
  from instseg_jax.losses import _pixels

  monkeypatch.setattr(_pixels, "_CPU_CHUNK_BYTES", X.nbytes // 4)
  fn = jax.jit(jax.value_and_grad(lambda x, y: discriminative_loss(x, y, max_instances=M)[0]))
  assert "while" in fn.lower(X, SMALL).as_text()
  loss, grad = fn(X, SMALL)
  ref_loss, ref_grad = _value_and_grad("default")(X, SMALL)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_bfloat16_embeddings_computed_in_float32():
  fn = jax.jit(jax.value_and_grad(lambda x: discriminative_loss(x, SMALL, max_instances=M)[0]))
  loss, grad = fn(jnp.asarray(X, jnp.bfloat16))
  assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  rounded = np.asarray(jnp.asarray(X, jnp.bfloat16), np.float32)
  np.testing.assert_allclose(
      loss, reference_loss(rounded, SMALL, max_instances=M)[0].mean(), rtol=1e-5
  )


def test_too_many_instances_raise_naming_the_limit():
  with pytest.raises(ValueError, match=r"image 4 .* 6 instances, more than max_instances=5"):
    discriminative_loss(X, SMALL, max_instances=5)
  with pytest.raises(ValueError, match="max_instances=5"):
    losses.check_max_instances(LARGE, 5)
  losses.check_max_instances(SMALL, M)  # exactly M is fine


def test_under_jit_surplus_instances_are_dropped_and_counted():
  fn = jax.jit(lambda x, y: discriminative_loss(x, y, max_instances=4))
  for labels in (SMALL, LARGE):
    _, aux = fn(X, labels)
    per_image, _ = reference_loss(X, labels, max_instances=4)  # keeps the 4 smallest ids
    np.testing.assert_allclose(aux["per_image_loss"], per_image, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(aux["overflow"], [0, 0, 0, 0, 2, 0, 2])
    np.testing.assert_array_equal(aux["num_instances"], [0, 1, 4, 3, 4, 3, 4])


def test_semantic_classes_do_not_push_each_other():
  # Two instances at the same embedding: pushed apart when class-agnostic, not when they belong
  # to different classes.
  x = np.zeros((1, 1, 5, 1), np.float32)
  y = np.array([1, 1, 2, 2, 0], np.int32).reshape(1, 1, 5)
  sem = np.array([1, 1, 2, 2, 0], np.int32).reshape(1, 1, 5)
  _, agnostic = discriminative_loss(x, y)
  _, aware = discriminative_loss(x, y, semantic_labels=sem)
  assert float(agnostic["distance"]) == pytest.approx(9.0)
  assert float(aware["distance"]) == 0.0
  # The same id in two classes is two instances.
  _, aux = discriminative_loss(x, np.minimum(y, 1), semantic_labels=sem)
  np.testing.assert_array_equal(aux["num_instances"], [2])


def test_batch_sharded_over_devices_matches_single_device():
  if len(jax.devices()) < len(X):
    pytest.skip(f"needs {len(X)} devices")
  mesh = jax.sharding.Mesh(np.array(jax.devices()[: len(X)]), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  fn = _value_and_grad("default")
  loss, grad = fn(jax.device_put(X, sharding), jax.device_put(SMALL, sharding))
  ref_loss, ref_grad = fn(X, SMALL)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_bad_options_raise():
  with pytest.raises(ValueError, match="pull_error"):
    discriminative_loss(X, SMALL, max_instances=M, pull_error="cubic")
  with pytest.raises(ValueError, match="push_distance"):
    discriminative_loss(X, SMALL, max_instances=M, push_distance="l1")  # one name per value
  with pytest.raises(ValueError, match="labels"):
    discriminative_loss(X, SMALL[:, :4])


def test_semantic_loss_matches_numpy():
  rng = np.random.default_rng(6)
  logits = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 3, 4)).astype(np.int32)
  labels[0, 0, 0] = 255
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  valid = labels != 255
  picked = np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  ce = -picked[valid].mean()
  fn = jax.jit(losses.semantic_loss, static_argnames=("ignore_label", "dice_weight"))
  np.testing.assert_allclose(fn(logits, labels, ignore_label=255), ce, rtol=1e-5)
  p = np.exp(log_p) * valid[..., None]
  onehot = np.eye(3)[np.where(valid, labels, 0)] * valid[..., None]
  dice = (2 * (p * onehot).sum((0, 1, 2)) + 1) / (p.sum((0, 1, 2)) + onehot.sum((0, 1, 2)) + 1)
  np.testing.assert_allclose(
      fn(logits, labels, ignore_label=255, dice_weight=0.5), ce + 0.5 * (1 - dice.mean()), rtol=1e-5
  )


def test_counting_loss():
  # 2 / 4 = 0.5 is predicted exactly; 8 / 4 is clipped to 1; 1 / 4 against 0 gives 0.0625.
  got = losses.counting_loss(np.array([0.5, 1.0, 0.0]), np.array([2, 8, 1]), max_count=4)
  np.testing.assert_allclose(got, 0.0625 / 3, rtol=1e-6)


def _model_outputs(with_count):
  rng = np.random.default_rng(7)
  outputs = {
      "embedding": jnp.asarray(X, jnp.bfloat16),
      "semantic_logits": jnp.asarray(rng.normal(size=SMALL.shape + (2,)), jnp.float32),
  }
  if with_count:
    outputs["count"] = jnp.full((SMALL.shape[0],), 0.25)
  batch = {
      "instances": SMALL,
      "semantic": (SMALL > 0).astype(np.int32),
      "num_instances": np.array([0, 1, 4, 3, 6, 3, 6], np.int32),
  }
  return outputs, batch


@pytest.mark.parametrize("with_count", [False, True])
def test_total_loss(with_count):
  config = default.get_config()
  config.data.max_instances = M
  outputs, batch = _model_outputs(with_count)
  loss, metrics = jax.jit(lambda o, b: losses.total_loss(o, b, config))(outputs, batch)
  expected = {"loss", "variance", "distance", "regularization", "semantic"}
  assert set(metrics) == expected | ({"count"} if with_count else set())
  for value in metrics.values():
    assert value.shape == () and value.dtype == jnp.float32
  embedding = np.asarray(outputs["embedding"], np.float32)  # the bfloat16 values
  disc = reference_loss(embedding, SMALL, max_instances=M)[0].mean()
  sem = losses.semantic_loss(outputs["semantic_logits"], batch["semantic"])
  count = (
      losses.counting_loss(outputs["count"], batch["num_instances"], max_count=M)
      if with_count
      else 0.0
  )
  np.testing.assert_allclose(loss, disc + sem + count, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], loss)


def test_defaults_are_the_paper_preset_in_the_signature_and_the_config():
  params = inspect.signature(discriminative_loss).parameters
  assert {name: params[name].default for name in PAPER} == PAPER
  # "paper" names every option that shapes the loss; the rest describe the data.
  data_options = {
      "embeddings",
      "labels",
      "ignore_label",
      "semantic_labels",
      "num_classes",
      "max_instances",
      "max_label_id",
  }
  assert set(PAPER) == set(params) - data_options
  for preset in LOSS_PRESETS.values():
    assert set(preset) <= set(PAPER)
  config = default.get_config()
  assert losses.discriminative_options(config) == {
      **PAPER,
      "max_label_id": None,
      "ignore_label": config.data.ignore_label,
      "max_instances": config.data.max_instances,
  }


def test_total_loss_reads_preset_and_options():
  config = default.get_config()
  config.loss.preset = "tf_metric_loss"
  config.loss.normalization = "pixel"  # not named by the preset: the field applies
  config.loss.push_margin = 0.25  # the preset's own value: no conflict
  config.loss.max_label_id = 2000
  config.loss.class_aware = True
  config.data.num_classes = 3
  config.data.max_instances = 2 * M  # (class, id) pairs
  options = losses.discriminative_options(config)
  assert options["pull_distance"] == "manhattan" and options["normalization"] == "pixel"
  assert options["max_label_id"] == 2000
  outputs, batch = _model_outputs(False)
  batch["semantic"] = SEM
  _, metrics = losses.total_loss(outputs, batch, config)
  ref_options = dict(LOSS_PRESETS["tf_metric_loss"], normalization="pixel")
  _, terms = reference_loss(
      np.asarray(outputs["embedding"], np.float32),
      SMALL,
      max_instances=2 * M,
      semantic_labels=SEM,
      **ref_options,
  )
  np.testing.assert_allclose(
      [metrics["variance"], metrics["distance"], metrics["regularization"]], terms, rtol=1e-5
  )


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("preset", "nope", "preset"),
        ("push_margin", 0.5, "push_margin=0.5 would be ignored"),  # the preset sets 0.25
        ("delta_d", 2.0, "push_margin"),  # an earlier name
        ("ignore_label", 255, "config.data.ignore_label"),
    ],
)
def test_discriminative_options_reject_settings_they_would_ignore(field, value, match):
  config = default.get_config()
  config.loss.preset = "tf_metric_loss"
  config.loss[field] = value
  with pytest.raises(ValueError, match=match):
    losses.discriminative_options(config)
