"""The extensible core: grafting, decoupled weight decay, a variant of one's own, the options record.

Grafting and weight decay are checked against ``tests.reference.run_mbag`` (float64 NumPy written
from the definitions); the custom variant against a float64 eigendecomposition.
"""

import inspect
import warnings

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mbag
from tests import reference
from tests.test_mbag_reference import F64, LAM, LR, MOM, consecutive_groups, flat, random_grads
from tests.test_mbag_reference import run_jax

# Two leaves that share one bucket of blocks of 3: "a" (7 entries: blocks 0-2, the last padded)
# and "b" (3 x 2 kernel, dense rule: the 3 inputs of each of its 2 outputs, one block each).
SHAPES = {"a": (7,), "b": (3, 2)}


def two_leaf_grads(steps, seed, scale=1.0):
  flat_grads = random_grads((13,), steps, seed=seed, scale=scale)
  return [{"a": g[:7], "b": g[7:].reshape(3, 2)} for g in flat_grads]


def two_leaf_groups():
  """MBAG's blocks in the flat order a (7), b (6, row-major): b's blocks are its columns."""
  b_cols = [7 + np.array([0, 2, 4]) + j for j in range(2)]
  return consecutive_groups(7, 3) + b_cols


def flat_tree(t):
  return np.concatenate([np.asarray(t["a"], np.float64).reshape(-1),
                         np.asarray(t["b"], np.float64).reshape(-1)])


@pytest.mark.parametrize("method", ["adam", "rmsprop", "adagrad"])
@pytest.mark.parametrize("granularity", ["leaf", "block"])
def test_graft_matches_definition(method, granularity):
  grads = two_leaf_grads(7, seed=31)
  graft = mbag.Graft(method, granularity=granularity, decay=0.9, eps=1e-3)
  tx = mbag.mbag(LR, block_size=3, initial_accumulator_value=LAM, momentum=MOM, root_interval=2,
                 root_method="eigh", graft=graft, **F64)
  params = {k: np.zeros(s) for k, s in SHAPES.items()}
  ups, _ = run_jax(tx, params, grads)
  groups = two_leaf_groups()
  units = [np.arange(7), np.arange(7, 13)] if granularity == "leaf" else groups
  ref = reference.run_mbag([flat_tree(g) for g in grads], groups, lam=LAM, momentum=MOM, lr=LR,
                           root_interval=2, graft=method, graft_units=units, graft_decay=0.9,
                           graft_eps=1e-3)
  np.testing.assert_allclose(np.stack([flat_tree(u) for u in ups]), np.stack(ref), rtol=1e-9,
                             atol=1e-12)


@pytest.mark.parametrize("factory,algorithm", [(mbag.mbag_ema, "ema"), (mbag.mbag_n, "direct")])
def test_graft_on_the_other_algorithms(factory, algorithm):
  grads = two_leaf_grads(5, seed=32)
  extra = {} if factory is mbag.mbag_n else dict(root_interval=1, root_method="eigh", decay=0.95)
  tx = factory(LR, block_size=3, initial_accumulator_value=LAM, momentum=MOM, graft="adam", **F64,
               **extra)
  ups, _ = run_jax(tx, {k: np.zeros(s) for k, s in SHAPES.items()}, grads)
  ref = reference.run_mbag([flat_tree(g) for g in grads], two_leaf_groups(), lam=LAM,
                           momentum=MOM, lr=LR, root_interval=1, algorithm=algorithm, decay=0.95,
                           graft="adam", graft_units=[np.arange(7), np.arange(7, 13)])
  np.testing.assert_allclose(np.stack([flat_tree(u) for u in ups]), np.stack(ref), rtol=1e-9,
                             atol=1e-12)


def test_graft_step_is_adams_at_the_first_step_whatever_lambda():
  """Adam's first step moves every coordinate by lr (v_hat = g^2): a grafted leaf moves by
  lr * sqrt(size), in the lambda^{-1/2} I phase and with any lambda."""
  g = {"w": jnp.array([3.0, -1e-3, 0.5, 2.0])}
  for lam in (1e-4, 0.01, 10.0):
    tx = mbag.mbag(0.1, block_size=2, initial_accumulator_value=lam, graft="adam")
    u, _ = tx.update(g, tx.init(g), g)
    np.testing.assert_allclose(float(jnp.linalg.norm(u["w"])), 0.1 * 2.0, rtol=1e-5)


