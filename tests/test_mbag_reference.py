"""MBAG, MBAG-EMA and MBAG-N against plain float64 NumPy versions of the paper's algorithms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mbag
from tests import compat
from tests import reference

LAM, MOM, LR = 0.05, 0.9, 0.1


def run_jax(tx, params, grads_seq, x64=True):
  """Applies tx to a sequence of gradient pytrees; returns updates (flat numpy) and final state."""
  with compat.enable_x64(x64):
    params = jax.tree.map(jnp.asarray, params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for g in grads_seq:
      u, state = update(jax.tree.map(jnp.asarray, g), state, params)
      out.append(u)
    return out, state


def flat(u):
  return np.asarray(u, np.float64).reshape(-1)


def random_grads(shape, steps, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  # Correlated, anisotropic gradients so that off-diagonal statistics matter.
  size = int(np.prod(shape))
  mix = rng.standard_normal((size, size)) / np.sqrt(size) + np.eye(size)
  return [(mix @ rng.standard_normal(size) * scale).reshape(shape) for _ in range(steps)]


def consecutive_groups(d, b):
  return [np.arange(i, min(i + b, d)) for i in range(0, d, b)]


F64 = dict(statistics_dtype=jnp.float64)


def test_one_block_is_full_matrix_adagrad():
  grads = random_grads((6,), 8)
  tx = mbag.mbag(LR, block_size=6, initial_accumulator_value=LAM, momentum=MOM, root_interval=1,
                 root_method="eigh", **F64)
  ups, _ = run_jax(tx, np.zeros(6), grads)
  ref = reference.run_full_adagrad(grads, lam=LAM, momentum=MOM, lr=LR)
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


def test_one_block_dense_kernel_is_full_matrix_adagrad():
  """block_size == n_in * m_out: one group for the whole kernel (order does not matter)."""
  grads = random_grads((3, 2), 6, seed=1)
  tx = mbag.mbag(LR, block_size=6, initial_accumulator_value=LAM, momentum=MOM, root_interval=1,
                 root_method="eigh", **F64)
  ups, _ = run_jax(tx, np.zeros((3, 2)), grads)
  ref = reference.run_full_adagrad([g.reshape(-1) for g in grads], lam=LAM, momentum=MOM, lr=LR)
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("root_method", ["eigh", "newton_schulz"])
def test_block_size_one_is_diagonal_adagrad_with_momentum(root_method):
  grads = random_grads((5,), 10, seed=2)
  tx = mbag.mbag(LR, block_size=1, initial_accumulator_value=LAM, momentum=MOM, root_interval=1,
                 root_method=root_method, **F64)
  ups, _ = run_jax(tx, np.zeros(5), grads)
  ref = reference.run_diagonal_adagrad(grads, lam=LAM, momentum=MOM, lr=LR)
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


def test_stale_root_and_padding_match_reference():
  """root_interval=3 keeps the root for two steps; the last group (size 1) is padded to 3."""
  grads = random_grads((7,), 9, seed=3)
  tx = mbag.mbag(LR, block_size=3, initial_accumulator_value=LAM, momentum=MOM, root_interval=3,
                 root_method="eigh", **F64)
  ups, state = run_jax(tx, np.zeros(7), grads)
  ref = reference.run_mbag(grads, consecutive_groups(7, 3), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=3)
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)
  # The first two steps use the initial root lambda^{-1/2} I: momentum SGD with a larger step.
  np.testing.assert_allclose(flat(ups[0]), -LR * grads[0] / np.sqrt(LAM), rtol=1e-12)
  assert int(mbag.find_mbag_state(state).count) == 9


def test_newton_schulz_root_matches_reference():
  grads = random_grads((8,), 6, seed=4)
  tx = mbag.mbag(LR, block_size=4, initial_accumulator_value=LAM, momentum=MOM, root_interval=2,
                 newton_schulz_steps=5, **F64)
  ups, state = run_jax(tx, np.zeros(8), grads)
  ref = reference.run_mbag(grads, consecutive_groups(8, 4), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=2, root="newton_schulz", ns_steps=5)
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)
  diag = mbag.find_mbag_state(state).diagnostics
  assert int(diag.root_steps) == 5 and float(diag.root_residual) > 0


@pytest.mark.parametrize("root_method", ["eigh", "newton_schulz"])
def test_mbag_ema_matches_reference(root_method):
  grads = random_grads((6,), 8, seed=5)
  tx = mbag.mbag_ema(LR, decay=0.9, block_size=4, initial_accumulator_value=LAM, momentum=MOM,
                     root_interval=2, root_method=root_method, **F64)
  ups, _ = run_jax(tx, np.zeros(6), grads)
  ref = reference.run_mbag(grads, consecutive_groups(6, 4), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=2, algorithm="ema", decay=0.9,
                           root="eigh" if root_method == "eigh" else "newton_schulz")
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


def test_mbag_n_matches_reference():
  grads = random_grads((5,), 7, seed=6)
  tx = mbag.mbag_n(LR, block_size=2, initial_accumulator_value=LAM, momentum=MOM, **F64)
  ups, _ = run_jax(tx, np.zeros(5), grads)
  ref = reference.run_mbag(grads, consecutive_groups(5, 2), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=1, algorithm="direct")
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


def test_dense_and_conv_kernel_grouping():
  """Dense (n_in, m_out): groups of consecutive inputs per output; conv: kh*kw taps per (c_in, c_out)."""
  dense = (4, 3)
  conv = (3, 3, 2, 3)
  grads = [{"dense": g1, "conv": g2} for g1, g2 in
           zip(random_grads(dense, 5, seed=7), random_grads(conv, 5, seed=8))]
  tx = mbag.mbag(LR, block_size=2, initial_accumulator_value=LAM, momentum=MOM, root_interval=1,
                 root_method="eigh", **F64)
  ups, _ = run_jax(tx, {"dense": np.zeros(dense), "conv": np.zeros(conv)}, grads)
  # Flatten as [conv, dense] (tree order: keys sorted) in row-major order: the 9 taps of each
  # (c_in, c_out), then 2 consecutive inputs of each output.
  n_conv = int(np.prod(conv))
  groups = reference.axis_groups(conv, (0, 1), 9) + reference.axis_groups(dense, (0,), 2, n_conv)
  flat_grads = [np.concatenate([g["conv"].reshape(-1), g["dense"].reshape(-1)]) for g in grads]
  ref = reference.run_mbag(flat_grads, groups, lam=LAM, momentum=MOM, lr=LR, root_interval=1)
  got = [np.concatenate([flat(u["conv"]), flat(u["dense"])]) for u in ups]
  np.testing.assert_allclose(np.stack(got), np.stack(ref), rtol=1e-9, atol=1e-12)


def test_block_size_n_in_groups_per_output_neuron():
  layout = mbag.blocks.make_layout({"k": jnp.zeros((5, 3))}, block_size=5)
  spec = layout.specs[0]
  blocks = mbag.blocks.tree_to_buckets({"k": jnp.arange(15.0).reshape(5, 3)}, layout)[0]
  np.testing.assert_array_equal(np.asarray(blocks), np.arange(15.0).reshape(5, 3).T)
  assert spec.block_size == 5


def test_custom_grouping_overrides_default():
  def grouping(path, shape):
    return 1 if jax.tree_util.keystr(path) == "['bias']" else None
  params = {"bias": jnp.zeros(4), "w": jnp.zeros((4, 2))}
  layout = mbag.blocks.make_layout(params, block_size=4, dimension_numbers=grouping)
  assert sorted(layout.block_sizes) == [1, 4]
  grads = [{"bias": g[:4], "w": g[4:].reshape(4, 2)} for g in random_grads((12,), 4, seed=9)]
  tx = mbag.mbag(LR, block_size=4, dimension_numbers=grouping, initial_accumulator_value=LAM,
                 momentum=MOM, root_interval=1, root_method="eigh", **F64)
  ups, _ = run_jax(tx, params, grads)
  bias_ref = reference.run_diagonal_adagrad([g["bias"] for g in grads], lam=LAM, momentum=MOM, lr=LR)
  np.testing.assert_allclose(np.stack([flat(u["bias"]) for u in ups]), np.stack(bias_ref), rtol=1e-9)


def test_fused_and_per_leaf_buckets_agree():
  params = {"a": np.zeros((3, 3, 2, 2)), "b": np.zeros((3, 3, 1, 4)), "c": np.zeros(10)}
  grads = [{"a": g1, "b": g2, "c": g3} for g1, g2, g3 in zip(
      random_grads((3, 3, 2, 2), 4, seed=10), random_grads((3, 3, 1, 4), 4, seed=11),
      random_grads((10,), 4, seed=12))]
  kw = dict(block_size=4, initial_accumulator_value=LAM, momentum=MOM, root_interval=2)
  fused, sf = run_jax(mbag.mbag(LR, fuse_blocks=True, **kw), params, grads, x64=False)
  per_leaf, sp = run_jax(mbag.mbag(LR, fuse_blocks=False, **kw), params, grads, x64=False)
  assert len(mbag.find_mbag_state(sf).stats) == 2 and len(mbag.find_mbag_state(sp).stats) == 3
  for u, v in zip(fused, per_leaf):
    for k in params:
      np.testing.assert_allclose(np.asarray(u[k]), np.asarray(v[k]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("factory", [mbag.mbag, mbag.mbag_ema, mbag.mbag_n])
def test_nonfinite_gradient_is_treated_as_zero(factory):
  params = {"w": np.zeros((4, 2)), "b": np.zeros(2)}
  good = {"w": np.ones((4, 2)), "b": np.ones(2)}
  bad = {"w": np.ones((4, 2)), "b": np.array([np.nan, 1.0])}
  tx = factory(LR, block_size=4)
  with compat.enable_x64(False):
    state = tx.init(jax.tree.map(jnp.asarray, params))
    _, state = tx.update(good, state)
    before = mbag.find_mbag_state(state)
    u, state = tx.update(bad, state)
    after = mbag.find_mbag_state(state)
  for s0, s1 in zip(before.stats, after.stats):
    np.testing.assert_array_equal(np.asarray(s0), np.asarray(s1))
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
  assert int(after.diagnostics.num_nonfinite_grads) == 1
  # The preconditioned direction is zero, so the update is the coasting momentum.
  trace = [s for s in state if isinstance(s, optax.TraceState)][0]
  np.testing.assert_allclose(np.asarray(u["w"]), -LR * np.asarray(trace.trace["w"]), rtol=1e-6)


def test_overflowing_gradient_block_is_skipped():
  tx = mbag.mbag(LR, block_size=2)
  params = {"w": jnp.zeros(4)}
  state = tx.init(params)
  u, state = tx.update({"w": jnp.array([1e30, 1e30, 1.0, 1.0])}, state)
  s = mbag.find_mbag_state(state)
  assert int(s.diagnostics.num_skipped_blocks) == 1
  np.testing.assert_array_equal(np.asarray(s.stats[0][0]), np.eye(2) / 0.01)
  assert np.all(np.isfinite(np.asarray(u["w"]))) and float(u["w"][0]) == 0.0
  assert float(u["w"][2]) != 0.0


def broken_first_root(algorithm=mbag.algorithms.MBAG):
  """``algorithm`` whose root of the first block of every call comes back NaN (a variant of the
  public extension API, to test the engine's fallback)."""

  def root(A, ctx):
    R, info = algorithm.root(A, ctx)
    return R.at[0].set(jnp.nan), info

  return algorithm._replace(root=root)


def broken_scale_by_mbag(**kwargs):
  """``mbag.scale_by_mbag(**kwargs)`` with :func:`broken_first_root` (lambda 0.01)."""
  options = mbag.MBAGOptions(**{k: kwargs.pop(k) for k in list(kwargs)
                                if k in mbag.MBAGOptions.__dataclass_fields__})
  return mbag.scale_by_block_preconditioner(
      broken_first_root(), initial_accumulator_value=0.01, options=options, **kwargs)


def test_nonfinite_root_keeps_previous_root():
  tx = broken_scale_by_mbag(block_size=2, root_interval=1)
  state = tx.init({"w": jnp.zeros(4)})
  g = {"w": jnp.array([1.0, 2.0, 3.0, 4.0])}
  u, state = tx.update(g, state)
  s = mbag.find_mbag_state(state)
  np.testing.assert_allclose(np.asarray(s.roots[0][0]), np.eye(2) * 10.0)  # initial root kept
  assert not np.allclose(np.asarray(s.roots[0][1]), np.eye(2) * 10.0)  # block 1 refreshed
  assert int(s.diagnostics.num_root_fallbacks) == 1
  np.testing.assert_allclose(np.asarray(u["w"][:2]), [10.0, 20.0], rtol=1e-6)


def test_bfloat16_params_keep_dtype_and_float32_statistics():
  params = {"w": jnp.zeros((8, 4), jnp.bfloat16)}
  grads = [{"w": jnp.asarray(g, jnp.bfloat16)} for g in random_grads((8, 4), 6, seed=13)]
  tx = mbag.mbag(LR, block_size=4, root_interval=2)
  state = tx.init(params)
  state32 = tx.init({"w": jnp.zeros((8, 4), jnp.float32)})
  for g in grads:
    u, state = tx.update(g, state)
    u32, state32 = tx.update({"w": g["w"].astype(jnp.float32)}, state32)
  assert u["w"].dtype == jnp.bfloat16
  assert all(s.dtype == jnp.float32 for s in mbag.find_mbag_state(state).stats)
  # bfloat16 keeps 8 bits of mantissa (eps 2^-8) and the momentum is kept in bfloat16 as optax
  # does for the update dtype; six steps of rounding stay within a few eps of the update scale.
  scale = np.abs(np.asarray(u32["w"])).max()
  np.testing.assert_allclose(np.asarray(u["w"], np.float32), np.asarray(u32["w"]), rtol=0,
                             atol=8 * 2.0**-8 * scale)


def test_root_warmup_recomputes_the_root_early():
  grads = random_grads((4,), 5, seed=14)
  tx = mbag.mbag(LR, block_size=4, initial_accumulator_value=LAM, momentum=MOM, root_interval=50,
                 root_warmup_steps=3, root_method="eigh", **F64)
  ups, _ = run_jax(tx, np.zeros(4), grads)
  full = reference.run_full_adagrad(grads[:3], lam=LAM, momentum=MOM, lr=LR)
  np.testing.assert_allclose(np.stack([flat(u) for u in ups[:3]]), np.stack(full), rtol=1e-9)
  # After the warm-up the root is stale again (kept from step 3).
  stale = reference.run_mbag(grads, [np.arange(4)], lam=LAM, momentum=MOM, lr=LR, root_interval=50)
  assert not np.allclose(flat(ups[4]), stale[4])
