"""Models: output contract, shapes, parameter counts, gradients under jit, recurrent sweeps,
pretrained torch weights, and every model through the real trainer."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default, tiny
import helpers
from instseg_jax import models
from instseg_jax import state as state_lib
from instseg_jax import train
from instseg_jax.models import layers
from instseg_jax.models import renet
from instseg_jax.models import resnet
from instseg_jax.models import vgg


def _random_params(model, images, seed=1):
  """Parameters of the model's shapes, drawn with NumPy.

  jax.random initialisers take seconds to compile on CPU per model, and these
  tests only need some finite weights.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), shapes
  )


def _forward(config, shape=(2, 64, 64, 3)):
  model = models.create_model(config)
  images = jax.random.uniform(jax.random.key(0), shape)
  return model, _random_params(model, images), images


def _config(get_config, name, **model_overrides):
  config = get_config()
  config.model.name = name
  for key, value in model_overrides.items():
    config.model[key] = value
  return config


def test_unet_outputs_named_maps_at_input_resolution():
  config = default.get_config()
  model, params, images = _forward(config)
  outputs = jax.jit(model.apply)({"params": params}, images)
  assert set(outputs) == {"embedding", "semantic_logits"}
  assert outputs["embedding"].shape == (2, 64, 64, config.model.embedding_dim)
  assert outputs["semantic_logits"].shape == (2, 64, 64, config.data.num_classes)
  assert outputs["embedding"].dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_with_every_option_runs_forward_and_backward_under_jit(name):
  config = _config(
      tiny.get_config,
      name,
      counter=True,
      coord_conv=True,
      position_encoding="sine",
      context_features=4,
      seed_head=True,
  )
  model, params, images = _forward(config)
  assert images.shape[1] % model.stride == 0

  def loss(p):
    out = model.apply({"params": p}, images)
    return (
        jnp.mean(out["embedding"] ** 2)
        + jnp.mean(out["semantic_logits"])
        + jnp.mean(out["count"])
        + jnp.mean(out["seed_logits"]),
        out,
    )

  (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert out["embedding"].shape == (2, 64, 64, config.model.embedding_dim)
  assert out["semantic_logits"].shape == (2, 64, 64, config.data.num_classes)
  assert out["count"].shape == (2,)
  assert out["seed_logits"].shape == (2, 64, 64)
  assert all(o.dtype == jnp.float32 for o in out.values())
  assert bool(jnp.all((out["count"] >= 0) & (out["count"] <= 1)))
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert sum(bool(jnp.any(g != 0)) for g in leaves) > 0.9 * len(leaves)


# unet tiny, by hand: down_0 216+16+576+16, down_1 1152+32+2304+32,
# upsample_0 16*8*4+8, up_0 1152+16+576+16, heads 8*4+4 + 8*2+2 = 6678.
# reseg tiny: encoder 3*3*3*8+8 + 3*3*8*8+8 = 808; each ReNet sweep is an input
# Dense (C, 2*4*16) + 128 and a recurrent kernel (2, 16, 64) + (2, 64): the rows
# of renet_0 (C=8) 1024+128+2048+128 = 3328, its columns and both sweeps of
# renet_1 (C=32) 4096+128+2048+128 = 6400 each; upsample_0 2*2*32*8+8 = 1032,
# up_0 3*3*16*8+16 = 1168, heads 54: 808 + 3328 + 3*6400 + 1032 + 1168 + 54 = 25590.
PINNED = {
    ("tiny", "unet"): 6678,
    ("tiny", "unet_cbam"): 7074,
    ("tiny", "reseg"): 25590,
    ("tiny", "segnet"): 6158,
    ("tiny", "deeplabv3"): 23246,
    ("default", "unet"): 482890,
    ("default", "unet_cbam"): 487349,
    ("default", "reseg"): 1666506,
    ("default", "segnet"): 661466,
    ("default", "deeplabv3"): 1409690,
}


@pytest.mark.parametrize("config_name, name", sorted(PINNED))
def test_parameter_counts_are_pinned(config_name, name):
  config = _config({"tiny": tiny, "default": default}[config_name].get_config, name)
  model = models.create_model(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 64, 64, 3)))
  assert state_lib.parameter_count(shapes["params"]) == PINNED[config_name, name]


