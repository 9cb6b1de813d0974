"""Newton-Schulz convergence conditions, measured on MBAG's statistics, and the scalar theory.

For a symmetric input the coupled iteration acts on each eigenvalue a of the Frobenius-normalised
matrix A' independently, through the scalar map

  x_{k+1} = x_k (3 - y_k x_k) / 2,   y_{k+1} = (3 - y_k x_k) y_k / 2,   x_0 = a, y_0 = 1,

whose fixed point is (sqrt(a), 1/sqrt(a)). The smallest eigenvalue of A' therefore decides how
many iterations are needed; the sufficient condition ||I - A'||_2 < 1 holds whenever A' is
positive definite with spectral norm <= 1, which Frobenius normalisation guarantees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import sympy

from mbag import linalg


def scalar_fixed_point_facts() -> dict:
  """sympy: the fixed point of the scalar coupled iteration, and its Jacobian there (zero).

  Returns a dict with the sympy objects ``fixed_points`` (solutions with x, y > 0 of
  x = x(3 - yx)/2, y = (3 - yx)y/2 together with the invariant y = x / a) and ``jacobian_at_fixed_point``.
  """
  a, x, y = sympy.symbols("a x y", positive=True)
  fx = x * (3 - y * x) / 2
  fy = (3 - y * x) * y / 2
  # The iteration keeps y_k = x_k / a (both are the same polynomial in a times x_0 = a, y_0 = 1).
  fixed = sympy.solve([sympy.Eq(fx, x), sympy.Eq(y, x / a)], [x, y], dict=True)
  # Convergence speed: the scalar iteration in x alone (y = x / a) is x -> x (3 - x^2 / a) / 2.
  g = x * (3 - x**2 / a) / 2
  derivative = sympy.diff(g, x)
  at_fixed = [sympy.simplify(derivative.subs(x, sol[x])) for sol in fixed]
  second = [sympy.simplify(sympy.diff(g, x, 2).subs(x, sol[x])) for sol in fixed]
  jac = sympy.Matrix([fx, fy]).jacobian([x, y])
  return {"fixed_points": fixed, "derivative_at_fixed_point": at_fixed,
          "second_derivative_at_fixed_point": second, "coupled_jacobian": jac,
          "map": g}


def predicted_steps(a_min: float, tolerance: float, max_steps: int = 200) -> int:
  """Iterations the scalar map needs for |x_k / sqrt(a) - 1| <= tolerance on eigenvalue a_min."""
  x, y = float(a_min), 1.0
  target = np.sqrt(a_min)
  for k in range(1, max_steps + 1):
    t = 0.5 * (3.0 - y * x)
    x, y = x * t, t * y
    if abs(x / target - 1.0) <= tolerance:
      return k
  return max_steps + 1


def conditions(stats, *, num_steps: int = 5, tolerance: float = 1e-3) -> dict[str, float]:
  """Measured over all blocks of one bucket list of PSD matrices (MBAG's H or G).

  Returns the smallest eigenvalue of the Frobenius-normalised input over present coordinates, the
  largest ||I - A'||_2 (the sufficient condition holds when < 1), the worst residual
  ||X^2 - A||_F / ||A||_F and worst-direction error of ``num_steps`` Newton-Schulz steps, and the
  number of steps the scalar iteration predicts for ``tolerance`` on the smallest eigenvalue.
  """
  a_min, cond_norm, residual, error = np.inf, 0.0, 0.0, 0.0
  for S in stats:
    S = jnp.asarray(S, jnp.float32)
    present = jnp.diagonal(S, axis1=-2, axis2=-1) != 0
    norm = jnp.sqrt(jnp.sum(S * S, axis=(-2, -1)))[:, None]
    big = 10.0
    w = jnp.linalg.eigvalsh(S / jnp.where(norm > 0, norm, 1.0)[..., None]
                            + big * jnp.eye(S.shape[-1]) * (~present)[..., None, :])
    w_present = jnp.where(present.sum(-1, keepdims=True) > 0, w, big)
    a_min = min(a_min, float(jnp.min(w_present)))
    w_max = jnp.max(jnp.where(w_present < big, w_present, -jnp.inf), axis=-1)
    w_lo = jnp.min(w_present, axis=-1)
    cond_norm = max(cond_norm, float(jnp.max(jnp.maximum(jnp.abs(1 - w_lo), jnp.abs(1 - w_max)))))
    _, info = linalg.matrix_root(S, "sqrt", num_steps=num_steps)
    residual = max(residual, float(jnp.max(info.residual)))
    error = max(error, float(jnp.max(info.relative_error)))
  return {"ns/min_normalised_eigenvalue": a_min, "ns/max_norm_I_minus_A": cond_norm,
          "ns/sufficient_condition_holds": float(cond_norm < 1.0), "ns/residual": residual,
          "ns/root_error": error, "ns/predicted_steps": float(predicted_steps(a_min, tolerance))}
