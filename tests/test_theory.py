"""Theorem 1's bound, its terms, the lemmas behind it, and the verification command."""

import json

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy

import mbag
import theory
from theory import bound
from theory import newton_schulz as ns_theory
from theory import terms
from theory import verify

# ---------------------------------------------------------------- the bound


def test_bound_is_one_sympy_object_evaluated_everywhere():
  vals = dict(L=3.0, eta=0.1, logdet_ratio=40.0, G=2.0, trace_H0_sqrt=50.0, C=1.5, sum_gamma=7.0)
  vals["lambda"] = 0.04
  by_hand = (3.0 * 0.01 / 2 * 40.0 + 2 * 4.0 * 0.1 * (50.0 + 1 / 0.2) + 1.5) / 7.0
  assert bound.rhs(**vals) == pytest.approx(by_hand, rel=1e-12)
  assert float(bound.rhs_jnp(*(vals[n] for n in bound.NAMES))) == pytest.approx(by_hand, rel=1e-6)
  subs = {sympy.Symbol(n, positive=True): v for n, v in vals.items()}
  assert float(bound.RHS.subs(subs)) == pytest.approx(by_hand, rel=1e-12)
  with pytest.raises(ValueError, match="missing terms"):
    bound.rhs(L=1.0)


# ---------------------------------------------------------------- lemmas (hypothesis)


def _random_grads(seed, T, d, scale):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((T, d)) * np.exp(rng.standard_normal((T, 1)) * scale)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), T=st.integers(1, 40), d=st.integers(1, 6),
                  lam=st.floats(1e-3, 10.0), scale=st.floats(0.0, 2.0))
def test_elliptical_potential_lemma_full(seed, T, d, lam, scale):
  """sum_t g_t^T G_t^{-1} g_t <= log(|G_T| / |G_0|) for G_t = G_{t-1} + g_t g_t^T, G_0 = lam I."""
  gs = _random_grads(seed, T, d, scale)
  G = lam * np.eye(d)
  total = 0.0
  for g in gs:
    G = G + np.outer(g, g)
    total += g @ np.linalg.solve(G, g)
  logdet = np.linalg.slogdet(G)[1] - d * np.log(lam)
  assert total <= logdet + 1e-9 * max(1.0, abs(logdet))


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), T=st.integers(1, 30), blocks=st.integers(1, 4),
                  b=st.integers(1, 4), lam=st.floats(1e-3, 10.0))
def test_elliptical_potential_lemma_block_diagonal(seed, T, blocks, b, lam):
  """The same lemma for the block-diagonal statistic G_hat (sum over blocks of each side)."""
  gs = _random_grads(seed, T, blocks * b, 1.0).reshape(T, blocks, b)
  G = np.broadcast_to(lam * np.eye(b), (blocks, b, b)).copy()
  total = 0.0
  for g in gs:
    G = G + g[:, :, None] * g[:, None, :]
    total += sum(gk @ np.linalg.solve(Gk, gk) for gk, Gk in zip(g, G))
  logdet = sum(np.linalg.slogdet(Gk)[1] for Gk in G) - blocks * b * np.log(lam)
  assert total <= logdet + 1e-9 * max(1.0, abs(logdet))


def test_sherman_morrison_symbolically():
  a, b_, c, g1, g2 = sympy.symbols("a b c g1 g2", real=True)
  G = sympy.Matrix([[a, b_], [b_, c]])
  g = sympy.Matrix([g1, g2])
  H = G.inv()
  sm = H - (H * g * g.T * H) / (1 + (g.T * H * g)[0, 0])
  assert sympy.simplify(sm - (G + g * g.T).inv()) == sympy.zeros(2, 2)


@jax.jit
def _mbag_state_after(gs_w, gs_b, lam):
  """Algorithm 1's preconditioner state (exact root every step) after the given gradients."""
  tx = mbag.scale_by_mbag(block_size=2, initial_accumulator_value=lam, root_method="eigh",
                          root_interval=1)
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}

  def step(state, g):
    return tx.update({"w": g[0], "b": g[1]}, state)[1], None

  return jax.lax.scan(step, tx.init(params), (gs_w, gs_b))[0]


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 4), lam=st.floats(1e-2, 1.0),
                  eta=st.floats(1e-3, 1.0))
def test_gamma_of_exact_root_is_eta_over_sqrt_lambda_max(seed, steps, lam, eta):
  """gamma_t = lambda_min(eta H_hat^{1/2}) = eta / sqrt(lambda_max(G_hat)) for the exact root."""
  rng = np.random.default_rng(seed)
  gs_w = rng.standard_normal((steps, 3, 2)).astype(np.float32)
  gs_b = rng.standard_normal((steps, 3)).astype(np.float32)
  state = _mbag_state_after(gs_w, gs_b, jnp.float32(lam))
  masks = terms.present_masks(state)
  # G_hat from its definition, in float64: blocks of 2 consecutive inputs per output of w, and b.
  blocks = [gs_b[:, 0:2], gs_b[:, 2:3]] + [gs_w[:, i:i + 2, j] for j in range(2) for i in (0, 2)]
  lam_max = max(np.linalg.eigvalsh(lam * np.eye(x.shape[1]) + x.astype(np.float64).T @ x).max()
                for x in blocks)
  expected = eta / np.sqrt(lam_max)
  assert float(terms.gamma_exact(state, masks, eta)) == pytest.approx(expected, rel=1e-4)
  assert float(terms.gamma_used(state, masks, eta)) == pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------- terms against float64