@pytest.mark.parametrize("name", ["unet", "reseg"])
def test_bfloat16_compute_keeps_float32_params_and_outputs(name):
  config = _config(tiny.get_config, name, dtype="bfloat16", counter=True)
  model, params, images = _forward(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(shapes))
  outputs = jax.jit(model.apply)({"params": params}, images)
  assert all(o.dtype == jnp.float32 for o in outputs.values())
  reference = _config(tiny.get_config, name, counter=True)
  expected = jax.jit(models.create_model(reference).apply)({"params": params}, images)
  np.testing.assert_allclose(outputs["embedding"], expected["embedding"], rtol=0.1, atol=0.1)


def test_unknown_model_name_lists_the_choices():
  config = tiny.get_config()
  config.model.name = "resnet9000"
  with pytest.raises(ValueError, match="unet"):
    models.create_model(config)


@pytest.mark.parametrize(
    "field, value", [("cell", "rnn"), ("norm", "batch"), ("position_encoding", "learned")]
)
def test_bad_model_options_are_refused_listing_the_choices(field, value):
  config = _config(tiny.get_config, "reseg", **{field: value})
  with pytest.raises(ValueError, match=f"config.model.{field}"):
    models.create_model(config)
  # The command line checks the config before any work starts, and exits 2 on this error.
  with pytest.raises(train.validate.ConfigError, match=f"config.model.{field}"):
    train.validate.validate(config, num_devices=1)


def test_a_missing_pretrained_file_is_a_config_error(tmp_path):
  config = _config(tiny.get_config, "reseg", pretrained=str(tmp_path / "missing.pth"))
  with pytest.raises(train.validate.ConfigError, match="missing.pth.: no such file"):
    train.validate.validate(config, num_devices=1)


def test_counter_off_by_default_and_options_do_not_change_the_unet():
  config = default.get_config()
  assert not config.model.counter and config.model.pretrained == ""
  model = models.create_model(config)
  assert model.stride == 8 and not model.coord_conv and model.context_features == 0


def test_upsample2x_equals_a_transposed_convolution():
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 7))
  conv = nn.ConvTranspose(4, (2, 2), strides=(2, 2))
  params = {"params": _random_params(conv, x)}
  ours = layers.Upsample2x(4).apply(params, x)
  np.testing.assert_allclose(ours, conv.apply(params, x), atol=1e-5)


def test_group_norm_equals_flax_group_norm():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (2, 5, 6, 12))
  params = {"params": {"scale": jnp.linspace(0.5, 1.5, 12), "bias": jnp.linspace(-1, 1, 12)}}
  ours = jax.jit(layers.GroupNorm(4).apply)(params, x)
  theirs = nn.GroupNorm(num_groups=4).apply(params, x)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_max_pool_with_indices_and_unpool_put_maxima_back_in_place():
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 3))
  pooled, indices = layers.max_pool_2x2_with_indices(x)
  np.testing.assert_array_equal(pooled, layers.max_pool_2x2(x))
  np.testing.assert_array_equal(pooled, nn.max_pool(x, (2, 2), strides=(2, 2)))
  restored = layers.unpool_2x2(pooled, indices)
  assert restored.shape == x.shape
  is_max = x == jnp.repeat(jnp.repeat(pooled, 2, axis=1), 2, axis=2)
  np.testing.assert_array_equal(restored, jnp.where(is_max, x, 0.0))


@pytest.mark.parametrize("kind", ["xy", "sine"])
def test_position_encodings_are_fixed_bounded_maps(kind):
  enc = layers.position_encoding(kind, 6, 10, 5)
  assert enc.shape == (6, 10, 5)
  assert float(jnp.max(jnp.abs(enc))) <= 1.0 + 1e-6
  # Pixels must be told apart by their position.
  flat = np.asarray(enc).reshape(60, 5)
  assert len(np.unique(flat.round(5), axis=0)) == 60


