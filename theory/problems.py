"""Problems on which Theorem 1 can be judged: a quadratic, logistic regression, a small MLP.

Each problem gives a loss on parameters, a stochastic gradient oracle, the full-batch gradient,
the smoothness constant L (exact, or an estimate from below), and C = f(theta_0) - f*.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np


class Problem(NamedTuple):
  """A problem for the bound.

  Attributes:
    name: identifier used in records.
    init: parameters theta_0 (a pytree).
    loss: full objective f(theta).
    stochastic_grad: (theta, key) -> g_t, an unbiased estimate of grad f with independent noise.
    L: smoothness constant; exact when ``L_exact``, otherwise None (estimate along the run).
    L_exact: whether L is an exact (global) constant.
    f_star: the minimum value, or a valid lower bound.
    f_star_note: how f_star was obtained.
  """

  name: str
  init: dict
  loss: Callable
  stochastic_grad: Callable
  L: float | None
  L_exact: bool
  f_star: float
  f_star_note: str


def quadratic(d: int = 20, cond: float = 100.0, noise: float = 0.5, seed: int = 0) -> Problem:
  """f(x) = 1/2 (x - x*)^T A (x - x*) with spectrum in [L/cond, L], L = 10; noise bounded (sphere)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  eig = np.geomspace(10.0 / cond, 10.0, d)
  A = jnp.asarray((q * eig) @ q.T, jnp.float32)
  x_star = jnp.asarray(rng.standard_normal(d), jnp.float32)

  def loss(p):
    r = p["x"] - x_star
    return 0.5 * r @ A @ r

  def stochastic_grad(p, key):
    z = jax.random.normal(key, (d,))
    zeta = noise * z / jnp.linalg.norm(z)  # mean zero, norm exactly `noise`: A3 and A4 hold
    return {"x": A @ (p["x"] - x_star) + zeta}

  return Problem("quadratic", {"x": jnp.zeros(d)}, loss, stochastic_grad, float(eig.max()), True,
                 0.0, "exact minimiser x*")


def _digits():
  from sklearn.datasets import load_digits
  data = load_digits()
  x = np.asarray(data.data / 16.0, np.float64)
  return x, np.asarray(data.target)


def logistic_regression(l2: float = 1e-3, batch: int = 64) -> Problem:
  """Multinomial logistic regression on scikit-learn's digits (1797 x 64, 10 classes) with L2.

  Exact L: the Hessian of the mean cross-entropy is bounded by 1/2 (I - 11^T/K) (x) X^T X / N
  (Boehning 1992), so L = lambda_max(X~^T X~ / N) / 2 + l2 with X~ = [X, 1] (bias).
  f* from a float64 L-BFGS solve (scipy) to gradient norm < 1e-9.
  """
  import scipy.optimize

  x, y = _digits()
  n, k = x.shape[0], 10
  x1 = np.concatenate([x, np.ones((n, 1))], axis=1)
  L = float(np.linalg.eigvalsh(x1.T @ x1 / n).max() / 2 + l2)
  X, Y = jnp.asarray(x, jnp.float32), jnp.asarray(y)

  def loss_on(p, xb, yb):
    logits = xb @ p["w"] + p["b"]
    ce = jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, yb[:, None], 1)[:, 0])
    return ce + 0.5 * l2 * (jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2))

  def loss(p):
    return loss_on(p, X, Y)

  def stochastic_grad(p, key):
    idx = jax.random.randint(key, (batch,), 0, n)
    return jax.grad(loss_on)(p, X[idx], Y[idx])

  def f64(theta):
    w, b = theta[:64 * k].reshape(64, k), theta[64 * k:]
    logits = x @ w + b
    m = logits.max(1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(logits - m).sum(1)))
    p = np.exp(logits - lse[:, None])
    onehot = np.eye(k)[y]
    val = np.mean(lse - logits[np.arange(n), y]) + 0.5 * l2 * theta @ theta
    gw = x.T @ (p - onehot) / n + l2 * w
    gb = (p - onehot).mean(0) + l2 * b
    return val, np.concatenate([gw.ravel(), gb])

  res = scipy.optimize.minimize(f64, np.zeros(64 * k + k), jac=True, method="L-BFGS-B",
                                options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 20000})
  init = {"w": jnp.zeros((64, k)), "b": jnp.zeros(k)}
  return Problem("logistic_digits", init, loss, stochastic_grad, L, True, float(res.fun),
                 f"float64 L-BFGS, |grad|={np.linalg.norm(res.jac):.1e}")


def mlp(hidden: int = 32, batch: int = 64, seed: int = 0) -> Problem:
  """A 64-hidden-10 tanh MLP on digits (cross-entropy). L is estimated; f* >= 0 is used."""
  x, y = _digits()
  X, Y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  init = {"w1": jax.random.normal(k1, (64, hidden)) / 8.0, "b1": jnp.zeros(hidden),
          "w2": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden), "b2": jnp.zeros(10)}

  def loss_on(p, xb, yb):
    h = jnp.tanh(xb @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, yb[:, None], 1)[:, 0])

  def loss(p):
    return loss_on(p, X, Y)

  def stochastic_grad(p, key):
    idx = jax.random.randint(key, (batch,), 0, x.shape[0])
    return jax.grad(loss_on)(p, X[idx], Y[idx])

  return Problem("mlp_digits", init, loss, stochastic_grad, None, False, 0.0,
                 "cross-entropy >= 0 (a valid lower bound)")


@functools.lru_cache(maxsize=None)
def _hvp_fn(loss):
  def hvp(params, v):
    return jax.jvp(jax.grad(loss), (params,), (v,))[1]
  return jax.jit(hvp)


def hessian_norm_estimate(loss, params, key, iters: int = 30) -> float:
  """Largest |eigenvalue| of the Hessian at params by power iteration on Hessian-vector products.

  A lower estimate of the global L: it only sees this point, and power iteration approaches the
  top eigenvalue from below.
  """
  hvp = _hvp_fn(loss)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  v = jax.random.normal(key, flat.shape)
  v = v / jnp.linalg.norm(v)
  lam = 0.0
  for _ in range(iters):
    w = jax.flatten_util.ravel_pytree(hvp(params, unravel(v)))[0]
    lam = float(jnp.linalg.norm(w))
    v = w / jnp.maximum(lam, 1e-30)
  return lam


REGISTRY = {"quadratic": quadratic, "logistic_digits": logistic_regression, "mlp_digits": mlp}
