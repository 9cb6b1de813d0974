r"""Newton-Schulz convergence conditions measured on MBAG's statistics, and the scalar theory.

MBAG computes ``H^{1/2}`` by the coupled iteration (paper, eq. 5) on ``A' = H / ||H||_F``:

  X_{k+1} = X_k T_k,  Y_{k+1} = T_k Y_k,  T_k = (3I - Y_k X_k)/2,  X_0 = A',  Y_0 = I.

For symmetric A' every iterate is a polynomial in A', so the iteration acts on each eigenvalue
a of A' separately through the scalar map ``x' = x(3 - yx)/2, y' = (3 - yx)y/2`` from
``(x_0, y_0) = (a, 1)``. The product ``z_k = y_k x_k`` (the eigenvalue of ``Y_k X_k``) obeys

  z_{k+1} = z_k (3 - z_k)^2 / 4,   z_0 = a,

so ``||I - Y_k X_k||_F = sqrt(sum_a (1 - z_k(a))^2)`` is known in advance from the spectrum of A':
the smallest eigenvalue decides the number of steps. Frobenius normalisation puts the spectrum in
(0, 1], where the sufficient condition ``||I - A'||_2 = 1 - a_min < 1`` holds.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import sympy

from theory import terms

Array = jax.Array


def scalar_fixed_point_facts() -> dict:
  """sympy: the fixed point of the scalar coupled iteration and why convergence is quadratic.

  Returns:
    A dict of sympy objects:
      ``fixed_points``: the solutions with x, y > 0 of the fixed-point equations together with
        the invariant ``x = a y`` (``x_k / y_k`` never changes and starts at a): ``(sqrt a, 1/sqrt a)``.
      ``fixed_point_curve``: all positive fixed points of the 2-D map: the curve ``y = 1/x``.
      ``jacobian_eigenvalues``: eigenvalues of the 2-D map's Jacobian at a fixed point: {0, 1}
        (1 along the curve of fixed points, 0 across it).
      ``map``: the iteration restricted to the invariant line, ``x -> x (3 - x^2/a) / 2``.
      ``derivative_at_fixed_point``: its derivative at ``sqrt(a)``: 0 (quadratic convergence).
      ``z_map``, ``z_derivative_at_1``, ``z_error_constant``: the map of ``z = yx``, its derivative
        at 1 (0) and c in ``1 - z' = c (1 - z)^2 + O((1-z)^3)`` (3/4).
  """
  a, x, y = sympy.symbols("a x y", positive=True)
  z, e = sympy.symbols("z e")
  fx = x * (3 - y * x) / 2
  fy = (3 - y * x) * y / 2
  curve = sympy.solve([sympy.Eq(fx, x), sympy.Eq(fy, y)], [y], dict=True)
  fixed = sympy.solve([sympy.Eq(fx, x), sympy.Eq(x, a * y)], [x, y], dict=True)
  jac = sympy.Matrix([fx, fy]).jacobian([x, y])
  jac_eigs = set(jac.subs(y, 1 / x).eigenvals())
  g = x * (3 - x**2 / a) / 2
  derivative = [sympy.simplify(sympy.diff(g, x).subs(x, s[x])) for s in fixed]
  second = [sympy.simplify(sympy.diff(g, x, 2).subs(x, s[x])) for s in fixed]
  z_map = z * (3 - z) ** 2 / 4
  z_err = sympy.series(1 - z_map.subs(z, 1 - e), e, 0, 3).removeO()
  return {"fixed_points": fixed, "fixed_point_curve": curve, "jacobian_eigenvalues": jac_eigs,
          "coupled_jacobian": jac, "map": g, "derivative_at_fixed_point": derivative,
          "second_derivative_at_fixed_point": second, "z_map": z_map,
          "z_derivative_at_1": sympy.diff(z_map, z).subs(z, 1),
          "z_error_constant": sympy.simplify(z_err / e**2)}


def normalised_spectra(mats: Sequence[Array], masks: Sequence[Array] | None = None
                       ) -> list[tuple[Array, Array]]:
  """Per bucket, ``(w, valid)``: eigenvalues of each block divided by its Frobenius norm.

  ``masks`` defaults to the coordinates with a nonzero diagonal (MBAG's padding convention).
  """
  out = []
  for i, M in enumerate(mats):
    m = (jnp.diagonal(M, axis1=-2, axis2=-1) != 0) if masks is None else masks[i]
    w, valid = terms.present_spectrum(M, m)
    nrm = jnp.sqrt(jnp.sum(jnp.where(valid, w * w, 0.0), axis=-1, keepdims=True))
    out.append((w / jnp.where(nrm > 0, nrm, 1.0), valid))
  return out


def predicted_steps(spectra: Sequence[tuple[Array, Array]], tolerance, max_steps: int = 100) -> Array:
  r"""Iterations after which the scalar theory says ``max_blocks ||I - Y_k X_k||_F <= tolerance``.

  Runs ``z_{k+1} = z_k (3 - z_k)^2 / 4`` from ``z_0 = a`` on every normalised eigenvalue a
  (in :func:`theory.terms.wide_dtype`) and returns the first ``k >= 1`` at which
  ``sqrt(sum_a (1 - z_k(a))^2) <= tolerance`` in every block; ``max_steps + 1`` if never.

  Args:
    spectra: from :func:`normalised_spectra`.
    tolerance: target for the deviation ``||I - Y_k X_k||_F`` (mbag's ``newton_schulz_tolerance``).
    max_steps: how far to look.

  Returns:
    [] int32.
  """
  worst = jnp.zeros([], jnp.int32)
  for w, valid in spectra:
    z0 = jnp.where(valid, w, 1.0)

    def body(k, carry, valid=valid):
      z, first = carry
      z = z * (3.0 - z) ** 2 / 4.0
      dev = jnp.sqrt(jnp.sum(jnp.where(valid, (1.0 - z) ** 2, 0.0), axis=-1))
      first = jnp.where((first > max_steps) & (dev <= tolerance), k, first)
      return z, first

    first0 = jnp.full(w.shape[:-1], max_steps + 1, jnp.int32)
    _, first = jax.lax.fori_loop(1, max_steps + 1, body, (z0, first0))
    worst = jnp.maximum(worst, jnp.max(first, initial=0))
  return worst


def conditions(stats: Sequence[Array], roots: Sequence[Array] | None = None, *,
               masks: Sequence[Array] | None = None, tolerance: float = 1e-3,
               max_steps: int = 100) -> dict[str, Array]:
  r"""The Newton-Schulz conditions over all blocks of MBAG's statistics (jit-friendly).

  Args:
    stats: per bucket ``[n, b, b]`` PSD inputs of the root (H for Algorithm 1).
    roots: optional per bucket ``[n, b, b]`` roots to check against ``stats``.
    masks: optional present-coordinate masks (default: nonzero diagonal).
    tolerance: deviation target for the step prediction.
    max_steps: cap of the prediction.

  Returns:
    Scalars: ``ns/min_normalised_eigenvalue`` (a_min over blocks), ``ns/max_norm_I_minus_A``
    (``max ||I - A'||_2 = max(1 - a_min, a_max - 1)``), ``ns/sufficient_condition_holds``
    (1.0 when that is < 1), ``ns/predicted_steps`` for ``tolerance``, and with roots
    ``ns/root_residual`` (``max ||R^2 - A||_F / ||A||_F``).
  """
  spectra = normalised_spectra(stats, masks)
  a_min = jnp.min(jnp.stack([jnp.min(jnp.where(v, w, jnp.inf)) for w, v in spectra]))
  a_max = jnp.max(jnp.stack([jnp.max(jnp.where(v, w, -jnp.inf)) for w, v in spectra]))
  dist = jnp.maximum(1.0 - a_min, a_max - 1.0)
  out = {"ns/min_normalised_eigenvalue": a_min, "ns/max_norm_I_minus_A": dist,
         "ns/sufficient_condition_holds": (dist < 1.0).astype(a_min.dtype),
         "ns/predicted_steps": predicted_steps(spectra, tolerance, max_steps)}
  if roots is not None:
    out["ns/root_residual"] = terms.root_error_vs_current(stats, roots)
  return out
