"""Tests of the NumPy transforms: geometry that keeps image and labels aligned, colour,
intensity normalization, renumbering."""

from __future__ import annotations

import numpy as np
import pytest

from instseg_jax.data import transforms


def _coordinate_example(height: int, width: int) -> transforms.Example:
  """Each pixel is its own instance; the image holds its centre coordinates."""
  y, x = np.mgrid[0:height, 0:width]
  image = np.stack([(y + 0.5) / height, (x + 0.5) / width, np.zeros_like(y, float)], -1)
  return {
      "image": image.astype(np.float32),
      "instances": (y * width + x + 1).astype(np.int32),
      "semantic": (1 + (y + x) % 2).astype(np.int32),
  }


def _assert_aligned(out, *, source_shape, tolerance=0.5, margin=3):
  """The image's coordinates fall inside the pixel the labels point to.

  One resampling puts the label's source pixel within 0.5 pixel of the exact
  (bilinear) coordinate; each further nearest-neighbour resampling adds half
  an intermediate pixel, which `tolerance` allows for.
  """
  height, width = source_shape
  instances, image = out["instances"], out["image"]
  valid = instances > 0
  label_y, label_x = np.divmod(instances - 1, width)
  np.testing.assert_array_equal(out["semantic"], np.where(valid, 1 + (label_y + label_x) % 2, 0))
  # Interpolation is only exact away from the fill and the source border.
  inner = np.pad(valid, margin)
  for dy in range(-margin, margin + 1):
    for dx in range(-margin, margin + 1):
      inner[margin:-margin, margin:-margin] &= np.roll(
          np.pad(valid, margin), (dy, dx), axis=(0, 1)
      )[margin:-margin, margin:-margin]
  check = inner[margin:-margin, margin:-margin]
  check &= (label_y >= margin) & (label_y < height - margin)
  check &= (label_x >= margin) & (label_x < width - margin)
  assert check.mean() > 0.25
  src_y = image[..., 0] * height - 0.5
  src_x = image[..., 1] * width - 0.5
  assert np.abs(src_y - label_y)[check].max() <= tolerance + 1e-3
  assert np.abs(src_x - label_x)[check].max() <= tolerance + 1e-3


@pytest.mark.parametrize(
    "name,fn,tolerance",
    [
        ("flip", lambda e, r: transforms.random_flip(e, r), 0.5),
        ("rot90", lambda e, r: transforms.random_rot90(e, r), 0.5),
        ("rotate", lambda e, r: transforms.random_rotate(e, r, max_degrees=20), 0.5),
        ("resize", lambda e, r: transforms.resize(e, size=(24, 36)), 0.5),
        (
            "scale_crop",
            lambda e, r: transforms.random_scale_crop(e, r, size=(32, 32), scale_range=(0.7, 1.5)),
            0.5,
        ),
        ("pad", lambda e, r: transforms.crop_or_pad(e, top=0, left=0, height=48, width=64), 0.5),
        ("fit", lambda e, r: transforms.fixed_window(e, size=(32, 32), mode="fit"), 0.5),
        ("native", lambda e, r: transforms.fixed_window(e, size=(32, 32), mode="native"), 0.5),
        # Zoomed in only, so enough of the image stays in the frame.
        (
            "scale_crop_fit",
            lambda e, r: transforms.random_scale_crop(
                e, r, size=(32, 32), mode="fit", scale_range=(1.0, 1.5)
            ),
            0.5,
        ),
        (
            "scale_crop_native",
            lambda e, r: transforms.random_scale_crop(e, r, size=(24, 24), mode="native"),
            0.5,
        ),
        (
            "scale_crop_foreground",
            lambda e, r: transforms.random_scale_crop(
                e, r, size=(24, 24), mode="native", foreground_crop=1.0
            ),
            0.5,
        ),
        # Same shape and no zoom: scale-crop is the identity, rotation exact.
        (
            "augment_same_size",
            lambda e, r: transforms.augment(
                e, r, size=(40, 56), scale_range=(1.0, 1.0), brightness=0.0, contrast=0.0
            ),
            0.5,
        ),
        # The rotation resamples the scale-crop's output, whose pixels are up
        # to 56 / 32 / 0.75 source pixels wide.
        (
            "augment",
            lambda e, r: transforms.augment(e, r, size=(32, 32), brightness=0.0, contrast=0.0),
            0.5 + 0.5 * 56 / 32 / 0.75,
        ),
    ],
)
def test_transforms_keep_image_and_labels_aligned(name, fn, tolerance):
  del name
  source = _coordinate_example(40, 56)
  for seed in range(6):
    out = fn(source, np.random.default_rng(seed))
    assert out["image"].shape[:2] == out["instances"].shape
    assert out["instances"].shape == out["semantic"].shape
    assert out["image"].dtype == np.float32
    assert out["instances"].dtype == np.int32
    _assert_aligned(out, source_shape=(40, 56), tolerance=tolerance)


