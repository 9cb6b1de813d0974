"""Symmetric (packed upper-triangle) storage and the lower-precision root, against float64 references.

Tolerances:
* float64 runs are compared with the plain NumPy algorithms of tests/reference.py to 1e-9, as the
  dense storage is (tests/test_mbag_reference.py): packing changes no arithmetic.
* float32 symmetric vs dense: H is updated by the same operations on the same numbers, so the
  statistics agree bit for bit. A Newton-Schulz root is a product of matrices and is symmetric
  only up to rounding; the packed root keeps its upper triangle, so each direction differs from
  the dense one by at most ``sum_j |R_ij - R_ji| |g_j|`` (measured on the dense root) plus the
  rounding of the product, ``2 b eps |R| |g|``.
* a bfloat16 root rounds every entry to 8 significant bits, at most ``2^-8 |R_ij|``; the direction is
  still formed in float32, so it is off by at most ``(2^-8 + 2 b eps32) (|R| |g|)_i``.
"""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mbag
from mbag import linalg
from tests import compat
from tests import reference
from tests import test_mbag_reference
from tests.test_mbag_reference import LAM, LR, MOM, consecutive_groups, flat, random_grads, run_jax

EPS32 = float(np.finfo(np.float32).eps)
SYM = dict(storage="symmetric")
F64 = dict(statistics_dtype=jnp.float64)


# ------------------------------------------------------------------------------- linalg pieces


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(b=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_and_packed_outer(b, seed):
  rng = np.random.default_rng(seed)
  A = rng.standard_normal((3, b, b)).astype(np.float32)
  A = A + np.swapaxes(A, 1, 2)
  packed = np.asarray(linalg.pack_symmetric(jnp.asarray(A)))
  assert packed.shape == (3, b * (b + 1) // 2) == (3, linalg.packed_size(b))
  assert linalg.packed_block_size(packed.shape[-1]) == b
  rows, cols = np.triu_indices(b)
  np.testing.assert_array_equal(packed, A[:, rows, cols])  # row-major upper triangle
  np.testing.assert_array_equal(np.asarray(linalg.unpack_symmetric(jnp.asarray(packed))), A)
  w = rng.standard_normal((3, b)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(linalg.packed_outer(jnp.asarray(w))),
                                (w[:, :, None] * w[:, None, :])[:, rows, cols])


def test_packed_block_size_rejects_other_sizes():
  with pytest.raises(ValueError, match="not the size of a packed symmetric matrix"):
    linalg.packed_block_size(44)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(b=st.integers(1, 9), seed=st.integers(0, 2**31 - 1), log_cond=st.floats(0, 4))
def test_packed_sherman_morrison_is_the_dense_update_bit_for_bit(b, seed, log_cond):
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.standard_normal((b, b)))
  H = np.linalg.inv((q * np.geomspace(1.0, 10.0 ** log_cond, b)) @ q.T)
  H = jnp.asarray(0.5 * (H + H.T), jnp.float32)[None]
  g = jnp.asarray(rng.standard_normal((1, b)), jnp.float32)
  dense, den_d, ok_d = jax.jit(linalg.guarded_sherman_morrison)(H, g)
  packed, den_p, ok_p = jax.jit(lambda h, v: linalg.guarded_sherman_morrison(
      h, v, packed=True))(linalg.pack_symmetric(H), g)
  np.testing.assert_array_equal(np.asarray(linalg.unpack_symmetric(packed)), np.asarray(dense))
  np.testing.assert_array_equal(np.asarray(den_p), np.asarray(den_d))
  assert bool(ok_p[0]) == bool(ok_d[0])


# ------------------------------------------------------------------- float64 reference runs


@pytest.mark.parametrize("root_method", ["eigh", "newton_schulz"])
def test_symmetric_storage_matches_reference_with_padding(root_method):
  """7 parameters in blocks of 3 (the last padded), root every 3 steps."""
  grads = random_grads((7,), 9, seed=3)
  tx = mbag.mbag(LR, block_size=3, initial_accumulator_value=LAM, momentum=MOM, root_interval=3,
                 root_method=root_method, **F64, **SYM)
  ups, state = run_jax(tx, np.zeros(7), grads)
  ref = reference.run_mbag(grads, consecutive_groups(7, 3), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=3, root=root_method if root_method == "eigh" else
                           "newton_schulz")
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)
  s = mbag.find_mbag_state(state)
  assert [x.shape for x in s.stats] == [(3, 6)] and [x.shape for x in s.roots] == [(3, 6)]
  # Padding stays exact: the padded coordinates of the last block are zero rows and columns.
  H = np.asarray(s.dense_stats()[0])
  np.testing.assert_array_equal(H[2, 1:, :], 0.0)
  np.testing.assert_array_equal(H[2, :, 1:], 0.0)


