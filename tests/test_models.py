"""Models of the experiments: ResNet-56 (option A) parameter count and shortcuts, autoencoders, MLP."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import models


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _shapes(model, x):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))


def resnet_cifar_params(n: int, num_classes: int = 10) -> int:
  """Trainable parameters of the option-A CIFAR ResNet with n blocks per stage, counted by hand.

  stem conv 3*3*3*16 + BN(16) scale/bias; a block with c_in -> c: 9*c_in*c + 9*c*c + 2 BN (4c);
  head 64*num_classes + num_classes. Shortcuts have no parameters (option A).
  """
  total = 9 * 3 * 16 + 2 * 16
  c_in = 16
  for c in (16, 32, 64):
    for _ in range(n):
      total += 9 * c_in * c + 9 * c * c + 4 * c
      c_in = c
  return total + 64 * num_classes + num_classes


def test_resnet56_has_853018_parameters_without_compiling():
  variables = _shapes(models.CifarResNet(depth=56), jnp.zeros((1, 32, 32, 3)))
  # 853,018 is the count of the reference option-A ResNet-56 (He et al. 2016: "0.85M").
  assert _count(variables["params"]) == 853_018 == resnet_cifar_params(9)
  # BatchNorm running mean and variance of 1 + 2 * 27 layers' channels (16 + 18*16 + 18*32 + 18*64).
  assert _count(variables["batch_stats"]) == 2 * 2032


@pytest.mark.parametrize("depth,expected", [(8, 75_290), (20, 269_722), (32, 464_154), (110, 1_727_962)])
def test_resnet_depths_match_hand_count(depth, expected):
  variables = _shapes(models.CifarResNet(depth=depth), jnp.zeros((1, 32, 32, 3)))
  assert _count(variables["params"]) == expected == resnet_cifar_params((depth - 2) // 6)


def test_resnet56_layout_three_stages_of_nine_blocks():
  params = _shapes(models.CifarResNet(depth=56), jnp.zeros((1, 32, 32, 3)))["params"]
  blocks = [k for k in params if k.startswith("stage")]
  assert len(blocks) == 27
  assert params["stage2_block1"]["Conv_0"]["kernel"].shape == (3, 3, 16, 32)
  assert params["stage3_block9"]["Conv_1"]["kernel"].shape == (3, 3, 64, 64)
  assert params["Dense_0"]["kernel"].shape == (64, 10)
  assert "bias" not in params["Conv_0"]  # convs are bias-free (BatchNorm follows)


@pytest.mark.parametrize("depth", [7, 9, 0, 56.0, True])
def test_resnet_rejects_depths_not_6n_plus_2(depth):
  with pytest.raises(ValueError, match="6n \\+ 2"):
    models.blocks_per_stage(depth)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
  x = jnp.arange(1 * 4 * 4 * 16, dtype=jnp.float32).reshape(1, 4, 4, 16)
  y = models.option_a_shortcut(x, 32, 2)
  assert y.shape == (1, 2, 2, 32)
  np.testing.assert_array_equal(y[..., :8], 0.0)
  np.testing.assert_array_equal(y[..., 24:], 0.0)
  np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
  np.testing.assert_array_equal(models.option_a_shortcut(x, 16, 1), x)  # identity when shapes agree


def test_resnet8_forward_shapes_and_batch_stats_update():
  model = models.CifarResNet(depth=8, num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(x)
  logits, new_state = jax.jit(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  assert logits.shape == (2, 10)
  old_mean = variables["batch_stats"]["BatchNorm_0"]["mean"]
  new_mean = new_state["batch_stats"]["BatchNorm_0"]["mean"]
  np.testing.assert_array_equal(old_mean, 0.0)
  assert float(jnp.max(jnp.abs(new_mean))) > 0  # momentum 0.9: 0.1 * batch mean


@pytest.mark.parametrize("dataset,dim,expected", [
    ("mnist", 784, 2_837_314), ("curves", 784, 842_340), ("faces", 625, 7_537_655)])
def test_paper_autoencoders_parameter_counts(dataset, dim, expected):
  widths = models.ARCHITECTURES[dataset]
  sizes = (dim, *widths, *reversed(widths[:-1]), dim)
  assert expected == sum((m + 1) * n for m, n in zip(sizes[:-1], sizes[1:]))
  params = _shapes(models.DeepAutoencoder(widths, dim), jnp.zeros((1, dim)))["params"]
  assert _count(params) == expected
  assert params["code"]["kernel"].shape == (widths[-2], widths[-1])


def test_autoencoder_logistic_units_and_linear_code_layer():
  model = models.DeepAutoencoder((3, 2), 4, kernel_init="glorot")
  x = jax.random.uniform(jax.random.PRNGKey(1), (5, 4))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  params = jax.tree.map(lambda p: p + 0.3, params)  # non-zero biases too
  p = flax.core.unfreeze(params)
  sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
  dense = lambda h, name: np.asarray(h) @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"])  # noqa: E731
  h = sig(dense(x, "encoder_0"))
  code = dense(h, "code")  # linear
  h = sig(dense(code, "decoder_0"))
  expected = dense(h, "output")  # logits
  np.testing.assert_allclose(model.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)


def test_sparse_init_has_15_nonzero_incoming_weights_per_unit():
  w = models.sparse_init(15)(jax.random.PRNGKey(0), (100, 40))
  np.testing.assert_array_equal(np.count_nonzero(np.asarray(w), axis=0), 15)
  small = models.sparse_init(15)(jax.random.PRNGKey(0), (6, 4))
  assert np.count_nonzero(np.asarray(small)) == 24  # fan-in below 15: all connected
  with pytest.raises(ValueError, match="dense kernel"):
    models.sparse_init(15)(jax.random.PRNGKey(0), (3, 3, 2))


def test_autoencoder_rejects_bad_widths_and_init():
  with pytest.raises(ValueError, match="encoder_widths"):
    models.DeepAutoencoder((), 4).init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match="kernel_init"):
    models.DeepAutoencoder((2,), 4, kernel_init="zeros").init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))


def test_mlp_shapes():
  params = _shapes(models.MLP((64, 64), 10), jnp.zeros((1, 64)))["params"]
  assert _count(params) == 65 * 64 + 65 * 64 + 65 * 10
