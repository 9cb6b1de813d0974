"""Reference and property tests for mbag.linalg (Sherman-Morrison, Newton-Schulz, eigh roots)."""

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbag import linalg
from tests import compat

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def spd_with_spectrum(rng, eigenvalues):
  q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
  return (q * np.asarray(eigenvalues)) @ q.T


def exact_root(A, power):
  w, v = np.linalg.eigh(A)
  return (v * w ** power) @ v.T


def scalar_newton_schulz(a, steps):
  """(x_k, y_k) of the scalar coupled iteration started at x_0 = a, y_0 = 1 (float64)."""
  x, y = a, 1.0
  for _ in range(steps):
    t = 0.5 * (3.0 - y * x)
    x, y = x * t, t * y
  return x, y


def predicted_relative_errors(a_normalised, steps):
  """Spectral-norm relative errors of X_k ~ A^{1/2} and Y_k ~ A^{-1/2}.

  For symmetric A the iteration acts on each normalised eigenvalue a
  independently, so ||X_k - A^{1/2}||_2 = max_a |x_k(a) - sqrt(a)| (and the same
  for Y); divide by the norm of the exact root.
  """
  a = np.asarray(a_normalised, np.float64)
  x, y = scalar_newton_schulz(a, steps)
  err_sqrt = np.max(np.abs(x - np.sqrt(a))) / np.sqrt(a.max())
  err_inv = np.max(np.abs(y - 1 / np.sqrt(a))) / (1 / np.sqrt(a.min()))
  return err_sqrt, err_inv


# ---------------------------------------------------------------- Sherman-Morrison


def test_sherman_morrison_matches_direct_inverse_float64():
  rng = np.random.default_rng(0)
  G = np.stack([spd_with_spectrum(rng, np.geomspace(1e-2, 1e2, 6)) for _ in range(4)])
  g = rng.standard_normal((4, 6))
  with compat.enable_x64(True):
    H_new = np.asarray(linalg.sherman_morrison(jnp.asarray(np.linalg.inv(G)), jnp.asarray(g)))
  expected = np.linalg.inv(G + g[:, :, None] * g[:, None, :])
  cond = np.linalg.cond(G)
  assert np.max(np.abs(H_new - expected) / np.abs(expected).max()) < 50 * cond.max() * EPS64


def test_sherman_morrison_keeps_exact_symmetry_in_float32():
  rng = np.random.default_rng(1)
  H = jnp.asarray(np.stack([np.linalg.inv(spd_with_spectrum(rng, np.geomspace(0.1, 10, 5))) for _ in range(3)]),
                  jnp.float32)
  H = 0.5 * (H + jnp.swapaxes(H, -1, -2))
  for _ in range(20):
    H = linalg.sherman_morrison(H, jnp.asarray(rng.standard_normal((3, 5)), jnp.float32))
  np.testing.assert_array_equal(np.asarray(H), np.asarray(jnp.swapaxes(H, -1, -2)))


def test_sherman_morrison_denominator_and_guard():
  H = jnp.eye(2)[None] * 2.0
  g = jnp.array([[1.0, 2.0]])
  _, den = linalg.sherman_morrison_with_denominator(H, g)
  np.testing.assert_allclose(den, [1.0 + 2.0 * 5.0])
  # An update that would overflow leaves the block unchanged.
  H_new, _, ok = linalg.guarded_sherman_morrison(H, jnp.array([[1e30, 0.0]]))
  assert not bool(ok[0])
  np.testing.assert_array_equal(H_new, H)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    b=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    log_cond=st.floats(0.0, 4.0),
    g_scale=st.floats(-3.0, 2.0),
)
def test_sherman_morrison_property(b, seed, log_cond, g_scale):
  """For random SPD H and g: exact inverse of H^{-1} + g g^T, symmetric, positive definite."""
  rng = np.random.default_rng(seed)
  G = spd_with_spectrum(rng, np.geomspace(1.0, 10.0 ** log_cond, b))
  g = rng.standard_normal(b) * 10.0 ** g_scale
  H = np.linalg.inv(G)
  H = 0.5 * (H + H.T)  # symmetric input; the update must keep it exactly symmetric
  with compat.enable_x64(True):
    H_new = np.asarray(linalg.sherman_morrison(jnp.asarray(H), jnp.asarray(g)))
  G_new = G + np.outer(g, g)
  expected = np.linalg.inv(G_new)
  # The downdate H - w w^T cancels: its error is amplified by 1 + g^T H g on top of kappa(G_new).
  amplification = 1.0 + g @ H @ g
  tol = 100 * amplification * np.linalg.cond(G_new) * EPS64 * np.abs(expected).max()
  np.testing.assert_allclose(H_new, expected, atol=tol, rtol=0)
  np.testing.assert_array_equal(H_new, H_new.T)
  assert np.linalg.eigvalsh(H_new).min() > 0


# ---------------------------------------------------------------- Newton-Schulz


@pytest.mark.parametrize("cond", [2.0, 10.0, 100.0])
@pytest.mark.parametrize("steps", [5, 12])
def test_newton_schulz_matches_eigh_with_predicted_error(cond, steps):
  """The matrix error equals the scalar iteration's error on the worst eigenvalue.

  For symmetric A, Newton-Schulz acts on each eigenvalue a' = a / ||A||_F
  independently, so the relative error of X_k is bounded by the largest scalar
  error over the spectrum, plus a float32 round-off term c * kappa * eps.
  """
  rng = np.random.default_rng(2)
  eig = np.geomspace(1.0, cond, 7)
  A = spd_with_spectrum(rng, eig)
  sqrt, inv_sqrt = linalg.newton_schulz(jnp.asarray(A, jnp.float32), steps)
  predicted, predicted_inv = predicted_relative_errors(eig / np.linalg.norm(A), steps)
  roundoff = 50 * cond * EPS32
  ref = exact_root(A, 0.5)
  err = np.linalg.norm(np.asarray(sqrt, np.float64) - ref, 2) / np.linalg.norm(ref, 2)
  # The prediction is exact up to float32 round-off, in both directions.
  assert abs(err - predicted) <= roundoff
  ref_inv = exact_root(A, -0.5)
  err_inv = np.linalg.norm(np.asarray(inv_sqrt, np.float64) - ref_inv, 2) / np.linalg.norm(ref_inv, 2)
  assert abs(err_inv - predicted_inv) <= roundoff


