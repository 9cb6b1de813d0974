"""AdaBlock against a plain float64 NumPy version of its update, and against optax.adam."""

import itertools

import jax
import jax.numpy as jnp
import mbag
import numpy as np
import optax
import pytest

from experiments.optimizers import adablock as adablock_lib


def groups_of(shape, block_size):
  """The authors' groups for one leaf, as lists of multi-indices (written independently of mbag)."""
  if len(shape) <= 1 or (len(shape) == 4 and shape[0] * shape[1] == 1):
    return [[idx] for idx in np.ndindex(*shape)]
  if len(shape) == 4:  # kh*kw taps of one (c_in, c_out) pair
    kh, kw, cin, cout = shape
    return [[(h, w, i, o) for h in range(kh) for w in range(kw)]
            for o in range(cout) for i in range(cin)]
  n_in, m_out = shape  # consecutive outputs of one input neuron
  b = min(block_size, m_out)
  return [[(i, j) for j in range(j0, min(j0 + b, m_out))]
          for i in range(n_in) for j0 in range(0, m_out, b)]


def adablock_reference(grads, *, block_size, b1, b2, eps, lr, root_interval=1):
  """Updates -lr * (V_hat^{1/2} + eps I)^{-1} m_hat per group, float64, P refreshed every root_interval.

  Eigenvalues of V_hat are raised to b * eps_f32 * lambda_max, b the (padded) block
  size, as the implementation does: that floor is below float32 eigh's resolution,
  but a stale P computed from a rank-deficient V_hat applies it to new directions.
  """
  groups = {k: groups_of(g.shape, block_size) for k, g in grads[0].items()}
  padded = {k: max(len(idx) for idx in gs) for k, gs in groups.items()}
  f32 = float(np.finfo(np.float32).eps)
  m = {k: [np.zeros(len(idx)) for idx in gs] for k, gs in groups.items()}
  V = {k: [np.zeros((len(idx), len(idx))) for idx in gs] for k, gs in groups.items()}
  P = {k: [None] * len(gs) for k, gs in groups.items()}
  out = []
  for t, step in enumerate(grads, start=1):
    upd = {}
    for k, g in step.items():
      u = np.zeros(g.shape)
      for j, idx in enumerate(groups[k]):
        gj = np.array([g[i] for i in idx], np.float64)
        m[k][j] = b1 * m[k][j] + (1 - b1) * gj
        V[k][j] = b2 * V[k][j] + (1 - b2) * np.outer(gj, gj)
        if (t - 1) % root_interval == 0 or len(idx) == 1:
          w, Q = np.linalg.eigh(V[k][j] / (1 - b2**t))
          w = np.maximum(w, padded[k] * f32 * max(w.max(), 0))
          P[k][j] = (Q / (np.sqrt(np.maximum(w, 0)) + eps)) @ Q.T
        d = P[k][j] @ (m[k][j] / (1 - b1**t))
        for i, val in zip(idx, d):
          u[i] = -lr * val
      upd[k] = u
    out.append(upd)
  return out


SHAPES = {"dense": (3, 6), "bias": (6,), "conv": (3, 3, 2, 2), "pointwise": (1, 1, 2, 3)}