def test_pixel_position_encoding_is_the_same_on_a_crop_and_the_whole_image():
  whole = np.asarray(layers.position_encoding("pixels", 40, 50, 4))
  crop = np.asarray(layers.position_encoding("pixels", 20, 30, 4))
  # Up to a constant shift (which the loss and clustering ignore), as a conv is.
  np.testing.assert_allclose(whole[10:30, 15:45] - whole[10, 15], crop, atol=1e-6)
  np.testing.assert_allclose(whole[32, 0, :2], (32 / layers.PIXELS_PER_UNIT, 0.0))
  np.testing.assert_array_equal(whole[..., 2:], 0.0)


def test_config_pixels_per_unit_sets_the_scale_of_the_pixel_encoding():
  # Zero weights: the embedding is the position encoding alone.
  config = tiny.get_config()
  config.model.position_encoding = "pixels"
  embeddings = {}
  for pixels_per_unit in (32.0, 8.0):
    config.model.pixels_per_unit = pixels_per_unit
    model = models.create_model(config)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    params = jax.tree.map(jnp.zeros_like, params)
    embeddings[pixels_per_unit] = np.asarray(
        model.apply(params, jnp.zeros((1, 16, 16, 3)))["embedding"]
    )
  np.testing.assert_allclose(embeddings[32.0][0, 8, 4, :2], (8 / 32, 4 / 32), atol=1e-6)
  np.testing.assert_allclose(embeddings[8.0], 4 * embeddings[32.0], atol=1e-6)


def _loop_sweep(params, x, cell):
  """The BiSweep by hand: a Python loop over positions, same weights."""
  hidden = params["step"]["kernel"].shape[1]
  width = renet.GATES[cell] * hidden
  gates = (x @ params["input"]["kernel"] + params["input"]["bias"]).reshape(
      x.shape[0], x.shape[1], 2, width
  )
  step = renet.STEPS[cell]
  carry = renet.initial_carry(cell, x.shape[0], hidden)
  forward, backward = [None] * x.shape[1], [None] * x.shape[1]
  for t in range(x.shape[1]):
    rev = x.shape[1] - 1 - t
    x_gates = jnp.stack([gates[:, t, 0], gates[:, rev, 1]])
    carry = step(carry, x_gates, params["step"]["kernel"], params["step"]["bias"])
    forward[t], backward[rev] = carry[0][0], carry[0][1]
  return jnp.concatenate([jnp.stack(forward, 1), jnp.stack(backward, 1)], axis=-1)


@pytest.mark.parametrize("cell, remat", [("lstm", False), ("gru", False), ("lstm", True)])
def test_scan_sweep_equals_a_python_loop_with_the_same_weights(cell, remat):
  x = jax.random.normal(jax.random.key(0), (3, 7, 5))
  sweep = renet.BiSweep(6, cell=cell, remat=remat)
  params = _random_params(sweep, x)

  def with_grad(fn):
    def loss(p):
      out = fn(p)
      return jnp.sum(out**2), out

    return jax.jit(jax.grad(loss, has_aux=True))(params)

  grad, out = with_grad(lambda p: sweep.apply({"params": p}, x))
  loop_grad, loop_out = with_grad(lambda p: _loop_sweep(p, x, cell))
  assert out.shape == (3, 7, 12)
  np.testing.assert_allclose(out, loop_out, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(loop_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bidirectional_sweep_depends_on_both_ends():
  length, hidden, middle = 9, 4, 4
  x = jax.random.normal(jax.random.key(0), (1, length, 3))
  sweep = renet.BiSweep(hidden)
  params = _random_params(sweep, x)
  apply = jax.jit(lambda v: sweep.apply({"params": params}, v)[0, middle])
  base = apply(x)
  first = apply(x.at[0, 0].add(1.0)) - base
  last = apply(x.at[0, -1].add(1.0)) - base
  # The forward half at the middle has read the first position, not yet the last;
  # the backward half the other way round.
  assert float(jnp.max(jnp.abs(first[:hidden]))) > 1e-4
  assert float(jnp.max(jnp.abs(first[hidden:]))) == 0.0
  assert float(jnp.max(jnp.abs(last[hidden:]))) > 1e-4
  assert float(jnp.max(jnp.abs(last[:hidden]))) == 0.0


def test_renet_layer_pixel_sees_all_four_corners():
  x = jax.random.normal(jax.random.key(0), (1, 5, 6, 2))
  layer = renet.ReNetLayer(3)
  params = _random_params(layer, x)
  grad = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply({"params": params}, v)[0, 2, 3])))(x)
  corners = jnp.abs(grad[0, jnp.array([0, 0, -1, -1]), jnp.array([0, -1, 0, -1])]).sum(-1)
  assert bool(jnp.all(corners > 0))