def test_newton_schulz_five_steps_error_on_realistic_block_is_a_few_percent():
  """The paper's T_NS=5 on a 9x9 block with condition number 100: the error is visible, not tiny."""
  rng = np.random.default_rng(3)
  A = spd_with_spectrum(rng, np.geomspace(1.0, 100.0, 9))
  root, info = linalg.matrix_root(jnp.asarray(A, jnp.float32), "sqrt", num_steps=5)
  ref = exact_root(A, 0.5)
  err = np.linalg.norm(np.asarray(root) - ref) / np.linalg.norm(ref)
  assert 0.01 < err < 0.2
  # The reported residual reflects it; with a tolerance the residual drops below 1e-4.
  assert float(info.residual[()] if info.residual.ndim == 0 else info.residual) > 1e-3
  root_tol, info_tol = linalg.matrix_root(jnp.asarray(A, jnp.float32), "sqrt", tolerance=1e-5)
  assert float(info_tol.residual) < 1e-4
  assert int(info_tol.steps) > 5
  err_tol = np.linalg.norm(np.asarray(root_tol) - ref) / np.linalg.norm(ref)
  assert err_tol < 1e-4


@pytest.mark.parametrize("kind,power", [("sqrt", 0.5), ("inv_sqrt", -0.5)])
def test_eigh_root_is_exact(kind, power):
  rng = np.random.default_rng(4)
  A = np.stack([spd_with_spectrum(rng, np.geomspace(1e-2, 1.0, 5)) for _ in range(3)])
  with compat.enable_x64(True):
    root, info = linalg.matrix_root(jnp.asarray(A), kind, method="eigh")
  ref = np.stack([exact_root(a, power) for a in A])
  np.testing.assert_allclose(np.asarray(root), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
  assert np.all(np.asarray(info.residual) < 1e-10)


def test_zero_rows_are_absent_coordinates():
  """Padding a block with zero rows/columns does not change the root of the rest."""
  rng = np.random.default_rng(5)
  A = spd_with_spectrum(rng, [0.5, 1.0, 3.0])
  padded = np.zeros((5, 5))
  padded[:3, :3] = A
  for method in ["newton_schulz", "eigh"]:
    for kind in ["sqrt", "inv_sqrt"]:
      r, _ = linalg.matrix_root(jnp.asarray(A, jnp.float32), kind, method=method)
      rp, info = linalg.matrix_root(jnp.asarray(padded, jnp.float32), kind, method=method)
      np.testing.assert_allclose(np.asarray(rp)[:3, :3], np.asarray(r), rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(np.asarray(rp)[3:], 0.0)
      np.testing.assert_array_equal(np.asarray(rp)[:, 3:], 0.0)


def test_newton_schulz_batched_over_leading_axes():
  rng = np.random.default_rng(6)
  A = np.stack([[spd_with_spectrum(rng, [1.0, 2.0, 4.0]) for _ in range(2)] for _ in range(3)])
  s, r = linalg.newton_schulz(jnp.asarray(A, jnp.float32), 30)
  assert s.shape == (3, 2, 3, 3)
  np.testing.assert_allclose(np.asarray(s), np.stack([[exact_root(a, 0.5) for a in row] for row in A]),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(r), np.stack([[exact_root(a, -0.5) for a in row] for row in A]),
                             rtol=1e-5, atol=1e-5)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    eig=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(0.02, 1.98)),
    seed=st.integers(0, 2**31 - 1),
)
def test_newton_schulz_converges_quadratically_under_sufficient_condition(eig, seed):
  """If ||I - A||_2 < 1 the iteration (without normalisation) converges, quadratically once close.

  Run in float64 on an A whose spectrum lies in (0, 2): the residual
  e_k = ||I - Y_k X_k||_2 satisfies e_{k+1} <= e_k^2: every eigenvalue z of
  Y_k X_k follows z -> z (3 - z)^2 / 4, i.e. e -> e^2 (3 + e) / 4 with e = 1 - z.
  """
  rng = np.random.default_rng(seed)
  A = spd_with_spectrum(rng, eig)
  assert np.linalg.norm(np.eye(len(eig)) - A, 2) < 1
  X, Y = A.copy(), np.eye(len(eig))
  errs = []
  for _ in range(60):
    Z = Y @ X
    errs.append(np.linalg.norm(np.eye(len(eig)) - Z, 2))
    T = 0.5 * (3 * np.eye(len(eig)) - Z)
    X, Y = X @ T, T @ Y
  np.testing.assert_allclose(X, exact_root(A, 0.5), atol=1e-10)
  for e0, e1 in zip(errs, errs[1:]):
    if 1e-7 < e0 < 0.5:
      assert e1 <= e0 ** 2 * 1.01
  # And the library's normalised iteration reaches the same root.
  with compat.enable_x64(True):
    s, _ = linalg.newton_schulz(jnp.asarray(A), 60)
  np.testing.assert_allclose(np.asarray(s), exact_root(A, 0.5), atol=1e-9)