def test_grafted_steps_stay_as_long_as_adams_under_momentum():
  """A constant gradient: Adam moves each coordinate by lr at every step, and so does grafted
  MBAG with momentum 0.9 (its momentum is Adam's average; the paper's heavy ball would reach
  (1 - 0.9^t) / (1 - 0.9) = 9.6x that by step 30)."""
  g = {"w": jnp.array([3.0, -1e-3, 0.5, 2.0, 1.0, -4.0])}
  for factory in (mbag.mbag, mbag.mbag_ema, mbag.mbag_n):
    tx = factory(0.1, block_size=3, momentum=0.9, graft="adam")
    state = tx.init(g)
    for _ in range(30):
      u, state = tx.update(g, state, g)
    np.testing.assert_allclose(float(jnp.linalg.norm(u["w"])), 0.1 * np.sqrt(6), rtol=1e-4)
  adam = optax.adam(0.1, b1=0.9)
  state = adam.init(g)
  for _ in range(30):
    u, state = adam.update(g, state, g)
  np.testing.assert_allclose(float(jnp.linalg.norm(u["w"])), 0.1 * np.sqrt(6), rtol=1e-4)


def test_graft_zero_gradient_and_bad_gradients_keep_state_finite():
  tx = mbag.mbag(0.1, block_size=2, graft="adam")
  params = {"w": jnp.zeros(4), "z": jnp.zeros(3)}
  state = tx.init(params)
  u, state = tx.update({"w": jnp.zeros(4), "z": jnp.zeros(3)}, state, params)  # all zero
  assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))
  u, state = tx.update({"w": jnp.array([1.0, 2.0, 0.0, 0.0]), "z": jnp.zeros(3)}, state, params)
  before = mbag.find_mbag_state(state).graft
  u, state = tx.update({"w": jnp.array([jnp.nan, 1.0, 0.0, 0.0]), "z": jnp.ones(3)}, state, params)
  after = mbag.find_mbag_state(state).graft
  for x0, x1 in zip(before, after):  # a non-finite step leaves the moments exactly as they were
    np.testing.assert_array_equal(np.asarray(x0), np.asarray(x1))
  # an overflowing block: skipped by MBAG and by the graft (no inf in the moments)
  u, state = tx.update({"w": jnp.array([1e30, 1e30, 1.0, 1.0]), "z": jnp.ones(3)}, state, params)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))


def test_graft_state_costs_one_float_per_block_entry():
  params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
  plain = jax.tree.leaves(mbag.find_mbag_state(mbag.mbag(0.1).init(params)))
  grafted = mbag.find_mbag_state(mbag.mbag(0.1, graft="adam").init(params))
  extra = sum(x.size for x in jax.tree.leaves(grafted)) - sum(x.size for x in plain)
  assert extra == sum(x.size for x in grafted.graft) == 64 * 10 + 10  # b: one block of 10


@pytest.mark.parametrize("bad,match", [("sgd", "graft must be None"), (3, "graft must be None"),
                                       (mbag.Graft("lion"), "graft method"),
                                       (mbag.Graft(granularity="layer"), "granularity"),
                                       (mbag.Graft(decay=1.0), "graft decay"),
                                       (mbag.Graft(eps=0.0), "graft eps")])
def test_bad_graft_is_named(bad, match):
  if isinstance(bad, str):
    match = "graft method"
  with pytest.raises(ValueError, match=match):
    mbag.mbag(0.1, graft=bad)


def test_graft_composes_with_optax_wrappers():
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  grads = jax.tree.map(lambda p: 0.5 * p, params)
  ref = mbag.mbag(0.1, graft="adam", block_size=4)
  u_ref, _ = ref.update(grads, ref.init(params), params)
  injected = optax.inject_hyperparams(mbag.mbag, static_args=("block_size",))(
      learning_rate=0.1, graft="adam", block_size=4)
  u, _ = jax.jit(injected.update)(grads, injected.init(params), params)
  np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)
  multi = optax.multi_transform({"m": mbag.mbag(0.1, graft="adam", block_size=4),
                                 "a": optax.adamw(0.1)}, {"w": "m", "b": "a"})
  u, _ = multi.update(grads, multi.init(params), params)
  np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)
  masked = optax.masked(mbag.mbag(0.1, graft="adam", block_size=4), {"w": True, "b": False})
  u, _ = masked.update(grads, masked.init(params), params)
  np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)
  np.testing.assert_array_equal(u["b"], grads["b"])


