"""Theorem 1's bound, the lemmas behind it, the tracker against float64 NumPy, Newton-Schulz theory."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy

import mbag
import theory
from tests import compat
from tests import reference
from theory import bound
from theory import newton_schulz as ns_theory
from theory import problems
from theory import terms

EPS64 = float(np.finfo(np.float64).eps)

# ---------------------------------------------------------------- the bound


def test_bound_is_one_sympy_object_evaluated_everywhere():
  vals = dict(L=3.0, eta=0.1, logdet_ratio=40.0, G=2.0, trace_H0_sqrt=50.0, C=1.5, sum_gamma=7.0)
  vals["lambda"] = 0.04
  by_hand = (3.0 * 0.01 / 2 * 40.0 + 2 * 4.0 * 0.1 * (50.0 + 1 / 0.2) + 1.5) / 7.0
  assert bound.rhs(**vals) == pytest.approx(by_hand, rel=1e-12)
  assert bound.numerator(**vals) == pytest.approx(by_hand * 7.0, rel=1e-12)
  assert sum(bound.numerator_parts(**vals).values()) == pytest.approx(by_hand * 7.0, rel=1e-12)
  assert float(bound.rhs_jnp(*(vals[n] for n in bound.NAMES))) == pytest.approx(by_hand, rel=1e-6)
  subs = {sympy.Symbol(n, positive=True): v for n, v in vals.items()}
  assert float(bound.RHS.subs(subs)) == pytest.approx(by_hand, rel=1e-12)
  with pytest.raises(ValueError, match="missing terms"):
    bound.rhs(L=1.0)


def test_trivial_ratio_is_derived_from_the_bound():
  T, d = sympy.symbols("T d", positive=True)
  assert sympy.simplify(bound.TRIVIAL_RATIO - (T + 1) / (2 * (d + 1))) == 0
  assert bound.trivial_ratio(41, 20) == pytest.approx(1.0)
  # Any run with lhs <= G^2 and gamma_t <= eta/sqrt(lambda) stays under it.
  lam, eta, G, d_, T_ = 0.25, 0.1, 3.0, 7, 30
  worst = bound.rhs(L=0.0, eta=eta, logdet_ratio=5.0, G=G, trace_H0_sqrt=d_ / np.sqrt(lam), C=0.0,
                    sum_gamma=(T_ + 1) * eta / np.sqrt(lam), **{"lambda": lam})
  assert G**2 / worst == pytest.approx(bound.trivial_ratio(T_, d_) * 1.0, rel=0.3)
  assert G**2 / worst <= bound.trivial_ratio(T_, d_)


# ---------------------------------------------------------------- lemmas (hypothesis)


def _random_grads(seed, T, d, scale):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((T, d)) * np.exp(rng.standard_normal((T, 1)) * scale)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), T=st.integers(1, 40), d=st.integers(1, 6),
                  lam=st.floats(1e-3, 10.0), scale=st.floats(0.0, 2.0))
def test_elliptical_potential_lemma_full(seed, T, d, lam, scale):
  """sum_t g_t^T G_t^{-1} g_t <= log(|G_T|/|G_0|), each term = 1 - |G_{t-1}|/|G_t| exactly."""
  gs = _random_grads(seed, T, d, scale)
  G = lam * np.eye(d)
  total = 0.0
  for g in gs:
    logdet_prev = np.linalg.slogdet(G)[1]
    G = G + np.outer(g, g)
    term = g @ np.linalg.solve(G, g)
    # matrix determinant lemma: |G_t| = |G_{t-1}| (1 + g^T G_{t-1}^{-1} g)
    assert term == pytest.approx(1.0 - np.exp(logdet_prev - np.linalg.slogdet(G)[1]), abs=1e-9)
    total += term
  logdet = np.linalg.slogdet(G)[1] - d * np.log(lam)
  assert total <= logdet + 1e-9 * max(1.0, abs(logdet))


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), T=st.integers(1, 30), blocks=st.integers(1, 4),
                  b=st.integers(1, 4), lam=st.floats(1e-3, 10.0))
def test_elliptical_potential_lemma_block_diagonal(seed, T, blocks, b, lam):
  """The lemma for G_hat = diag(G^pi): sum over blocks of both sides, and the full-matrix
  potential is not what is bounded (the block version has its own log det)."""
  gs = _random_grads(seed, T, blocks * b, 1.0).reshape(T, blocks, b)
  G = np.broadcast_to(lam * np.eye(b), (blocks, b, b)).copy()
  total = 0.0
  for g in gs:
    G = G + g[:, :, None] * g[:, None, :]
    total += sum(gk @ np.linalg.solve(Gk, gk) for gk, Gk in zip(g, G))
  logdet = sum(np.linalg.slogdet(Gk)[1] for Gk in G) - blocks * b * np.log(lam)
  assert total <= logdet + 1e-9 * max(1.0, abs(logdet))
  # the same quantity through theory.terms (H = G^{-1} per block, as MBAG stores it)
  with compat.enable_x64(True):
    H = jnp.asarray(np.linalg.inv(G))
    mask = jnp.ones((blocks, b), bool)
    for method in ("eigh", "cholesky"):
      got = float(terms.logdet_ratio_from_inverse([H], [mask], lam, method=method))
      assert got == pytest.approx(logdet, rel=1e-9, abs=1e-9)


def test_sherman_morrison_symbolically_2x2():
  a, b_, c, g1, g2 = sympy.symbols("a b c g1 g2", real=True)
  G = sympy.Matrix([[a, b_], [b_, c]])
  g = sympy.Matrix([g1, g2])
  H = G.inv()
  sm = H - (H * g * g.T * H) / (1 + (g.T * H * g)[0, 0])
  assert sympy.simplify(sm - (G + g * g.T).inv()) == sympy.zeros(2, 2)


def test_sherman_morrison_symbolically_3x3():
  """(H^{-1} + g g^T) SM(H, g) = I for a generic symmetric 3x3 H, as a polynomial identity.

  Multiplying by H on the left and by (1 + s), s = g^T H g, clears every inverse:
  (I + H g g^T)((1 + s) H - H g g^T H) = (1 + s) H.
  """
  h = sympy.symbols("h11 h12 h13 h22 h23 h33", real=True)
  H = sympy.Matrix([[h[0], h[1], h[2]], [h[1], h[3], h[4]], [h[2], h[4], h[5]]])
  g = sympy.Matrix(sympy.symbols("g1 g2 g3", real=True))
  s = (g.T * H * g)[0, 0]
  lhs = (sympy.eye(3) + H * g * g.T) * ((1 + s) * H - H * g * g.T * H)
  assert (lhs - (1 + s) * H).expand() == sympy.zeros(3, 3)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 8),
                  log_cond=st.floats(0.0, 6.0), gscale=st.floats(-3.0, 3.0))
def test_sherman_morrison_numerically_float64(seed, b, log_cond, gscale):
  """mbag.linalg.sherman_morrison in float64 against the definition (H^{-1} + g g^T)^{-1}."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.standard_normal((b, b)))
  w = np.geomspace(1.0, 10.0**-log_cond, b)
  H = (q * w) @ q.T
  g = rng.standard_normal(b) * 10.0**gscale
  expected = np.linalg.inv(np.linalg.inv(H) + np.outer(g, g))
  with compat.enable_x64(True):
    got = np.asarray(mbag.linalg.sherman_morrison(jnp.asarray(H), jnp.asarray(g)))
  # Both sides are computed in float64. The reference inverts G = H^{-1} + g g^T (error of
  # order kappa(G) eps |H_new|); Sherman-Morrison subtracts H u u^T H / (1 + s) from H, whose
  # cancellation leaves an absolute error of order eps |H| (it dominates when |g| is large:
  # b = 1, H = 1, g = 132 gives H_new = 5.7e-5 with an error of 1e-16).
  G = np.linalg.inv(H) + np.outer(g, g)
  kappa = np.linalg.cond(G)
  scale = kappa * np.linalg.norm(expected) + b * np.linalg.norm(H)
  assert np.linalg.norm(got - expected) <= 50 * EPS64 * scale
  # and it is the inverse: G @ H_new = I to the matching accuracy
  assert np.linalg.norm(G @ got - np.eye(b)) <= 50 * EPS64 * np.linalg.norm(G, 2) * scale


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
  masks = terms.present_masks_from_state(state)
  # G_hat from its definition in float64: b -> blocks (0,1), (2,+pad); w: 2 inputs per output.
  blocks = [gs_b[:, 0:2], gs_b[:, 2:3]] + [gs_w[:, i:i + 2, j] for j in range(2) for i in (0, 2)]
  blocks = [x for x in blocks if x.shape[1]]
  lam_max = max(np.linalg.eigvalsh(lam * np.eye(x.shape[1]) + x.astype(np.float64).T @ x).max()
                for x in blocks)
  expected = eta / np.sqrt(lam_max)
  assert float(terms.gamma_exact(state.stats, masks, eta)) == pytest.approx(expected, rel=1e-4)
  assert float(terms.gamma_used(state.roots, masks, eta)) == pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------- the tracker against float64


