"""The right-hand side of Theorem 1, written once in sympy and evaluated from the same object.

  min_t E||grad f(theta_t)||^2 <=
      ( L eta^2 / 2 * E[log |G_T| / |G_0|] + 2 G^2 eta (tr(H_0^{1/2}) + 1/sqrt(lambda)) + C )
      / sum_{t=0}^{T} gamma_t,        gamma_t = lambda_min(eta H_t^{1/2}).
"""

from __future__ import annotations

import sympy

L, eta, logdet_ratio, G, trace_H0_sqrt, lam, C, sum_gamma = sympy.symbols(
    "L eta logdet_ratio G trace_H0_sqrt lambda C sum_gamma", positive=True)

#: The order of the arguments of :func:`rhs` and of the lambdified function.
SYMBOLS = (L, eta, logdet_ratio, G, trace_H0_sqrt, lam, C, sum_gamma)
NAMES = tuple(str(s) for s in SYMBOLS)

NUMERATOR = L * eta**2 / 2 * logdet_ratio + 2 * G**2 * eta * (trace_H0_sqrt + 1 / sympy.sqrt(lam)) + C
RHS = NUMERATOR / sum_gamma

_rhs = sympy.lambdify(SYMBOLS, RHS, modules="numpy")
#: The same expression for traced JAX values (positional arguments in the order of ``SYMBOLS``).
rhs_jnp = sympy.lambdify(SYMBOLS, RHS, modules="jax")
_terms = {
    "curvature_term": sympy.lambdify(SYMBOLS, L * eta**2 / 2 * logdet_ratio, modules="numpy"),
    "gradient_term": sympy.lambdify(
        SYMBOLS, 2 * G**2 * eta * (trace_H0_sqrt + 1 / sympy.sqrt(lam)), modules="numpy"),
}


def rhs(**terms: float) -> float:
  """Evaluates the bound from named terms (keys: ``NAMES``, with ``lambda`` for lambda)."""
  missing = [n for n in NAMES if n not in terms]
  if missing:
    raise ValueError(f"missing terms for the bound: {missing}")
  return float(_rhs(*(terms[n] for n in NAMES)))


def numerator_parts(**terms: float) -> dict[str, float]:
  """The three summands of the numerator, to see which one dominates."""
  args = [terms[n] for n in NAMES]
  return {**{k: float(f(*args)) for k, f in _terms.items()}, "C": float(terms["C"])}


def pretty() -> str:
  """The bound as text, printed by ``python -m theory.verify``."""
  return "min_t ||grad f||^2 <= " + sympy.sstr(RHS)