def test_foreground_crops_centre_windows_on_instances():
  instances = np.zeros((200, 300), np.int32)
  instances[150:160, 250:260] = 1  # one small object far from the centre
  example = {
      "image": np.zeros((200, 300, 3), np.float32),
      "instances": instances,
      "semantic": (instances > 0).astype(np.int32),
  }

  def hits(probability):
    return sum(
        transforms.random_scale_crop(
            example,
            np.random.default_rng(seed),
            size=(32, 32),
            mode="native",
            scale_range=(1.0, 1.0),
            foreground_crop=probability,
        )["instances"].any()
        for seed in range(50)
    )

  assert hits(1.0) == 50
  assert hits(0.0) < 10
  # Off, it draws no number: the random stream of older configs is unchanged.
  rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
  transforms.random_scale_crop(example, rng_a, size=(32, 32), mode="native")
  transforms.random_scale_crop(example, rng_b, size=(32, 32), mode="native", foreground_crop=0.0)
  assert rng_a.random() == rng_b.random()


def test_color_jitter_changes_only_the_image():
  source = _coordinate_example(16, 16)
  out = transforms.color_jitter(source, np.random.default_rng(0))
  assert out["image"].min() >= 0.0 and out["image"].max() <= 1.0
  assert not np.allclose(out["image"], source["image"])
  np.testing.assert_array_equal(out["instances"], source["instances"])


def test_renumber_instances_keeps_the_ignore_label():
  labels = np.array([[0, 7, 7], [3, 0, 42]])
  relabelled, count = transforms.renumber_instances(labels)
  np.testing.assert_array_equal(relabelled, [[0, 2, 2], [1, 0, 3]])
  assert count == 3
  # The ignore label (negative) is kept; huge ids take the sorting path.
  labels = np.array([[-1, 9, 0], [2**30, -1, 9]])
  relabelled, count = transforms.renumber_instances(labels)
  np.testing.assert_array_equal(relabelled, [[-1, 1, 0], [2, -1, 1]])
  assert count == 2


def test_base_window_and_fixed_window_shapes():
  assert transforms.base_window((100, 50), (32, 32), "stretch") == (100, 50)
  assert transforms.base_window((100, 50), (32, 32), "fit") == (100, 100)
  assert transforms.base_window((100, 50), (32, 64), "native") == (32, 64)
  with pytest.raises(ValueError, match="sideways"):
    transforms.base_window((10, 10), (8, 8), "sideways")
  example = _coordinate_example(20, 10)
  fit = transforms.fixed_window(example, size=(8, 8), mode="fit", label_fill=-1)
  # 20x10 fits as 8x4 in the top-left corner; the rest is filled.
  assert (fit["instances"][:, 4:] == -1).all()
  assert (fit["instances"][:, :4] > 0).all()
  native = transforms.fixed_window(example, size=(8, 16), mode="native")
  # The central 8 rows, padded by 3 columns on each side.
  assert (native["instances"][:, :3] == 0).all()
  np.testing.assert_array_equal(native["instances"][:, 3:13], example["instances"][6:14])


def test_uint8_images_resize_like_float_ones():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
  labels = np.zeros((30, 40), np.int32)
  as_uint8 = transforms.resize({"image": image, "instances": labels}, size=(17, 23))
  as_float = transforms.resize(
      {"image": image / np.float32(255), "instances": labels}, size=(17, 23)
  )
  assert as_uint8["image"].dtype == np.float32
  np.testing.assert_allclose(as_uint8["image"], as_float["image"], atol=1e-2)


def test_saturation_jitter_keeps_grey_grey():
  grey = {"image": np.full((4, 4, 3), 0.5, np.float32)}
  colour = {"image": np.stack([np.full((4, 4), v, np.float32) for v in (0.2, 0.5, 0.8)], -1)}
  rng = np.random.default_rng(3)
  out = transforms.color_jitter(grey, rng, brightness=0.0, contrast=0.0, saturation=0.5)
  np.testing.assert_allclose(out["image"], 0.5, atol=1e-6)
  out = transforms.color_jitter(colour, rng, brightness=0.0, contrast=0.0, saturation=0.5)
  spread = np.ptp(out["image"], axis=-1)
  assert not np.allclose(spread, 0.6) and np.allclose(out["image"].mean(-1), 0.5, atol=1e-6)


def test_gamma_jitter_changes_dim_to_bright_ratio_keeping_black_and_white():
  levels = np.array([0.0, 0.1, 0.5, 1.0], np.float32)
  image = {"image": np.broadcast_to(levels[:, None, None], (4, 2, 3)).copy()}
  ratios = []
  for seed in range(20):
    out = transforms.color_jitter(
        image, np.random.default_rng(seed), brightness=0.0, contrast=0.0, gamma=0.5
    )["image"][:, 0, 0]
    np.testing.assert_allclose(out[[0, 3]], [0.0, 1.0], atol=1e-6)
    exponent = np.log(out[2]) / np.log(0.5)  # the drawn gamma, read back from mid grey
    assert np.exp(-0.5) - 1e-5 <= exponent <= np.exp(0.5) + 1e-5
    np.testing.assert_allclose(out[1], 0.1**exponent, rtol=1e-5)  # one gamma for the image
    ratios.append(out[1] / out[2])
  assert min(ratios) < 0.2 * 0.9 and max(ratios) > 0.2 * 1.1  # both ways around 0.1 / 0.5