def _reference_groups():
  # params {"b": (3,), "w": (5, 2)} with block_size 4 (tree order: b, w); w is cut per output
  # column into inputs [0:4] and [4:5] + 3 padded coordinates.
  return [("b", np.arange(3))] + [("w", np.arange(j, 10, 2)[i:i + 4]) for j in range(2) for i in (0, 4)]


def test_tracker_terms_against_float64_reference():
  rng = np.random.default_rng(0)
  params = {"w": jnp.zeros((5, 2)), "b": jnp.zeros(3)}
  lam, eta, interval = 0.1, 0.05, 3
  tx = mbag.mbag(eta, block_size=4, initial_accumulator_value=lam, root_interval=interval,
                 momentum=0.0, newton_schulz_steps=5)
  state = tx.init(params)
  ts = theory.init_tracker(params, state, eta=eta, lam=lam)
  assert ts.num_params == 13
  update = jax.jit(lambda ts, s, g, fg, loss: theory.update_tracker(
      ts, s, g, full_grad=fg, loss=loss, L=2.0, C=1.5))
  groups = _reference_groups()
  G = [lam * np.eye(len(idx)) for _, idx in groups]
  R = [np.eye(len(idx)) / np.sqrt(lam) for _, idx in groups]
  sum_exact = sum_used = eta / np.sqrt(lam)
  pot_exact = pot_used = 0.0
  gmax, fmin, lossmin = 0.0, np.inf, np.inf
  for t in range(1, 8):
    g = {"w": rng.standard_normal((5, 2)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    full = {"w": rng.standard_normal((5, 2)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    loss = float(rng.uniform(1, 2))
    _, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    ts, scalars = update(ts, state, g, full, loss)
    flat = {"w": g["w"].reshape(-1).astype(np.float64), "b": g["b"].astype(np.float64)}
    for k, (name, idx) in enumerate(groups):
      gk = flat[name][idx]
      G[k] = G[k] + np.outer(gk, gk)
      H = np.linalg.inv(G[k])
      if t % interval == 0:
        R[k] = reference.newton_schulz_np(H, 5, "sqrt")
      pot_exact += gk @ H @ gk
      pot_used += np.sum((R[k] @ gk) ** 2)
    sum_exact += eta / np.sqrt(max(np.linalg.eigvalsh(Gk).max() for Gk in G))
    sum_used += eta * min(np.linalg.eigvalsh(0.5 * (Rk + Rk.T)).min() for Rk in R)
    gmax = max(gmax, np.sqrt(sum(np.sum(x.astype(np.float64) ** 2) for x in g.values())),
               np.sqrt(sum(np.sum(x.astype(np.float64) ** 2) for x in full.values())))
    fmin = min(fmin, sum(np.sum(x.astype(np.float64) ** 2) for x in full.values()))
    lossmin = min(lossmin, loss)
  logdet = sum(np.linalg.slogdet(Gk)[1] for Gk in G) - 13 * np.log(lam)
  got = {k: float(v) for k, v in scalars.items()}
  assert got["bound/logdet_ratio"] == pytest.approx(logdet, rel=1e-4)
  assert got["bound/sum_gamma_exact"] == pytest.approx(sum_exact, rel=1e-4)
  # 5 Newton-Schulz steps (a polynomial of H) reproduced in float64: float32 rounding only.
  assert got["bound/sum_gamma_used"] == pytest.approx(sum_used, rel=2e-3)
  assert got["bound/sum_gamma_used"] > 1.2 * got["bound/sum_gamma_exact"]  # stale roots are larger
  assert got["bound/potential_exact"] == pytest.approx(pot_exact, rel=1e-4)
  assert got["bound/potential_used"] == pytest.approx(pot_used, rel=2e-3)
  assert got["bound/potential_exact"] <= got["bound/logdet_ratio"]  # the lemma, through the state
  assert got["bound/trace_H0_sqrt"] == pytest.approx(13 / np.sqrt(lam), rel=1e-6)
  assert got["bound/G"] == pytest.approx(gmax, rel=1e-5)
  assert got["bound/lhs"] == pytest.approx(fmin, rel=1e-5)
  assert got["bound/min_loss"] == pytest.approx(lossmin, rel=1e-6)
  assert got["bound/num_full_grad"] == 7
  rhs = bound.rhs(L=2.0, eta=eta, logdet_ratio=logdet, G=gmax, trace_H0_sqrt=13 / np.sqrt(lam), C=1.5,
                  sum_gamma=sum_exact, **{"lambda": lam})
  assert got["bound/rhs"] == pytest.approx(rhs, rel=1e-4)
  assert got["bound/ratio"] == pytest.approx(fmin / rhs, rel=1e-4)
  # Newton-Schulz conditions of the current H, against eigvalsh of each normalised block
  a = min((np.linalg.eigvalsh(np.linalg.inv(Gk)) / np.linalg.norm(np.linalg.inv(Gk))).min() for Gk in G)
  assert got["ns/min_normalised_eigenvalue"] == pytest.approx(a, rel=1e-3)
  assert got["ns/sufficient_condition_holds"] == 1.0
  err = max(np.linalg.norm(Rk @ Rk - np.linalg.inv(Gk)) / np.linalg.norm(np.linalg.inv(Gk))
            for Rk, Gk in zip(R, G))
  assert got["ns/root_error_vs_current_H"] == pytest.approx(err, rel=1e-2)


def test_tracker_accepts_a_gradient_norm_and_rejects_mismatches():
  params = {"w": jnp.zeros((5, 2)), "b": jnp.zeros(3)}
  tx = mbag.mbag(0.1, block_size=4, initial_accumulator_value=0.1, momentum=0.0)
  state = tx.init(params)
  ts = theory.init_tracker(params, state, eta=0.1, lam=0.1)
  g = jax.tree.map(jnp.ones_like, params)
  _, state = tx.update(g, state, params)
  ts_n, scalars = theory.update_tracker(ts, state, jnp.float32(7.0))
  assert float(scalars["bound/grad_norm"]) == 7.0 and "bound/potential_exact" not in scalars
  assert float(ts_n.max_grad_norm) == 7.0
  with pytest.raises(ValueError, match="grads must be a pytree like the params"):
    theory.update_tracker(ts, state, {"grad_norm": jnp.float32(1.0)})
  with pytest.raises(ValueError, match="no block layout"):
    theory.init_tracker(params, tx.init(params), eta=0.1, lam=0.1, block_size=8)
  with pytest.raises(ValueError, match="H_0 = I/lam"):
    theory.init_tracker(params, tx.init(params), eta=0.1, lam=0.01)
  with pytest.raises(ValueError, match="eta must be"):
    theory.init_tracker(params, tx.init(params), eta=-1.0, lam=0.1)
  with pytest.raises(ValueError, match="no roots"):
    theory.init_tracker(params, mbag.mbag_n(0.1, block_size=4).init(params), eta=0.1, lam=0.01)
  # params=None: masks come from the state; only norms are accepted
  ts0 = theory.init_tracker(None, tx.init(params), eta=0.1, lam=0.1)
  assert ts0.num_params == 13


def test_tracker_uses_the_step_size_of_each_step():
  """gamma_t = eta_t sqrt(lambda_min(H_t)) with a schedule's eta_t; eta keeps the largest."""
  params = {"w": jnp.zeros((4, 2))}
  tx = mbag.mbag(0.1, block_size=4, initial_accumulator_value=0.5, momentum=0.0, root_interval=1,
                 root_method="eigh")
  state = tx.init(params)
  ts = theory.init_tracker(params, state, eta=0.2, lam=0.5)
  g = {"w": jnp.arange(8.0).reshape(4, 2)}
  _, state = tx.update(g, state, params)
  ts_a, a = theory.update_tracker(ts, state, g, eta=0.05)
  _, b = theory.update_tracker(ts, state, g)  # the fixed eta = 0.2
  H = np.asarray(mbag.find_mbag_state(state).stats[0], np.float64)
  want = 0.05 * np.sqrt(min(np.linalg.eigvalsh(h)[0] for h in H))
  assert float(a["bound/gamma_exact"]) == pytest.approx(want, rel=1e-5)
  assert float(b["bound/gamma_exact"]) == pytest.approx(4 * want, rel=1e-5)
  assert float(a["bound/sum_gamma_exact"]) == pytest.approx(0.2 / np.sqrt(0.5) + want, rel=1e-5)
  assert float(ts_a.eta) == pytest.approx(0.2)  # the largest step size so far
  ts_c, _ = theory.update_tracker(ts_a, state, g, eta=0.3)
  assert float(ts_c.eta) == pytest.approx(0.3)


# ---------------------------------------------------------------- Newton-Schulz theory


def test_scalar_iteration_fixed_point_and_quadratic_convergence():
  facts = ns_theory.scalar_fixed_point_facts()
  a = sympy.Symbol("a", positive=True)
  x, y = sympy.symbols("x y", positive=True)
  assert facts["fixed_points"] == [{x: sympy.sqrt(a), y: 1 / sympy.sqrt(a)}]
  assert facts["fixed_point_curve"] == [{y: 1 / x}]
  assert facts["jacobian_eigenvalues"] == {0, 1}
  assert facts["derivative_at_fixed_point"] == [0]
  assert facts["second_derivative_at_fixed_point"][0] != 0
  assert facts["z_derivative_at_1"] == 0
  assert facts["z_error_constant"] == sympy.Rational(3, 4)


@pytest.mark.parametrize("tolerance", [1e-3, 1e-8])
def test_predicted_steps_match_the_matrix_iteration(tolerance):
  """The scalar prediction is the first k with ||I - Y_k X_k||_F <= tol for the matrix."""
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
  A = (q * np.geomspace(1e-3, 1.0, 6)) @ q.T
  with compat.enable_x64(True):
    cond = ns_theory.conditions([jnp.asarray(A)[None]], tolerance=tolerance)
    k = int(cond["ns/predicted_steps"])

    def deviation(steps):
      s, r = mbag.linalg.newton_schulz(jnp.asarray(A), steps)
      return np.linalg.norm(np.eye(6) - np.asarray(r) @ np.asarray(s))

    assert deviation(k) <= tolerance < deviation(k - 1)
  assert cond["ns/sufficient_condition_holds"] == 1.0
  w = np.linalg.eigvalsh(A) / np.linalg.norm(A)
  assert float(cond["ns/min_normalised_eigenvalue"]) == pytest.approx(w.min(), rel=1e-9)
  assert float(cond["ns/max_norm_I_minus_A"]) == pytest.approx(1 - w.min(), rel=1e-9)


def test_conditions_ignore_padding_and_measure_the_root():
  H = np.zeros((1, 4, 4))
  H[0, :3, :3] = np.diag([4.0, 1.0, 0.25])  # coordinate 3 is padding
  R = np.zeros_like(H)
  R[0, :3, :3] = np.diag([2.0, 1.0, 0.6])  # wrong on the last present coordinate
  with compat.enable_x64(True):
    cond = ns_theory.conditions([jnp.asarray(H)], [jnp.asarray(R)])
  nrm = np.sqrt(16 + 1 + 1 / 16)
  assert float(cond["ns/min_normalised_eigenvalue"]) == pytest.approx(0.25 / nrm, rel=1e-12)
  assert float(cond["ns/root_residual"]) == pytest.approx(abs(0.36 - 0.25) / nrm, rel=1e-12)


# ---------------------------------------------------------------- problems


def test_hessian_power_iteration_and_exact_constants():
  with compat.enable_x64(True):
    quad = problems.quadratic()
    est = float(problems.hessian_norm_estimate(quad.loss, quad.init, jax.random.PRNGKey(0), iters=200))
    assert est == pytest.approx(quad.L, rel=1e-3) and est <= quad.L * (1 + 1e-9)
    logi = problems.logistic_regression()
    key = jax.random.PRNGKey(1)
    theta = jax.tree.map(lambda x: 3.0 * jax.random.normal(key, x.shape, x.dtype), logi.init)
    for point in (logi.init, theta):
      est = float(problems.hessian_norm_estimate(logi.loss, point, key, iters=100))
      assert est <= logi.L  # the proven constant bounds the Hessian everywhere
    assert est > 0.05 * logi.L
    assert 0.0 < logi.f_star < float(logi.loss(logi.init))
    g = jax.grad(logi.loss)(logi.init)
    assert float(terms.global_norm(g)) > 0.1  # theta_0 = 0 is not stationary: C > 0 means something