@pytest.mark.parametrize("root_method", ["eigh", "newton_schulz"])
def test_symmetric_mbag_ema_matches_reference(root_method):
  grads = random_grads((6,), 8, seed=5)
  tx = mbag.mbag_ema(LR, decay=0.9, block_size=4, initial_accumulator_value=LAM, momentum=MOM,
                     root_interval=2, root_method=root_method, **F64, **SYM)
  ups, _ = run_jax(tx, np.zeros(6), grads)
  ref = reference.run_mbag(grads, consecutive_groups(6, 4), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=2, algorithm="ema", decay=0.9, root=root_method)
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


def test_symmetric_mbag_n_matches_reference():
  grads = random_grads((5,), 7, seed=6)
  tx = mbag.mbag_n(LR, block_size=2, initial_accumulator_value=LAM, momentum=MOM, **F64, **SYM)
  ups, _ = run_jax(tx, np.zeros(5), grads)
  ref = reference.run_mbag(grads, consecutive_groups(5, 2), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=1, algorithm="direct")
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


def test_symmetric_conv_and_dense_kernels_match_reference():
  """A 3x3 conv (9-tap blocks) and a dense kernel (groups of 2 inputs) share nothing."""
  dense, conv = (4, 3), (3, 3, 2, 3)
  grads = [{"dense": g1, "conv": g2} for g1, g2 in
           zip(random_grads(dense, 5, seed=7), random_grads(conv, 5, seed=8))]
  tx = mbag.mbag(LR, block_size=2, initial_accumulator_value=LAM, momentum=MOM, root_interval=2,
                 root_method="eigh", **F64, **SYM)
  ups, _ = run_jax(tx, {"dense": np.zeros(dense), "conv": np.zeros(conv)}, grads)
  n_conv = int(np.prod(conv))
  groups = reference.axis_groups(conv, (0, 1), 9) + reference.axis_groups(dense, (0,), 2, n_conv)
  flat_grads = [np.concatenate([g["conv"].reshape(-1), g["dense"].reshape(-1)]) for g in grads]
  ref = reference.run_mbag(flat_grads, groups, lam=LAM, momentum=MOM, lr=LR, root_interval=2)
  got = [np.concatenate([flat(u["conv"]), flat(u["dense"])]) for u in ups]
  np.testing.assert_allclose(np.stack(got), np.stack(ref), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ float32: symmetric vs dense


def _run32(tx, params, grads):
  state = tx.init(params)
  update = jax.jit(tx.update)
  out, states = [], []
  for g in grads:
    u, state = update(g, state, params)
    out.append(u)
    states.append(mbag.find_mbag_state(state))
  return out, states


def _tree_grads(shapes, steps, seed):
  streams = {k: random_grads(s, steps, seed=seed + i, scale=0.1) for i, (k, s) in enumerate(shapes.items())}
  return [{k: jnp.asarray(v[t], jnp.float32) for k, v in streams.items()} for t in range(steps)]


SHAPES = {"conv": (3, 3, 4, 6), "dense": (40, 5), "bias": (5,)}


@pytest.mark.parametrize("fuse_blocks", [None, False])
def test_symmetric_equals_dense_to_float32_rounding(fuse_blocks):
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
  grads = _tree_grads(SHAPES, 7, seed=20)
  kw = dict(block_size=8, root_interval=3, newton_schulz_steps=5, fuse_blocks=fuse_blocks)
  pre_d = mbag.scale_by_mbag(**kw)
  pre_s = mbag.scale_by_mbag(**kw, **SYM)
  ups_d, st_d = _run32(pre_d, params, grads)
  ups_s, st_s = _run32(pre_s, params, grads)
  for t, (sd, ss) in enumerate(zip(st_d, st_s)):
    for Hd, Hs in zip(sd.stats, ss.dense_stats()):
      np.testing.assert_array_equal(np.asarray(Hs), np.asarray(Hd))  # same arithmetic on H
    layout = mbag.blocks.make_layout(params, 8, None, fuse_blocks)
    g_blocks = mbag.blocks.tree_to_buckets(grads[t], layout)
    bound = []
    for R, g in zip(sd.roots, g_blocks):
      R, g = np.asarray(R, np.float64), np.abs(np.asarray(g, np.float64))
      asym = np.einsum("nij,nj->ni", 0.5 * np.abs(R - np.swapaxes(R, 1, 2)), g)
      bound.append(asym + 2 * R.shape[-1] * EPS32 * np.einsum("nij,nj->ni", np.abs(R), g))
    bound_tree = mbag.blocks.buckets_to_tree([jnp.asarray(b, jnp.float32) for b in bound], layout, params)
    for k in SHAPES:
      diff = np.abs(np.asarray(ups_s[t][k]) - np.asarray(ups_d[t][k]))
      assert np.all(diff <= np.asarray(bound_tree[k]) + 1e-30), (t, k, diff.max())
  # The Newton-Schulz roots are not exactly symmetric, so the bound is not vacuous ...
  assert any(np.any(np.asarray(R) != np.swapaxes(np.asarray(R), 1, 2)) for R in st_d[-1].roots)
  # ... and the packed state is 45 / 81 of the dense one for the 3x3 conv blocks.
  assert [x.shape for x in st_s[-1].stats] == [
      (s[0], s[1] * (s[1] + 1) // 2) for s in (x.shape for x in st_d[-1].stats)]


def test_bfloat16_root_direction_error_is_bounded_by_its_rounding():
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
  grads = _tree_grads(SHAPES, 7, seed=30)
  kw = dict(block_size=8, root_interval=2)
  for storage in ("dense", "symmetric"):
    ups_f, st_f = _run32(mbag.scale_by_mbag(**kw, storage=storage), params, grads)
    ups_b, st_b = _run32(mbag.scale_by_mbag(**kw, storage=storage, root_dtype="bfloat16"),
                         params, grads)
    layout = mbag.blocks.make_layout(params, 8)
    for t, (sf, sb) in enumerate(zip(st_f, st_b)):
      assert all(R.dtype == jnp.bfloat16 for R in sb.roots)
      assert all(S.dtype == jnp.float32 for S in sb.stats)
      for Sf, Sb in zip(sf.stats, sb.stats):  # H never depends on the root
        np.testing.assert_array_equal(np.asarray(Sb), np.asarray(Sf))
      for Rf, Rb in zip(sf.dense_roots(), sb.dense_roots()):  # round to nearest bfloat16
        np.testing.assert_array_equal(np.asarray(Rb),
                                      np.asarray(Rf.astype(jnp.bfloat16).astype(jnp.float32)))
      g_blocks = mbag.blocks.tree_to_buckets(grads[t], layout)
      bound = [(2.0**-8 + 2 * R.shape[-1] * EPS32) * np.einsum(
          "nij,nj->ni", np.abs(np.asarray(R, np.float64)), np.abs(np.asarray(g, np.float64)))
          for R, g in zip(sf.dense_roots(), g_blocks)]
      bound_tree = mbag.blocks.buckets_to_tree([jnp.asarray(b, jnp.float32) for b in bound], layout,
                                        params)
      for k in SHAPES:
        diff = np.abs(np.asarray(ups_b[t][k]) - np.asarray(ups_f[t][k]))
        assert np.all(diff <= 1.01 * np.asarray(bound_tree[k])), (storage, t, k)
    # Rounding did happen (a root of lambda^{-1/2} I alone would be exact in bfloat16).
    assert any(np.any(np.asarray(a[k]) != np.asarray(b[k])) for a, b in zip(ups_f, ups_b)
               for k in SHAPES)


# --------------------------------------------------------------------------- guards and state


@pytest.mark.parametrize("factory,kw", [
    (mbag.mbag, SYM), (mbag.mbag, dict(storage="symmetric", root_dtype="bfloat16")),
    (mbag.mbag, dict(root_dtype="bfloat16")), (mbag.mbag_ema, SYM), (mbag.mbag_n, SYM)])
def test_nonfinite_gradient_leaves_the_state_bit_identical(factory, kw):
  params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
  good = {"w": jnp.ones((4, 2)), "b": jnp.ones(2)}
  bad = {"w": jnp.ones((4, 2)), "b": jnp.array([jnp.nan, 1.0])}
  tx = factory(LR, block_size=4, **kw)
  state = tx.init(params)
  _, state = tx.update(good, state)
  before = mbag.find_mbag_state(state)
  _, state = tx.update(bad, state)
  after = mbag.find_mbag_state(state)
  for x0, x1 in zip(jax.tree.leaves((before.stats, before.roots)),
                    jax.tree.leaves((after.stats, after.roots))):
    assert x0.dtype == x1.dtype
    np.testing.assert_array_equal(np.asarray(x0, np.float32), np.asarray(x1, np.float32))
  assert int(after.diagnostics.num_nonfinite_grads) == 1


def test_symmetric_overflowing_block_is_skipped_and_root_fallback_keeps_bfloat16_root():
  tx = mbag.mbag(LR, block_size=2, **SYM)
  state = tx.init({"w": jnp.zeros(4)})
  _, state = tx.update({"w": jnp.array([1e30, 1e30, 1.0, 1.0])}, state)
  s = mbag.find_mbag_state(state)
  assert int(s.diagnostics.num_skipped_blocks) == 1
  np.testing.assert_array_equal(np.asarray(s.stats[0][0]), [100.0, 0.0, 100.0])  # H_0, packed

  tx = test_mbag_reference.broken_scale_by_mbag(block_size=2, root_interval=1, root_dtype="bfloat16", **SYM)
  state = tx.init({"w": jnp.zeros(4)})
  u, state = tx.update({"w": jnp.array([1.0, 2.0, 3.0, 4.0])}, state)
  s = mbag.find_mbag_state(state)
  np.testing.assert_array_equal(np.asarray(s.roots[0][0], np.float32), [10.0, 0.0, 10.0])
  assert int(s.diagnostics.num_root_fallbacks) == 1
  np.testing.assert_allclose(np.asarray(u["w"][:2]), [10.0, 20.0], rtol=1e-6)


def test_state_bytes_and_describe():
  params = {"conv": jnp.zeros((3, 3, 16, 16)), "dense": jnp.zeros((64, 32))}
  n = 3 * 3 * 16 * 16 + 64 * 32
  sizes = {}
  for name, kw in {"dense": {}, "symmetric": SYM, "symmetric_bf16": dict(SYM, root_dtype="bfloat16"),
                   "dense_bf16": dict(root_dtype="bfloat16")}.items():
    tx = mbag.mbag(1e-3, **kw)
    report = mbag.describe(params, tx)
    state = tx.init(params)
    pre = mbag.find_mbag_state(state)
    nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves((pre.stats, pre.roots)))
    assert sum(r.state_bytes for r in report.rows) == nbytes
    sizes[name] = nbytes
  # conv: 256 blocks of 9, dense: 64 blocks of 32 (the inputs of each output, cut in 2).
  dense_floats = 256 * 81 + 64 * 1024
  packed_floats = 256 * 45 + 64 * 528
  assert sizes["dense"] == 2 * 4 * dense_floats
  assert sizes["symmetric"] == 2 * 4 * packed_floats
  assert sizes["symmetric_bf16"] == (4 + 2) * packed_floats
  assert sizes["dense_bf16"] == (4 + 2) * dense_floats
  assert sizes["symmetric"] / n < 0.56 * sizes["dense"] / n


def test_invalid_storage_and_root_dtype():
  with pytest.raises(ValueError, match="storage must be one of"):
    mbag.mbag(1e-3, storage="packed")
  with pytest.raises(ValueError, match="root_dtype must be a floating dtype"):
    mbag.mbag(1e-3, root_dtype="int32")
  with pytest.raises(ValueError, match="storage must be one of"):
    mbag.mbag_n(1e-3, storage=None)


def test_symmetric_bfloat16_state_works_with_optax_wrappers():
  """inject_hyperparams with the dtype as a string, MultiSteps and map_params."""
  params = {"w": jnp.zeros((8, 4))}
  grads = {"w": jnp.arange(32.0).reshape(8, 4) / 32}
  tx = optax.inject_hyperparams(mbag.mbag, static_args=("block_size",))(
      learning_rate=0.1, block_size=4, storage="symmetric", root_dtype="bfloat16")
  state = tx.init(params)
  u, state = jax.jit(tx.update)(grads, state)
  ref = mbag.mbag(0.1, block_size=4, storage="symmetric", root_dtype="bfloat16")
  u_ref, _ = ref.update(grads, ref.init(params))
  np.testing.assert_array_equal(np.asarray(u["w"]), np.asarray(u_ref["w"]))
  multi = optax.MultiSteps(ref, every_k_schedule=2)
  ms = multi.init(params)
  _, ms = multi.update(grads, ms, params)
  mapped = optax.tree.map_params(multi, lambda x: 2 * x, ms)
  assert jax.tree.structure(mapped) == jax.tree.structure(ms)
  inner = mbag.find_mbag_state(mapped)  # the packed blocks are not parameter-shaped: kept as is
  np.testing.assert_array_equal(np.asarray(inner.stats[0]),
                                np.asarray(mbag.find_mbag_state(ms).stats[0]))


def test_tracker_reads_a_symmetric_bfloat16_state_like_a_dense_one():
  import theory  # pylint: disable=g-import-not-at-top
  params = {"w": jnp.zeros((6, 3))}
  grads = _tree_grads({"w": (6, 3)}, 4, seed=40)
  scalars = {}
  for name, kw in (("dense", {}), ("symmetric", SYM)):
    tx = mbag.mbag(0.1, block_size=3, momentum=0.0, root_interval=1, **kw)
    state = tx.init(params)
    ts = theory.init_tracker(params, state, eta=0.1, lam=0.01)
    for g in grads:
      _, state = tx.update(g, state, params)
      ts, scalars[name] = theory.update_tracker(ts, state, g)
  for k, v in scalars["dense"].items():
    np.testing.assert_allclose(float(scalars["symmetric"][k]), float(v), rtol=1e-4, err_msg=k)