def test_gamma_jitter_off_draws_no_number():
  image = {"image": np.full((4, 4, 3), 0.3, np.float32)}
  rng_off, rng_before = np.random.default_rng(5), np.random.default_rng(5)
  transforms.color_jitter(image, rng_off, gamma=0.0)
  rng_before.uniform(size=2)  # brightness and contrast only
  assert rng_off.uniform() == rng_before.uniform()


def test_nuclei_normalization_makes_stained_and_fluorescent_images_alike():
  rng = np.random.default_rng(0)
  nuclei = np.zeros((40, 40), bool)
  nuclei[5:15, 5:15] = nuclei[25:35, 20:30] = True
  # Dim fluorescence: bright-ish nuclei on black; stain: dark purple nuclei on pink-white.
  fluorescent = np.where(nuclei, 40, 3)[..., None] * np.ones(3, int)
  stained = np.where(nuclei[..., None], [90, 40, 120], [240, 200, 220])
  outputs = []
  for image in (fluorescent, stained):
    image = np.clip(image + rng.integers(0, 3, image.shape), 0, 255).astype(np.uint8)
    out = transforms.normalize_intensity(image, "nuclei")
    assert out.dtype == np.float32 and out.shape == (40, 40, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])  # grey
    outputs.append(out[..., 0])
  for out in outputs:
    assert out[nuclei].mean() > 0.9 and out[~nuclei].mean() < 0.1


def test_nuclei_local_normalization_brightens_dim_nuclei_far_from_bright_ones():
  rng = np.random.default_rng(0)
  bright = np.zeros((200, 200), bool)
  dim = np.zeros_like(bright)
  bright[20:32, 20:32] = bright[20:32, 50:62] = True
  dim[160:172, 160:172] = True
  image = np.where(bright, 200, np.where(dim, 40, 5)) + rng.integers(0, 3, bright.shape)
  image = np.repeat(image[..., None], 3, axis=-1).astype(np.uint8)
  out = transforms.normalize_intensity(image, "nuclei_local")
  assert out.dtype == np.float32 and out.shape == (200, 200, 3)
  np.testing.assert_array_equal(
      out[..., 0], transforms.normalize_intensity(image, "nuclei")[..., 0]
  )
  assert out[..., 0][dim].mean() < 0.25  # the global stretch leaves it dim
  assert out[..., 1][dim].mean() > 0.6 and out[..., 1][bright].mean() > 0.9
  background = ~(bright | dim)
  assert out[..., 1][background].mean() < 0.1  # empty background is not blown up
  np.testing.assert_array_equal(out[..., 2], 0.0)  # grey: no stain channel


def test_nuclei_local_normalization_marks_the_stain_hue_of_coloured_images():
  nuclei = np.zeros((40, 40), bool)
  nuclei[5:15, 5:15] = nuclei[25:35, 20:30] = True
  # Hematoxylin's blue-purple nuclei on eosin's pink.
  stained = np.where(nuclei[..., None], [90, 40, 120], [240, 180, 200]).astype(np.uint8)
  hue = transforms.normalize_intensity(stained, "nuclei_local")[..., 2]
  assert hue[nuclei].mean() > 0.9 and hue[~nuclei].mean() < 0.1


def test_image_kind_tells_fluorescence_stain_and_brightfield_apart():
  nuclei = np.zeros((40, 40), bool)
  nuclei[5:15, 5:15] = nuclei[25:35, 20:30] = True
  grey = np.ones(3, int)
  images = {
      "fluorescence": np.where(nuclei, 40, 3)[..., None] * grey,
      "brightfield": np.where(nuclei, 90, 200)[..., None] * grey,
      "stained": np.where(nuclei[..., None], [90, 40, 120], [240, 180, 200]),
  }
  for kind, image in images.items():
    assert transforms.image_kind(image.astype(np.uint8)) == kind
  assert set(images) == set(transforms.IMAGE_KINDS)


def test_percentile_normalization_stretches_each_channel_and_none_keeps_the_image():
  image = (
      np.stack(
          [np.linspace(0.2, 0.4, 400), np.linspace(0.5, 0.6, 400), np.linspace(0.0, 1.0, 400)], -1
      )
      .reshape(20, 20, 3)
      .astype(np.float32)
  )
  out = transforms.normalize_intensity(image, "percentile")
  np.testing.assert_allclose(out.min(axis=(0, 1)), 0.0, atol=1e-6)
  np.testing.assert_allclose(out.max(axis=(0, 1)), 1.0, atol=1e-6)
  np.testing.assert_array_equal(transforms.normalize_intensity(image, "none"), image)
  with pytest.raises(ValueError, match="choose one of"):
    transforms.normalize_intensity(image, "zscore")