def _torch_vgg16_features(torch, blocks):
  """The first `blocks` blocks of torchvision's vgg16().features, same indices, same layers."""
  layers_, channels = [], 3
  for width, convs in zip(vgg.VGG16_WIDTHS[:blocks], vgg.VGG16_CONVS):
    for _ in range(convs):
      layers_ += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU(inplace=True)]
      channels = width
    layers_.append(torch.nn.MaxPool2d(2, 2))
  return torch.nn.Sequential(*layers_)


def _saved_torch_vgg16(torch, blocks, folder):
  """(net, path): a random torch VGG-16 feature stack and its state_dict file in folder."""
  torch.manual_seed(0)
  net = torch.nn.Module()
  net.features = _torch_vgg16_features(torch, blocks)
  path = str(folder / "vgg16.pth")
  torch.save(net.state_dict(), path)
  return net, path


def test_vgg16_encoder_loaded_from_torch_gives_torch_features(tmp_path):
  torch = pytest.importorskip("torch")
  net, path = _saved_torch_vgg16(torch, 3, tmp_path)

  config = _config(tiny.get_config, "reseg", features=(64, 128, 256, 4), pretrained=path)
  model = models.create_model(config)
  images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  params = models.load_pretrained(_random_params(model, images), config)

  encoder = vgg.VGGEncoder(vgg.VGG16_WIDTHS[:3])
  ours = encoder.apply({"params": params["encoder"]}, images)
  with torch.no_grad():
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    theirs = []
    for i, layer in enumerate(net.features):
      x = layer(x)
      if i in (3, 8, 15):  # the last ReLU of each block, before its pooling
        theirs.append(x.permute(0, 2, 3, 1).numpy())
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


class _TorchBasicBlock:
  """torchvision's BasicBlock, names included, built when torch is there."""

  @staticmethod
  def make(torch, inplanes, planes, stride):
    block = torch.nn.Module()
    block.conv1 = torch.nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    block.bn1 = torch.nn.BatchNorm2d(planes)
    block.conv2 = torch.nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    block.bn2 = torch.nn.BatchNorm2d(planes)
    if stride != 1 or inplanes != planes:
      block.downsample = torch.nn.Sequential(
          torch.nn.Conv2d(inplanes, planes, 1, stride, bias=False), torch.nn.BatchNorm2d(planes)
      )
    else:
      block.downsample = None

    def forward(x):
      y = torch.relu(block.bn1(block.conv1(x)))
      y = block.bn2(block.conv2(y))
      skip = x if block.downsample is None else block.downsample(x)
      return torch.relu(y + skip)

    block.forward = forward
    return block