def random_grads(steps, seed=0):
  rng = np.random.default_rng(seed)
  return [{k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(steps)]


def run(tx, grads):
  params = {k: jnp.zeros(v.shape) for k, v in grads[0].items()}
  state = tx.init(params)
  update = jax.jit(tx.update)
  result = []
  for g in grads:
    u, state = update({k: jnp.asarray(v) for k, v in g.items()}, state)
    result.append(jax.tree.map(np.asarray, u))
  return result, state


def max_relative_error(got, want):
  return max(np.linalg.norm(g[k] - w[k]) / np.linalg.norm(w[k]) for g, w in zip(got, want) for k in w)


@pytest.mark.parametrize("root_interval", [1, 3])
def test_matches_reference(root_interval):
  """Dense blocks of 4 (6 outputs: one full block and one padded), 9-tap conv blocks, diagonal rest.

  eps = 1e-3 against gradients of norm ~2 per block keeps (V^{1/2} + eps I) at a
  condition number <= ~2e3, so float32 eigh gives ~1e-7 * 2e3 relative errors
  (measured max 1.1e-4 and 6.8e-5 for root_interval 1 and 3; bound 4 kappa eps_f32).
  """
  grads = random_grads(8)
  hp = dict(block_size=4, b1=0.9, b2=0.99, eps=1e-3)
  got, _ = run(adablock_lib.adablock(0.1, root_interval=root_interval, **hp), grads)
  want = adablock_reference(grads, lr=0.1, root_interval=root_interval, **hp)
  assert max_relative_error(got, want) < 5e-4


def test_block_size_one_is_adam():
  grads = [{k: v for k, v in g.items() if k in ("dense", "bias")} for g in random_grads(10)]
  got, _ = run(adablock_lib.adablock(1e-2, block_size=1, eps=1e-8), grads)
  want, _ = run(optax.adam(1e-2, eps=1e-8), grads)
  for g, w in zip(got, want):
    for k in w:
      np.testing.assert_allclose(g[k], w[k], rtol=2e-6, atol=1e-9)


def test_rank_one_block_gives_normalised_gradient():
  """Step 1 on one block of 32: V_hat = g g^T, so the update is g / (|g| + eps) exactly.

  With eps = 1e-8 and |g| = 10, float32 eigh leaves eigenvalues ~1e-5 of either
  sign on the null space; without the relative eigenvalue floor the rounding-level
  components of g there are divided by ~eps (measured: error norm 180 against an
  exact update of norm 1; 8e-5 with the floor).
  """
  g = np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)
  g *= 10 / np.linalg.norm(g)
  tx = adablock_lib.scale_by_adablock(block_size=32, eps=1e-8)
  u, _ = tx.update({"w": jnp.asarray(g)}, tx.init({"w": jnp.zeros((1, 32))}))
  np.testing.assert_allclose(np.asarray(u["w"]), g / 10, atol=1e-4)


def test_grouping_is_column_wise_and_follows_the_authors():
  assert adablock_lib.adablock_block_spec((5, 70), 32) == mbag.BlockSpec((0, 1), 70, 32)
  assert adablock_lib.adablock_block_spec((5, 10), 32) == mbag.BlockSpec((0, 1), 10, 10)
  assert adablock_lib.adablock_block_spec((3, 3, 4, 8), 32) == mbag.BlockSpec((3, 2, 0, 1), 9, 9)
  assert adablock_lib.adablock_block_spec((1, 1, 4, 8), 32).block_size == 1
  assert adablock_lib.adablock_block_spec((7,), 32).block_size == 1
  # A (2, 4) kernel with blocks of 2: each block holds consecutive outputs of one input neuron.
  w = jnp.arange(8.0).reshape(2, 4)
  layout = mbag.blocks.make_layout(w, 2, lambda path, shape: adablock_lib.adablock_block_spec(shape, 2))
  np.testing.assert_array_equal(mbag.blocks.tree_to_buckets(w, layout)[0], [[0, 1], [2, 3], [4, 5], [6, 7]])


def test_state_shapes():
  _, state = run(adablock_lib.scale_by_adablock(block_size=4, root_interval=2), random_grads(1))
  # Buckets: dense blocks of 4 (3 rows x 2 blocks), bias+pointwise diagonal (6 + 6), conv 9-tap (4).
  shapes = sorted(v.shape for v in state.nu)
  assert shapes == [(4, 9, 9), (6, 4, 4), (12, 1, 1)]
  assert sorted(p.shape for p in state.preconditioner) == [(4, 9, 9), (6, 4, 4)]
  assert int(state.count) == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(block_size=0), "block_size"), (dict(b1=1.0), "b1"), (dict(b2=-0.1), "b2"),
    (dict(eps=-1.0), "eps"), (dict(root_interval=0), "root_interval"),
    (dict(relative_eigenvalue_floor=2.0), "relative_eigenvalue_floor"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, match):
  with pytest.raises(ValueError, match=match):
    adablock_lib.adablock(0.1, **kwargs)
