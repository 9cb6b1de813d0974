r"""Problems on which Theorem 1 can be judged: a quadratic, logistic regression, a small MLP.

Each problem gives a loss, a stochastic gradient oracle with independent mean-zero noise (A4),
the smoothness constant L (exact, or None: estimate it along the run with
:func:`hessian_norm_estimate`) and f* (exact, or a valid bound, with a note).
Arrays are created in the dtype passed (float64 under ``jax.enable_x64``).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from theory import terms


class Problem(NamedTuple):
  """A problem for the bound.

  Attributes:
    name: identifier used in records.
    init: parameters theta_0 (a pytree).
    loss: the full objective f(theta).
    stochastic_grad: ``(theta, key) -> g`` with ``E g = grad f(theta)``, independent across keys.
    L: smoothness constant when ``L_exact`` (a proven global one), else None.
    L_exact: whether L is proven (True) or must be estimated along the run (False).
    L_note: how L was obtained.
    f_star: the minimum (``f_star_exact``) or a lower bound of it.
    f_star_exact: whether f_star is the minimum up to solver precision.
    f_star_note: how f_star was obtained.
  """

  name: str
  init: dict
  loss: Callable
  stochastic_grad: Callable
  L: float | None
  L_exact: bool
  L_note: str
  f_star: float
  f_star_exact: bool
  f_star_note: str


def _dtype(dtype):
  return terms.wide_dtype() if dtype is None else dtype


def quadratic(d: int = 20, cond: float = 100.0, noise: float = 0.5, seed: int = 0,
              dtype=None) -> Problem:
  r"""``f(x) = 1/2 (x - x*)^T A (x - x*)``, spectrum of A geometric in ``[10/cond, 10]``: L = 10.

  The noise is ``noise * u`` with u uniform on the unit sphere: mean zero, independent, and of
  norm exactly ``noise``, so the stochastic gradients are bounded wherever the full ones are.
  """
  dtype = _dtype(dtype)
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  eig = np.geomspace(10.0 / cond, 10.0, d)
  A = jnp.asarray((q * eig) @ q.T, dtype)
  x_star = jnp.asarray(rng.standard_normal(d), dtype)

  def loss(p):
    r = p["x"] - x_star
    return 0.5 * r @ A @ r

  def stochastic_grad(p, key):
    z = jax.random.normal(key, (d,), dtype)
    return {"x": A @ (p["x"] - x_star) + noise * z / jnp.linalg.norm(z)}

  return Problem("quadratic", {"x": jnp.zeros(d, dtype)}, loss, stochastic_grad, float(eig.max()),
                 True, "lambda_max(A), exact", 0.0, True, "f(x*) = 0, exact")


@functools.lru_cache(maxsize=1)
def _digits():
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  data = load_digits()
  return np.asarray(data.data / 16.0, np.float64), np.asarray(data.target)


def _cross_entropy(logits, labels):
  picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


def logistic_regression(l2: float = 1e-3, batch: int = 64, dtype=None) -> Problem:
  r"""Multinomial logistic regression on scikit-learn's digits (1797 x 64, 10 classes) + L2.

  Exact L. With ``x~ = [x, 1]`` and ``p = softmax(W^T x + b)``, the Hessian of the mean
  cross-entropy in ``(W, b)`` is ``(1/N) sum_i (x~_i x~_i^T) (x) (diag p_i - p_i p_i^T)``. For a unit
  v, ``v^T (diag p - p p^T) v = Var_p(v) <= (max v - min v)^2 / 4 <= 1/2`` (Popoviciu), so
  ``diag p - p p^T <= I/2`` and ``L = lambda_max(X~^T X~ / N) / 2 + l2`` (Boehning's bound).
  f*: a float64 L-BFGS solve; the objective is l2-strongly convex, so
  ``f(theta_hat) - |grad f(theta_hat)|^2 / (2 l2) <= f* <= f(theta_hat)`` and the note gives the gap.
  """
  import scipy.optimize  # pylint: disable=import-outside-toplevel

  dtype = _dtype(dtype)
  x, y = _digits()
  n, k = x.shape[0], 10
  x1 = np.concatenate([x, np.ones((n, 1))], axis=1)
  L = float(np.linalg.eigvalsh(x1.T @ x1 / n).max() / 2 + l2)
  X, Y = jnp.asarray(x, dtype), jnp.asarray(y)

  def loss_on(p, xb, yb):
    reg = 0.5 * l2 * (jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2))
    return _cross_entropy(xb @ p["w"] + p["b"], yb) + reg

  def loss(p):
    return loss_on(p, X, Y)

  def stochastic_grad(p, key):
    idx = jax.random.randint(key, (batch,), 0, n)  # with replacement: i.i.d. noise
    return jax.grad(loss_on)(p, X[idx], Y[idx])

  def f64(theta):
    w, b = theta[:64 * k].reshape(64, k), theta[64 * k:]
    logits = x @ w + b
    m = logits.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(1))
    prob = np.exp(logits - lse[:, None])
    diff = prob - np.eye(k)[y]
    val = np.mean(lse - logits[np.arange(n), y]) + 0.5 * l2 * theta @ theta
    return val, np.concatenate([(x.T @ diff / n + l2 * w).ravel(), diff.mean(0) + l2 * b])

  res = scipy.optimize.minimize(f64, np.zeros(64 * k + k), jac=True, method="L-BFGS-B",
                                options={"gtol": 1e-8, "ftol": 1e-15, "maxiter": 20000})
  gap = float(np.linalg.norm(res.jac) ** 2 / (2 * l2))
  init = {"w": jnp.zeros((64, k), dtype), "b": jnp.zeros(k, dtype)}
  return Problem("logistic_digits", init, loss, stochastic_grad, L, True,
                 "lambda_max(X~^T X~/N)/2 + l2 (Boehning), a proven global constant",
                 float(res.fun), True, f"float64 L-BFGS; f(theta_hat) - f* <= {gap:.1e}")


def mlp(hidden: int = 8, batch: int = 64, seed: int = 0, dtype=None) -> Problem:
  """A 64-hidden-10 tanh MLP on digits (cross-entropy, smooth so A1 holds). L is estimated."""
  dtype = _dtype(dtype)
  x, y = _digits()
  X, Y = jnp.asarray(x, dtype), jnp.asarray(y)
  rng = np.random.default_rng(seed)
  init = {"w1": jnp.asarray(rng.standard_normal((64, hidden)) / 8.0, dtype),
          "b1": jnp.zeros(hidden, dtype),
          "w2": jnp.asarray(rng.standard_normal((hidden, 10)) / np.sqrt(hidden), dtype),
          "b2": jnp.zeros(10, dtype)}

  def loss_on(p, xb, yb):
    h = jnp.tanh(xb @ p["w1"] + p["b1"])
    return _cross_entropy(h @ p["w2"] + p["b2"], yb)

  def loss(p):
    return loss_on(p, X, Y)

  def stochastic_grad(p, key):
    idx = jax.random.randint(key, (batch,), 0, x.shape[0])
    return jax.grad(loss_on)(p, X[idx], Y[idx])

  return Problem("mlp_digits", init, loss, stochastic_grad, None, False,
                 "largest Hessian norm by power iteration at visited points: an estimate FROM BELOW",
                 0.0, False, "cross-entropy >= 0: a lower bound of f*, so C is an upper bound")


def hessian_norm_estimate(loss: Callable, params, key, iters: int = 30) -> jax.Array:
  r"""``|H v_k|`` after ``iters`` power iterations on Hessian-vector products at ``params``.

  For a unit v, ``|H v| <= ||H||_2``, so this is a lower bound of the Hessian's spectral norm at
  this point, hence of any global L; it approaches ``||H||_2`` as the iteration converges. Pure
  and jit-friendly (``jax.lax.fori_loop``).
  """
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  grad = jax.grad(loss)

  def hvp(v):
    return jax.flatten_util.ravel_pytree(jax.jvp(grad, (params,), (unravel(v),))[1])[0]

  v = jax.random.normal(key, flat.shape, flat.dtype)
  v = v / jnp.linalg.norm(v)

  def body(_, carry):
    v, _ = carry
    w = hvp(v)
    nrm = jnp.linalg.norm(w)
    return w / jnp.maximum(nrm, jnp.finfo(flat.dtype).tiny), nrm

  return jax.lax.fori_loop(0, iters, body, (v, jnp.zeros([], flat.dtype)))[1]


REGISTRY: dict[str, Callable[..., Problem]] = {
    "quadratic": quadratic,
    "logistic_digits": logistic_regression,
    "mlp_digits": mlp,
}
