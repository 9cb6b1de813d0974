"""The character transformer and its task: size, causality, loss, and nn.scan == unstacked.

The scanned model must be the unstacked one with its blocks' parameters stacked: the same
logits, the same MBAG blocks (declared layer axis, no grouping warning) and the same training
path under MBAG and AdamW, to float32 rounding.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import mbag
from experiments import errors
from experiments import optimizers
from experiments import tasks
from experiments import train
from experiments.configs import shakespeare as shakespeare_config
from experiments.models import transformer

VOCAB, CONTEXT, LAYERS = 11, 8, 2
TINY = dict(vocab_size=VOCAB, context=CONTEXT, d_model=32, num_heads=2, num_layers=LAYERS)


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def transformer_params(vocab, context, d, layers, ratio=4):
  """Counted by hand: embeddings; per block 2 LayerNorms, q/k/v/out kernels and biases, the
  MLP; the final LayerNorm and the untied head."""
  block = 2 * 2 * d + 4 * (d * d + d) + (d * ratio * d + ratio * d) + (ratio * d * d + d)
  return vocab * d + context * d + layers * block + 2 * d + d * vocab + vocab


def tokens(batch, length, seed=0):
  return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, VOCAB)


def test_reference_size_has_424781_parameters():
  model = transformer.CharTransformer(vocab_size=77, context=64)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64), jnp.int32)))
  assert count(shapes["params"]) == 424_781 == transformer_params(77, 64, 128, 2)
  c = shakespeare_config.get_config("reference").model
  assert (c.d_model, c.num_heads, c.num_layers, c.mlp_ratio) == (128, 4, 2, 4)
  assert shapes["params"]["position_embed"]["embedding"].shape == (64, 128)  # leaf "embedding"


def test_a_position_sees_only_the_tokens_before_it():
  model = transformer.CharTransformer(**TINY)
  x = tokens(2, CONTEXT)
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  changed = x.at[:, 5].set((x[:, 5] + 1) % VOCAB)
  a, b = model.apply({"params": params}, x), model.apply({"params": params}, changed)
  np.testing.assert_array_equal(a[:, :5], b[:, :5])
  assert float(jnp.abs(a[:, 5:] - b[:, 5:]).min(axis=-1).max()) > 0
  with pytest.raises(ValueError, match="longer than the model's context 8"):
    model.apply({"params": params}, tokens(1, CONTEXT + 1))


def test_char_lm_loss_is_the_mean_next_token_cross_entropy_in_nats_and_bits():
  task = tasks.get_task("char_lm")
  rows = np.asarray(tokens(3, CONTEXT + 1, seed=1))
  inputs, targets = task.train_inputs(None, rows), task.targets(rows, rows)
  np.testing.assert_array_equal(inputs, rows[:, :-1])
  np.testing.assert_array_equal(targets, rows[:, 1:])
  np.testing.assert_array_equal(task.eval_inputs(rows), rows[:, :-1])
  logits = np.random.default_rng(2).standard_normal((3, CONTEXT, VOCAB))
  loss, metrics = task.loss(jnp.asarray(logits), jnp.asarray(targets))
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0].mean(-1)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_char"], want / math.log(2), rtol=1e-5)


def test_kfac_is_refused_on_the_language_model_with_the_reason():
  for name in ("kfac", "kfac_paper"):
    config = shakespeare_config.get_config("smoke")
    config.optimizer = name
    with pytest.raises(errors.ConfigError, match=f"optimizer='{name}' does not run on task "
                                                 "'char_lm': kfac-jax cannot"):
      train.resolve_config(config)


# ------------------------------------------------------------------- nn.scan == unstacked


@pytest.fixture(scope="module", name="pair")
def unstacked_and_scanned():
  model = transformer.CharTransformer(**TINY)
  scanned = transformer.CharTransformer(**TINY, scan=True)
  params = model.init(jax.random.PRNGKey(0), tokens(1, CONTEXT))["params"]
  return model, scanned, params


def test_scanned_model_is_the_unstacked_one_with_stacked_parameters(pair):
  model, scanned, params = pair
  stacked = transformer.stack_blocks(params, LAYERS)
  init_shapes = jax.eval_shape(lambda: scanned.init(jax.random.PRNGKey(0), tokens(1, CONTEXT)))
  assert jax.tree.map(np.shape, stacked) == jax.tree.map(lambda s: s.shape, init_shapes["params"])
  x = tokens(4, CONTEXT, seed=3)
  a = model.apply({"params": params}, x)
  b = scanned.apply({"params": stacked}, x)
  np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.abs(a).max()))
  back = transformer.unstack_blocks(stacked, LAYERS)
  assert jax.tree.all(jax.tree.map(np.array_equal, back, params))


def blocks_of(tree, dims):
  """Every block MBAG (tau = 32) cuts ``tree`` into, as a sorted list of tuples of its values."""
  layout = mbag.make_layout(tree, 32, dims)
  out = []
  for bucket in mbag.tree_to_buckets(tree, layout):
    out += [tuple(float(v) for v in row if v != 0) for row in np.asarray(bucket)]
  return sorted(out)


def test_scanned_leaves_are_declared_and_cut_into_the_unstacked_blocks(pair):
  _, _, params = pair
  # Distinct values everywhere, so that equal blocks mean the same entries in the same order.
  n = count(params)
  leaves, treedef = jax.tree.flatten(params)
  sizes = np.cumsum([0] + [x.size for x in leaves])
  numbered = jax.tree.unflatten(treedef, [
      jnp.arange(1 + sizes[i], 1 + sizes[i + 1], dtype=jnp.float32).reshape(x.shape)
      for i, x in enumerate(leaves)])
  assert sizes[-1] == n < 2 ** 24  # exact in float32
  stacked = transformer.stack_blocks(numbered, LAYERS)
  dims = transformer.dimension_numbers(scan=True)
  assert blocks_of(stacked, dims) == blocks_of(numbered, None)
  with warnings.catch_warnings():
    warnings.simplefilter("error", mbag.MBAGGroupingWarning)
    mbag.mbag(1e-3, dimension_numbers=dims).init(stacked)
  report = mbag.describe(stacked, mbag.mbag(1e-3, dimension_numbers=dims))
  flat = mbag.describe(numbered, mbag.mbag(1e-3))
  assert not any(r.guessed for r in report.rows + flat.rows)
  assert sum(r.num_blocks for r in report.rows) == sum(r.num_blocks for r in flat.rows)
  rules = {r.path: r.rule for r in report.rows}
  assert rules["blocks/attn/query/kernel"] == "stacked attention"
  assert rules["blocks/mlp_in/kernel"] == "stacked dense"
  assert rules["blocks/ln_attn/scale"] == "stacked vector"


def train_steps(model, params, name, steps):
  """``steps`` steps of optimizer ``name`` through the registry, as the training loop runs it
  (the smoke preset's hyperparameters; roots every 2 steps; the task's dimension numbers)."""
  config = shakespeare_config.get_config("smoke")
  config.optimizer = name
  config.model.scan = model.scan
  config.optimizer_config.mbag.root_interval = 2
  config = train.resolve_config(config)
  task = tasks.get_task("char_lm")
  loss_fn = tasks.make_loss_fn(task, model)
  schedule = optax.linear_schedule(1e-3, 3e-3, steps)
  opt = optimizers.build_optimizer(config, loss_fn, schedule,
                                   dimension_numbers=task.dimension_numbers(config))
  params = jax.tree.map(jnp.array, params)
  state = opt.init(params, {}, jax.random.PRNGKey(1), None)
  losses = []
  for i in range(steps):
    rows = tokens(8, CONTEXT + 1, seed=10 + i)
    batch = {"inputs": task.train_inputs(None, rows), "targets": task.targets(rows, rows)}
    params, _, state, stats = opt.step(params, {}, state, jax.random.PRNGKey(i), batch)
    losses.append(float(stats["loss"]))
  return params, losses


@pytest.mark.parametrize("name", ["mbag", "adamw"])
def test_scanned_and_unstacked_models_train_along_the_same_path(pair, name):
  model, scanned, params = pair
  with warnings.catch_warnings():
    warnings.simplefilter("error", mbag.MBAGGroupingWarning)
    got, got_losses = train_steps(scanned, transformer.stack_blocks(params, LAYERS), name, 5)
  want, want_losses = train_steps(model, params, name, 5)
  np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(want),
                                                          jax.tree.leaves(params)))
  assert moved > 1e-3  # the steps changed the parameters
  # float32 rounding: 5 steps of at most ~lr per entry, each from sums over ~1e2 terms.
  for path, a in jax.tree_util.tree_leaves_with_path(transformer.unstack_blocks(got, LAYERS)):
    where = jax.tree_util.keystr(path)
    if name == "adamw" and "['key']['bias']" in where:
      continue  # its gradient is 0 up to rounding (below), which Adam scales up to ~lr
    b = dict(jax.tree_util.tree_leaves_with_path(want))[path]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=where)


def test_the_key_bias_has_no_gradient(pair):
  """Adding b to every key adds q.b to every score of a query: the softmax does not change, so
  the loss does not depend on the key bias (Adam's step on it is rounding noise scaled to lr)."""
  model, _, params = pair
  task = tasks.get_task("char_lm")
  rows = tokens(8, CONTEXT + 1, seed=4)
  loss_fn = tasks.make_loss_fn(task, model)
  grads = jax.grad(lambda p: loss_fn(p, {}, None, {"inputs": rows[:, :-1],
                                                   "targets": rows[:, 1:]})[0])(params)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads))
  for i in range(LAYERS):
    assert float(jnp.abs(grads[f"block_{i}"]["attn"]["key"]["bias"]).max()) < 1e-5 * scale
    assert float(jnp.abs(grads[f"block_{i}"]["attn"]["query"]["bias"]).max()) > 1e-3 * scale
