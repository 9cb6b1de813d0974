"""Roots recomputed chunk by chunk (``root_chunk_size``) against float64 references and whole buckets.

Each block's root depends on that block only, so chunking changes no arithmetic: float64 runs
match the NumPy reference to 1e-9 as whole buckets do (tests/test_mbag_reference.py), and float32
runs match whole buckets to a few float32 ulps of the root (the batched products may be blocked
differently for another batch size).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbag
from tests import reference
from tests.test_mbag_reference import LAM, LR, MOM, broken_scale_by_mbag, consecutive_groups, flat, random_grads, run_jax

F64 = dict(statistics_dtype=jnp.float64)


@pytest.mark.parametrize("root_method", ["eigh", "newton_schulz"])
@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_chunked_roots_match_reference(root_method, chunk):
  """23 entries in blocks of 2: 12 blocks (the last padded), chunks of 1, 3 or 5 (with a
  remainder of 2 blocks for 5)."""
  grads = random_grads((23,), 6, seed=21)
  tx = mbag.mbag(LR, block_size=2, initial_accumulator_value=LAM, momentum=MOM, root_interval=2,
                 root_method=root_method, root_chunk_size=chunk, **F64)
  ups, _ = run_jax(tx, np.zeros(23), grads)
  ref = reference.run_mbag(grads, consecutive_groups(23, 2), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=2, root=root_method, ns_steps=5)
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


def test_chunked_ema_roots_match_reference():
  grads = random_grads((11,), 6, seed=22)
  tx = mbag.mbag_ema(LR, decay=0.9, block_size=3, initial_accumulator_value=LAM, momentum=MOM,
                     root_interval=2, root_chunk_size=2, **F64)
  ups, _ = run_jax(tx, np.zeros(11), grads)
  ref = reference.run_mbag(grads, consecutive_groups(11, 3), lam=LAM, momentum=MOM, lr=LR,
                           root_interval=2, algorithm="ema", decay=0.9, root="newton_schulz")
  np.testing.assert_allclose(np.stack([flat(u) for u in ups]), np.stack(ref), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("storage", ["dense", "symmetric"])
def test_chunked_float32_state_and_diagnostics_match_whole_buckets(storage):
  """Two buckets (blocks of 9 and of 4) in chunks of 4 against root_chunk_size=0, float32."""
  params = {"conv": np.zeros((3, 3, 2, 5)), "dense": np.zeros((6, 3))}
  rng = np.random.default_rng(23)
  grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(5)]
  kw = dict(block_size=4, root_interval=2, newton_schulz_steps=6, storage=storage)
  _, whole = run_jax(mbag.scale_by_mbag(root_chunk_size=0, **kw), params, grads, x64=False)
  _, chunked = run_jax(mbag.scale_by_mbag(root_chunk_size=4, **kw), params, grads, x64=False)
  for S_w, S_c in zip(whole.stats, chunked.stats):
    np.testing.assert_array_equal(np.asarray(S_w), np.asarray(S_c))  # H: same operations
  for R_w, R_c in zip(whole.dense_roots(), chunked.dense_roots()):
    scale = np.max(np.abs(np.asarray(R_w)))
    np.testing.assert_allclose(np.asarray(R_c), np.asarray(R_w), atol=64 * np.finfo(np.float32).eps * scale)
  dw, dc = whole.diagnostics, chunked.diagnostics
  assert int(dc.root_steps) == int(dw.root_steps) == 6
  assert int(dc.num_root_fallbacks) == int(dw.num_root_fallbacks) == 0
  np.testing.assert_allclose(float(dc.root_error), float(dw.root_error), rtol=1e-3)
  np.testing.assert_allclose(float(dc.root_residual), float(dw.root_residual), rtol=1e-3)


def test_tolerance_per_chunk_reaches_the_tolerance_everywhere():
  """With a tolerance each chunk iterates until its own blocks converge: the reported steps are the
  worst chunk's (= the whole bucket's) and every block's root is within the tolerance."""
  grads = random_grads((40,), 8, seed=24, scale=3.0)
  kw = dict(block_size=4, root_interval=4, newton_schulz_tolerance=1e-4, **F64)
  _, whole = run_jax(mbag.scale_by_mbag(root_chunk_size=0, **kw), np.zeros(40), grads)
  _, chunked = run_jax(mbag.scale_by_mbag(root_chunk_size=3, **kw), np.zeros(40), grads)
  assert int(chunked.diagnostics.root_steps) == int(whole.diagnostics.root_steps) > 5
  assert float(chunked.diagnostics.root_error) <= 1e-4
  H = np.asarray(chunked.stats[0])
  exact = np.stack([reference.sqrtm_psd(h, 0.5) for h in H])
  np.testing.assert_allclose(np.asarray(chunked.roots[0]), exact, rtol=0, atol=1e-3 * np.abs(exact).max())


def test_nonfinite_root_falls_back_in_every_chunk_at_its_own_offset():
  """A root that breaks on the first block of every call: with 7 blocks in chunks of 3 the calls
  are blocks 0-2, 3-5 and the remainder 6, so exactly blocks 0, 3 and 6 keep their old root."""
  tx = broken_scale_by_mbag(block_size=2, root_interval=1, root_chunk_size=3)
  state = tx.init({"w": jnp.zeros(14)})
  _, state = tx.update({"w": jnp.arange(1.0, 15.0)}, state)
  s = mbag.find_mbag_state(state)
  kept = [i for i in range(7) if np.allclose(np.asarray(s.roots[0][i]), np.eye(2) * 10.0)]
  assert kept == [0, 3, 6]
  assert int(s.diagnostics.num_root_fallbacks) == 3


def test_chunks_bound_the_update_temporaries():
  """The steady update's temporary buffer also holds the root branch's temporaries: whole buckets
  make it several times the root's size, chunks make it about the gradient's blocks'."""
  params = {"conv": jnp.zeros((3, 3, 256, 256))}  # 65,536 blocks of 9: a 21 MB root
  temps = {}
  for chunk in (0, None):
    tx = mbag.scale_by_mbag(block_size=9, root_chunk_size=chunk)
    state = tx.init(params)
    compiled = jax.jit(tx.update, donate_argnums=(1,)).lower(params, state, params).compile()
    temps[chunk] = compiled.memory_analysis().temp_size_in_bytes
  root_bytes = 65536 * 81 * 4
  assert temps[0] > 3 * root_bytes, temps
  assert temps[None] < root_bytes and temps[None] < temps[0] / 4, temps


def test_default_chunk_sizes():
  blocks = lambda size, *a, **k: mbag.MBAGOptions(root_chunk_size=size).root_chunk_blocks(*a, **k)  # noqa: E731
  assert blocks(None, 9, 10**6, sharded=False) == (1 << 21) // 324
  assert blocks(None, 32, 10**6, sharded=False) == 512
  assert blocks(None, 9, 10**6, sharded=True) == 10**6
  assert blocks(0, 9, 77, sharded=False) == 77
  assert blocks(5, 9, 77, sharded=True) == 5


@pytest.mark.parametrize("bad", [-1, 2.5, "4"])
def test_bad_root_chunk_size_is_named(bad):
  with pytest.raises((ValueError, TypeError), match="root_chunk_size"):
    mbag.mbag(0.1, root_chunk_size=bad)