def test_tracker_terms_against_float64_reference():
  rng = np.random.default_rng(0)
  params = {"w": jnp.zeros((5, 2)), "b": jnp.zeros(3)}  # block 4: w padded (5 -> 8 per column)
  lam, eta = 0.1, 0.05
  tx = mbag.mbag(eta, block_size=4, initial_accumulator_value=lam, root_interval=3, momentum=0.0)
  state = tx.init(params)
  ts = theory.init_tracker(params, state, eta=eta, lam=lam)
  groups = [("b", np.arange(3))] + [("w", np.arange(j, 10, 2)[i:i + 4]) for j in range(2) for i in (0, 4)]
  G = {k: lam * np.eye(len(idx)) for k, (_, idx) in enumerate(groups)}
  gamma_sum_exact, gamma_sum_used = eta / np.sqrt(lam), eta / np.sqrt(lam)
  roots = {k: np.eye(len(idx)) / np.sqrt(lam) for k, (_, idx) in enumerate(groups)}
  for t in range(1, 7):
    g = {"w": rng.standard_normal((5, 2)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    _, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    ts, scalars = theory.update_tracker(ts, state, g)
    flat = {"w": g["w"].reshape(-1), "b": g["b"]}
    for k, (name, idx) in enumerate(groups):
      G[k] = G[k] + np.outer(flat[name][idx], flat[name][idx])
      if t % 3 == 0:
        w, V = np.linalg.eigh(G[k])
        roots[k] = (V / np.sqrt(w)) @ V.T
    gamma_sum_exact += eta / np.sqrt(max(np.linalg.eigvalsh(Gk).max() for Gk in G.values()))
    gamma_sum_used += eta * min(np.linalg.eigvalsh(R).min() for R in roots.values())
  logdet = sum(np.linalg.slogdet(Gk)[1] for Gk in G.values()) - 13 * np.log(lam)
  assert float(scalars["bound/logdet_ratio"]) == pytest.approx(logdet, rel=1e-4)
  assert float(scalars["bound/sum_gamma_exact"]) == pytest.approx(gamma_sum_exact, rel=1e-4)
  # The used root is 5 Newton-Schulz steps, not exact: agree to its few-percent error.
  assert float(scalars["bound/sum_gamma_used"]) == pytest.approx(gamma_sum_used, rel=0.1)
  assert float(scalars["bound/trace_H0_sqrt"]) == pytest.approx(13 / np.sqrt(lam))


# ---------------------------------------------------------------- Newton-Schulz theory


def test_scalar_iteration_fixed_point_and_quadratic_convergence():
  facts = ns_theory.scalar_fixed_point_facts()
  a = sympy.Symbol("a", positive=True)
  x, y = sympy.symbols("x y", positive=True)
  assert facts["fixed_points"] == [{x: sympy.sqrt(a), y: 1 / sympy.sqrt(a)}]
  assert facts["derivative_at_fixed_point"] == [0]
  assert facts["second_derivative_at_fixed_point"][0] != 0


def test_predicted_steps_match_the_matrix_iteration():
  """The scalar prediction on the smallest normalised eigenvalue is what the matrix needs."""
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
  A = (q * np.geomspace(1e-3, 1.0, 6)) @ q.T
  cond = ns_theory.conditions([jnp.asarray(A, jnp.float32)[None]], tolerance=1e-3)
  k = int(cond["ns/predicted_steps"])
  assert cond["ns/sufficient_condition_holds"] == 1.0
  a_min = np.linalg.eigvalsh(A).min() / np.linalg.norm(A)
  assert cond["ns/min_normalised_eigenvalue"] == pytest.approx(a_min, rel=1e-3)

  def worst_error(steps):
    with jax.enable_x64(True):
      s, _ = mbag.linalg.newton_schulz(jnp.asarray(A), steps)
    w, V = np.linalg.eigh(A)
    return np.max(np.abs(np.einsum("ik,ij,jk->k", V, np.asarray(s), V) / np.sqrt(w) - 1))

  assert worst_error(k) <= 1e-3 < worst_error(k - 1)


# ---------------------------------------------------------------- the command


def test_verify_quick_writes_records_that_recompute(tmp_path):
  assert verify.main(["--quick", "--out", str(tmp_path)]) == 0
  records = json.loads((tmp_path / "verify.json").read_text())
  assert {r["problem"] for r in records} == {"quadratic", "logistic_digits"}
  for r in records:
    for key in ("problem", "T", "seed", "lhs", "rhs", "holds", "L_exact", "logdet_ratio", "sum_gamma",
                "trace_H0_sqrt", "G", "L", "C", "eta", "lambda"):
      assert key in r
    assert r["rhs"] == pytest.approx(bound.rhs(**{k: r[k] for k in bound.NAMES}), rel=1e-12)
    assert r["holds"] == (r["lhs"] <= r["rhs"])
  theorem = [r for r in records if r["setting"] == "theorem"]
  assert theorem and all(r["holds"] for r in theorem)
  # The exact root is used in the theorem setting: its two gamma sums coincide.
  for r in theorem:
    assert r["sum_gamma_used_root"] == pytest.approx(r["sum_gamma_exact_root"], rel=1e-3)
  assert (tmp_path / "theory_terms.png").stat().st_size > 10_000