def test_resnet_encoder_loaded_from_torch_gives_torch_features(tmp_path):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  widths = (8, 16)
  net = torch.nn.Module()
  net.conv1 = torch.nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
  net.bn1 = torch.nn.BatchNorm2d(widths[0])
  net.layer1 = torch.nn.Sequential(*[_TorchBasicBlock.make(torch, 8, 8, 1) for _ in range(2)])
  net.layer2 = torch.nn.Sequential(
      _TorchBasicBlock.make(torch, 8, 16, 2), _TorchBasicBlock.make(torch, 16, 16, 1)
  )
  for module in net.modules():
    if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial frozen statistics
      module.running_mean.uniform_(-0.5, 0.5)
      module.running_var.uniform_(0.5, 2.0)
      module.weight.data.uniform_(0.5, 1.5)
      module.bias.data.uniform_(-0.2, 0.2)
  net.eval()
  path = str(tmp_path / "resnet.pth")
  torch.save(net.state_dict(), path)

  config = _config(tiny.get_config, "deeplabv3", features=widths, norm="affine", pretrained=path)
  model = models.create_model(config)
  images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  params = models.load_pretrained(_random_params(model, images), config)

  encoder = resnet.ResNetEncoder(widths, (2, 2), norm="affine")
  ours = encoder.apply({"params": params["encoder"]}, images)[-1]
  with torch.no_grad():
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = torch.nn.functional.max_pool2d(torch.relu(net.bn1(net.conv1(x))), 3, 2, 1)
    theirs = net.layer2(net.layer1(x)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(np.abs(theirs).max()))


def test_pretrained_weights_that_do_not_fit_are_refused_naming_the_first_mismatch(tmp_path):
  torch = pytest.importorskip("torch")
  net, path = _saved_torch_vgg16(torch, 2, tmp_path)
  config = _config(tiny.get_config, "reseg", features=(64, 96, 8), pretrained=path)
  model = models.create_model(config)
  params = _random_params(model, jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match=r"encoder/block1_conv0/kernel has shape \(3, 3, 64, 96\)"):
    models.load_pretrained(params, config)

  config.model.features = (64, 128, 256, 8)  # a third block the file does not have
  params = _random_params(models.create_model(config), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match="features.10.weight"):
    models.load_pretrained(params, config)

  not_a_state_dict = str(tmp_path / "module.pth")
  torch.save(net, not_a_state_dict)
  config.model.pretrained = not_a_state_dict
  with pytest.raises(ValueError, match="not a plain state_dict"):
    models.load_pretrained(params, config)

  config.model.name = "unet"
  with pytest.raises(ValueError, match="no pretrained encoder"):
    models.load_pretrained(params, config)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_trains_with_the_real_trainer_by_name_alone(name, data_dir, tmp_path):
  config = helpers.tiny_config(data_dir, num_steps=2)
  config.data.num_eval_images = 2
  config.model.name = name
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(summary["SBD"])
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    assert "nan" not in f.read().lower()


def test_trainer_starts_from_the_pretrained_encoder(tmp_path):
  torch = pytest.importorskip("torch")
  net, path = _saved_torch_vgg16(torch, 1, tmp_path)
  config = _config(tiny.get_config, "reseg", features=(64, 4), pretrained=path)
  model = models.create_model(config)
  state = state_lib.create_train_state(model, config, jax.random.key(0))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  loaded = train._with_pretrained_encoder(state, config, sharding)

  kernel = loaded.params["encoder"]["block0_conv1"]["kernel"]
  expected = net.features[2].weight.detach().numpy().transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(np.asarray(kernel), expected)
  np.testing.assert_array_equal(
      np.asarray(loaded.params["heads"]["embedding"]["kernel"]),
      np.asarray(state.params["heads"]["embedding"]["kernel"]),
  )
  assert int(loaded.step) == 0

  config.model.features = (32, 4)  # the file's 64 channels no longer fit
  with pytest.raises(train.validate.ConfigError, match="config.model.pretrained=.*block0_conv0"):
    train._with_pretrained_encoder(
        state_lib.create_train_state(models.create_model(config), config, jax.random.key(0)),
        config,
        sharding,
    )


def test_kmeans_clusters_with_the_count_the_counter_head_predicts(data_dir, tmp_path):
  config = helpers.tiny_config(data_dir, num_steps=2)
  config.data.num_eval_images = 2
  config.model.counter = True
  config.cluster.method = "kmeans"
  config.cluster.num_clusters = 0  # 0 = take the count from the counter head
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(summary["SBD"])

  config.model.counter = False
  with pytest.raises(train.validate.ConfigError, match="num_clusters > 0 or config.model.counter"):
    train.validate.validate(config, num_devices=1)