def test_decoupled_weight_decay_matches_definition():
  grads = [{"w": g} for g in random_grads((5,), 4, seed=33)]
  p0 = np.linspace(-1.0, 1.0, 5)
  tx = mbag.mbag(LR, block_size=5, initial_accumulator_value=LAM, momentum=MOM, root_interval=1,
                 root_method="eigh", weight_decay=0.3, **F64)
  ups, _ = run_jax(tx, {"w": p0}, grads)  # params held fixed: the decay term is -lr wd p0
  ref = reference.run_mbag([g["w"] for g in grads], [np.arange(5)], lam=LAM, momentum=MOM,
                           lr=LR, root_interval=1, weight_decay=0.3, params=p0)
  np.testing.assert_allclose(np.stack([flat(u["w"]) for u in ups]), np.stack(ref), rtol=1e-9,
                             atol=1e-12)


def test_weight_decay_mask_and_errors():
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = mbag.mbag(0.1, weight_decay=0.5, weight_decay_mask=lambda p: jax.tree.map(
      lambda x: x.ndim >= 2, p))
  u, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(u["w"], -0.05 * np.ones((2, 2)))
  np.testing.assert_array_equal(u["b"], np.zeros(2))
  with pytest.raises(ValueError, match="needs the parameters"):
    tx.update(zeros, tx.init(params))
  with pytest.raises(ValueError, match="weight_decay must be >= 0"):
    mbag.mbag(0.1, weight_decay=-1.0)


# ----------------------------------------------------------------------------- your own variant


def fourth_root(A, ctx):
  """H^{1/4}: the square root of the square root."""
  R, _ = ctx.matrix_root(A, "sqrt")
  return ctx.matrix_root(R, "sqrt")


QUARTER = mbag.algorithms.MBAG._replace(
    name="scale_by_mbag_quarter", root=fourth_root,
    initial=lambda lam: (1.0 / lam, lam ** -0.25))


def test_a_variant_of_ones_own_runs_on_the_engine():
  grads = random_grads((4,), 5, seed=34)
  tx = optax.chain(mbag.scale_by_block_preconditioner(
      QUARTER, block_size=4, initial_accumulator_value=LAM, root_interval=1,
      options=mbag.MBAGOptions(root_method="eigh", statistics_dtype=jnp.float64)),
      optax.scale(-LR))
  ups, state = run_jax(tx, {"w": np.zeros(4)}, [{"w": g} for g in grads])
  G = LAM * np.eye(4)
  for g, u in zip(grads, ups):
    G = G + np.outer(g, g)
    np.testing.assert_allclose(flat(u["w"]), -LR * reference.sqrtm_psd(G, -0.25) @ g, rtol=1e-9)
  assert mbag.describe({"w": jnp.zeros(4)}, tx).preconditioners == ("scale_by_mbag_quarter",)


# ----------------------------------------------------------------------------- shapes, options

OPTION_SETS = [dict(), dict(fuse_blocks=False), dict(fuse_blocks=True), dict(storage="symmetric"),
               dict(root_dtype="bfloat16"), dict(root_chunk_size=1), dict(graft="adam"),
               dict(graft=mbag.Graft(granularity="block")), dict(root_warmup_steps=2)]
DTYPES = [jnp.float32, jnp.bfloat16]


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    shapes=st.lists(st.sampled_from([(), (1,), (3,), (5, 1), (2, 3), (1, 1, 1), (3, 3, 2, 2),
                                     (4, 1, 3)]), min_size=1, max_size=4),
    options=st.sampled_from(OPTION_SETS),
    factory=st.sampled_from([mbag.mbag, mbag.mbag_ema, mbag.mbag_n]),
    block_size=st.sampled_from([1, 2, 32]),
    dtype=st.sampled_from(DTYPES))
def test_every_update_has_its_parameters_shape_and_dtype(shapes, options, factory, block_size,
                                                         dtype):
  if factory is mbag.mbag_n:
    options = {k: v for k, v in options.items() if k not in ("root_dtype", "root_chunk_size",
                                                             "root_warmup_steps")}
  params = {f"p{i}": jnp.full(s, 0.5, dtype) for i, s in enumerate(shapes)}
  if factory is not mbag.mbag_n:
    options = dict(options, root_interval=1)
  tx = factory(0.1, block_size=block_size, **options)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", mbag.MBAGGroupingWarning)
    state = tx.init(params)
  u, state = jax.jit(tx.update)(params, state, params)
  for k, p in params.items():
    assert u[k].shape == p.shape and u[k].dtype == p.dtype, (k, p.shape, u[k].shape)
  new = optax.apply_updates(params, u)
  assert jax.tree.map(jnp.shape, new) == jax.tree.map(jnp.shape, params)


