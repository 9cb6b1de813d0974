"""Shampoo against a plain float64 NumPy version of Gupta et al.'s update (Kronecker products)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.optimizers import shampoo as shampoo_lib

F32_EPS = float(np.finfo(np.float32).eps)


def inv_root(S, power):
  w, Q = np.linalg.eigh(S)
  return (Q * w**power) @ Q.T


def shampoo_reference(grads, *, eps, t1, t2, momentum, lr, max_dim=10**9, tensor_mode="matrix"):
  """Updates ``-lr v_t`` for a list of gradient dicts; preconditioning by an explicit Kronecker product.

  Returns (updates, history) where history[t] holds each leaf's (stats, roots) after step t+1.
  """
  state = {}
  for name, g in grads[0].items():
    shape = g.shape if g.ndim else (1,)
    if tensor_mode == "matrix" and len(shape) > 2:
      shape = (int(np.prod(shape[:-1])), shape[-1])
    stats = [eps * (np.eye(d) if d <= max_dim else np.ones(d)) for d in shape]
    state[name] = dict(shape=shape, stats=stats, roots=[None] * len(shape), v=np.zeros(g.shape))
  updates, history = [], []
  for t, step_grads in enumerate(grads, start=1):
    out, snap = {}, {}
    for name, g in step_grads.items():
      s = state[name]
      G = np.asarray(g, np.float64).reshape(s["shape"])
      k = G.ndim
      if (t - 1) % t1 == 0:
        for i, d in enumerate(s["shape"]):
          unfolded = np.moveaxis(G, i, 0).reshape(d, -1)
          gram = unfolded @ unfolded.T
          s["stats"][i] = s["stats"][i] + (gram if d <= max_dim else np.diag(gram))
      if (t - 1) % t2 == 0:
        s["roots"] = [inv_root(S, -1 / (2 * k)) if S.ndim == 2 else S ** (-1 / (2 * k))
                      for S in s["stats"]]
      kron = np.ones((1, 1))
      for R in s["roots"]:
        kron = np.kron(kron, R if R.ndim == 2 else np.diag(R))
      P = (kron @ G.reshape(-1)).reshape(g.shape)
      s["v"] = momentum * s["v"] + P
      out[name] = -lr * s["v"]
      snap[name] = ([S.copy() for S in s["stats"]], [R.copy() for R in s["roots"]])
    updates.append(out)
    history.append(snap)
  return updates, history


def random_grads(shapes, steps, seed=0):
  rng = np.random.default_rng(seed)
  return [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
          for _ in range(steps)]


def run(tx, grads):
  params = {k: jnp.zeros(v.shape) for k, v in grads[0].items()}
  state = tx.init(params)
  update = jax.jit(tx.update)
  updates, states = [], []
  for g in grads:
    u, state = update({k: jnp.asarray(v) for k, v in g.items()}, state)
    updates.append(jax.tree.map(np.asarray, u))
    states.append(state)
  return updates, states


def relative_error(a, b):
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def kappa_bound(history, power):
  """Error budget of float32 eigh-based roots: c * |power| * d * kappa * eps_f32 (c = 10).

  float32 eigh perturbs eigenvalues by ~ d eps lambda_max, i.e. the smallest by a
  relative d kappa eps, and ``lambda^power`` turns that into |power| d kappa eps.
  """
  worst = max(S.shape[0] * (np.linalg.cond(S) if S.ndim == 2 else S.max() / S.min())
              for snap in history for stats, _ in snap.values() for S in stats)
  return 10 * abs(power) * worst * F32_EPS


HP = dict(statistics_interval=2, root_interval=3, epsilon=0.1, momentum=0.9)


def make(**kw):
  hp = dict(HP, **kw)
  return shampoo_lib.shampoo(0.5, **hp)


def reference(grads, **kw):
  hp = dict(HP, **kw)
  return shampoo_reference(grads, eps=hp["epsilon"], t1=hp["statistics_interval"],
                           t2=hp["root_interval"], momentum=hp["momentum"], lr=0.5,
                           max_dim=hp.get("max_preconditioner_dim", 10**9),
                           tensor_mode=hp.get("tensor_mode", "matrix"))


def test_matrix_and_vector_match_reference_over_periodic_refreshes():
  """7 steps with T1=2, T2=3: statistics at t=1,3,5,7, roots at t=1,4,7, momentum 0.9."""
  grads = random_grads({"w": (3, 4), "b": (4,)}, 7)
  got, _ = run(make(), grads)
  want, history = reference(grads)
  tol = kappa_bound(history, 0.25)
  assert tol < 1e-3
  for t, (g, w) in enumerate(zip(got, want)):
    for k in w:
      assert relative_error(g[k], w[k]) < tol, (t, k)


def test_statistics_and_roots_refresh_only_on_their_steps():
  grads = random_grads({"w": (3, 4)}, 7)
  _, states = run(shampoo_lib.scale_by_shampoo(2, 3, 0.1), grads)
  _, history = reference(grads)
  L = [np.asarray(s.stats[0][0]) for s in states]
  Lroot = [np.asarray(s.roots[0][0]) for s in states]
  # Statistics change at t = 1, 3, 5, 7 only (indices 0, 2, 4, 6); roots at t = 1, 4, 7.
  for i in (1, 3, 5):
    np.testing.assert_array_equal(L[i], L[i - 1])
  for i in (2, 4, 6):
    assert np.abs(L[i] - L[i - 1]).max() > 0.1
  for i in (1, 2, 4, 5):
    np.testing.assert_array_equal(Lroot[i], Lroot[i - 1])
  for i in (3, 6):
    assert np.abs(Lroot[i] - Lroot[i - 1]).max() > 1e-3
  for t in range(7):
    np.testing.assert_allclose(L[t], history[t]["w"][0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Lroot[t], history[t]["w"][1][0], rtol=1e-4, atol=1e-5)
  assert int(states[-1].count) == 7 and int(states[-1].num_root_fallbacks) == 0


def test_large_axes_fall_back_to_diagonal_factors():
  grads = random_grads({"w": (3, 5)}, 4)
  tx = make(max_preconditioner_dim=4)
  got, states = run(tx, grads)
  assert [s.shape for s in states[0][0].stats[0]] == [(3, 3), (5,)]
  want, history = reference(grads, max_preconditioner_dim=4)
  tol = kappa_bound(history, 0.25)
  for g, w in zip(got, want):
    assert relative_error(g["w"], w["w"]) < tol


def test_conv_kernels_are_reshaped_to_matrices():
  grads = random_grads({"conv": (3, 3, 2, 4)}, 3)
  got, states = run(make(), grads)
  assert [s.shape for s in states[0][0].stats[0]] == [(18, 18), (4, 4)]
  want, history = reference(grads)
  for g, w in zip(got, want):
    assert relative_error(g["conv"], w["conv"]) < kappa_bound(history, 0.25)


def test_tensor_mode_uses_one_factor_per_axis_with_power_one_over_2k():
  grads = random_grads({"t": (2, 3, 2)}, 4)
  got, states = run(make(tensor_mode="tensor"), grads)
  assert [s.shape for s in states[0][0].stats[0]] == [(2, 2), (3, 3), (2, 2)]
  want, history = reference(grads, tensor_mode="tensor")
  for g, w in zip(got, want):
    assert relative_error(g["t"], w["t"]) < kappa_bound(history, 1 / 6)


def test_first_step_is_normalised_gradient_for_rank_one_statistics():
  """t=1 with tiny eps: L^{-1/4} G R^{-1/4} = G / ||G||_F for G = a b^T (up to eps).

  kappa(L) ~ 2e10 here: without the relative eigenvalue floor, float32 eigh noise
  amplified by (lambda_max / eps)^{1/4} per factor gives errors of 6e-4 (measured).
  """
  a, b = np.array([1.0, 2.0, 2.0]), np.array([3.0, 0.0, 4.0, 0.0])
  G = 10.0 * np.outer(a, b)
  tx = shampoo_lib.scale_by_shampoo(1, 1, 1e-6)
  state = tx.init({"w": jnp.zeros((3, 4))})
  u, _ = tx.update({"w": jnp.asarray(G, jnp.float32)}, state)
  np.testing.assert_allclose(np.asarray(u["w"]), G / np.linalg.norm(G), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(statistics_interval=0), "statistics_interval"),
    (dict(root_interval=2.5), "root_interval"),
    (dict(epsilon=0.0), "epsilon"),
    (dict(momentum=1.0), "momentum"),
    (dict(max_preconditioner_dim=0), "max_preconditioner_dim"),
    (dict(tensor_mode="blocks"), "tensor_mode"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, match):
  with pytest.raises(ValueError, match=match):
    shampoo_lib.shampoo(0.1, **kwargs)


def test_works_with_schedules_and_bf16_params():
  tx = shampoo_lib.shampoo(optax.linear_schedule(0.1, 0.0, 10), statistics_interval=1, root_interval=1)
  params = {"w": jnp.ones((2, 3), jnp.bfloat16)}
  state = tx.init(params)
  u, state = jax.jit(tx.update)({"w": jnp.ones((2, 3), jnp.bfloat16)}, state)
  assert u["w"].dtype == jnp.bfloat16
  # G = ones(2, 3): L = eps I + 3 * 11^T, R = eps I + 2 * 11^T -> P = G / sqrt(6); lr(0) = 0.1.
  np.testing.assert_allclose(np.asarray(u["w"], np.float32), -0.1 / np.sqrt(6), rtol=1e-2)
