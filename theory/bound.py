r"""The right-hand side of Theorem 1, written once in sympy and evaluated from the same object.

Theorem 1 (paper, Section V), for Algorithm 1 with a fixed step size eta:

  min_{t in [T]} ||grad f(theta_t)||^2 <=
      ( L eta^2/2 log(|G_T|/|G_0|) + 2 G^2 eta (tr(H_0^{1/2}) + 1/sqrt(lambda)) + C )
      / sum_{t=0}^{T} gamma_t,          gamma_t = lambda_min(eta H_t^{1/2}).

:data:`RHS` is that expression; :func:`rhs` (NumPy) and :data:`rhs_jnp` (JAX) are lambdified from
it, :func:`pretty` prints it. Because ``gamma_t`` is random, we read the theorem as
``E[min_t ||grad f(theta_t)||^2 * sum_t gamma_t] <= E[numerator]`` (the two coincide when gamma
is deterministic) and check it per run; see docs/theory.md.

:data:`TRIVIAL_RATIO` is derived here from :data:`RHS`: since ``lhs <= G^2`` and
``gamma_t <= gamma_0 = eta/sqrt(lambda)`` (H_t only shrinks), every run has
``lhs/rhs <= (T + 1) / (2 (d + 1))``. For ``T + 1 <= 2 (d + 1)`` the bound holds whatever the
optimizer does, so only longer horizons test anything.
"""

from __future__ import annotations

import sympy

L, eta, logdet_ratio, G, trace_H0_sqrt, lam, C, sum_gamma = sympy.symbols(
    "L eta logdet_ratio G trace_H0_sqrt lambda C sum_gamma", positive=True)
T, d = sympy.symbols("T d", positive=True)

#: The order of the arguments of :func:`rhs` and of the lambdified functions.
SYMBOLS = (L, eta, logdet_ratio, G, trace_H0_sqrt, lam, C, sum_gamma)
NAMES = tuple(str(s) for s in SYMBOLS)

CURVATURE_TERM = L * eta**2 / 2 * logdet_ratio
GRADIENT_TERM = 2 * G**2 * eta * (trace_H0_sqrt + 1 / sympy.sqrt(lam))
NUMERATOR = CURVATURE_TERM + GRADIENT_TERM + C
RHS = NUMERATOR / sum_gamma


def _trivial_ratio():
  # Largest possible left side, G^2, over the smallest possible right side: drop the
  # nonnegative curvature term and C, and take the largest sum_gamma, (T + 1) gamma_0.
  worst_rhs = RHS.subs({L: 0, C: 0, sum_gamma: (T + 1) * eta / sympy.sqrt(lam),
                        trace_H0_sqrt: d / sympy.sqrt(lam)})
  return sympy.simplify(G**2 / worst_rhs)


#: ``(T + 1) / (2 (d + 1))``: an upper bound on lhs/rhs that needs no run (see module doc).
TRIVIAL_RATIO = _trivial_ratio()

_rhs = sympy.lambdify(SYMBOLS, RHS, modules="numpy")
_numerator = sympy.lambdify(SYMBOLS, NUMERATOR, modules="numpy")
_parts = {name: sympy.lambdify(SYMBOLS, expr, modules="numpy")
          for name, expr in (("curvature_term", CURVATURE_TERM), ("gradient_term", GRADIENT_TERM))}
_trivial = sympy.lambdify((T, d), TRIVIAL_RATIO, modules="numpy")
#: :data:`RHS` for traced JAX values (positional arguments in the order of :data:`SYMBOLS`).
rhs_jnp = sympy.lambdify(SYMBOLS, RHS, modules="jax")


def _args(terms: dict) -> list:
  missing = [n for n in NAMES if n not in terms]
  if missing:
    raise ValueError(f"missing terms for the bound: {missing} (need {list(NAMES)})")
  return [terms[n] for n in NAMES]


def rhs(**terms: float) -> float:
  """Evaluates :data:`RHS` from named terms (keys :data:`NAMES`; ``lambda`` for lambda).

  Raises:
    ValueError: a term is missing.
  """
  return float(_rhs(*_args(terms)))


def numerator(**terms: float) -> float:
  """Evaluates :data:`NUMERATOR` (the right side times sum_gamma)."""
  return float(_numerator(*_args(terms)))


def numerator_parts(**terms: float) -> dict[str, float]:
  """The three summands of the numerator, to see which one dominates."""
  args = _args(terms)
  return {**{k: float(f(*args)) for k, f in _parts.items()}, "C": float(terms["C"])}


def trivial_ratio(horizon: int, num_params: int) -> float:
  """:data:`TRIVIAL_RATIO` at ``T = horizon``, ``d = num_params``."""
  return float(_trivial(horizon, num_params))


def pretty() -> str:
  """The bound as text, printed by ``python -m theory.verify``."""
  return "min_t ||grad f(theta_t)||^2 <= " + sympy.sstr(RHS)