def test_scalar_parameters_sharing_a_bucket_keep_their_shape():
  params = {"t": jnp.array(1.0), "s": jnp.array(2.0)}
  for tx in (mbag.mbag(1e-2), mbag.mbag_ema(1e-2), mbag.mbag_n(1e-2), mbag.mbag(1e-2, block_size=1)):
    u, _ = tx.update(params, tx.init(params), params)
    assert u["t"].shape == () and u["s"].shape == ()


def test_weight_decay_defaults_to_none_and_keeps_the_papers_chain():
  """No decay: the chain of the paper (3 transformations) under inject_hyperparams too, and an
  update without params works; a decay given under jit still demands the params."""
  params = {"w": jnp.ones(4)}
  injected = optax.inject_hyperparams(mbag.mbag, static_args=("block_size",))(
      learning_rate=0.1, block_size=4)
  state = injected.init(params)
  assert len(state.inner_state) == 3
  jax.jit(injected.update)(params, state)  # no params needed
  decayed = optax.inject_hyperparams(mbag.mbag, static_args=("block_size",))(
      learning_rate=0.1, block_size=4, weight_decay=0.5)
  with pytest.raises(ValueError, match="needs the parameters"):
    jax.jit(decayed.update)(params, decayed.init(params))
  with pytest.raises(ValueError, match="a schedule is not supported"):
    mbag.mbag(0.1, weight_decay=lambda t: 0.1)


def test_min_denominator_shows_a_lost_positive_definiteness():
  """A block whose H is no longer positive definite: its non-positive denominator is reported
  (the block is skipped), while a NaN one of an overflowing block is left out."""
  tx = mbag.scale_by_mbag(block_size=2, root_interval=100)
  params = {"w": jnp.zeros(4)}
  state = tx.init(params)
  stats = state.stats[0].at[0].set(-jnp.eye(2))
  _, state = tx.update({"w": jnp.ones(4)}, state._replace(stats=(stats,)))
  assert float(state.diagnostics.min_denominator) == -1.0
  assert int(state.diagnostics.num_skipped_blocks) == 1


def test_options_record_goes_to_the_engine_only_and_hyperparameters_are_checked():
  with pytest.raises(TypeError, match="takes the options as keywords"):
    mbag.scale_by_mbag(options=mbag.MBAGOptions())
  with pytest.raises(ValueError, match=r"needs the hyperparameter\(s\) \['decay'\]"):
    mbag.scale_by_block_preconditioner(mbag.algorithms.MBAG_EMA, block_size=2,
                                       initial_accumulator_value=0.1)


def test_option_keywords_are_the_options_record():
  fields = tuple(mbag.MBAGOptions.__dataclass_fields__)
  for fn in (mbag.mbag, mbag.mbag_ema, mbag.mbag_n, mbag.scale_by_mbag, mbag.scale_by_mbag_ema,
             mbag.scale_by_mbag_n):
    params = inspect.signature(fn).parameters
    assert all(f in params and params[f].kind == params[f].KEYWORD_ONLY for f in fields), fn
  with pytest.raises(TypeError, match=r"mbag.mbag\(\): .*no_such_option"):
    mbag.mbag(0.1, no_such_option=1)
  with pytest.raises(ValueError, match="storage must be one of"):
    mbag.MBAGOptions(storage="packed")


def test_mbag_n_rejects_root_options():
  with pytest.raises(ValueError, match="computes no root: root_dtype"):
    mbag.mbag_n(0.1, root_dtype="bfloat16")
  mbag.mbag_n(0.1, storage="symmetric", fuse_blocks=False)  # the options it uses


def test_grouping_is_deprecated_and_old_names_moved():
  with pytest.warns(DeprecationWarning, match="use `dimension_numbers=`") as caught:
    mbag.mbag(0.1, grouping=2)
  assert caught[0].filename == __file__  # attributed to the caller, so that Python shows it
  with pytest.warns(DeprecationWarning, match="mbag.blocks.make_layout"):
    assert mbag.make_layout is mbag.blocks.make_layout
