"""A tracker of Theorem 1's terms that any training loop can call.

Pure functions over a small NamedTuple carried by the caller::

    ts = theory.init_tracker(params, opt_state, eta=lr, lam=lam)
    ...
    ts, scalars = theory.update_tracker(ts, opt_state, grads, full_grad=full_grad)

``scalars`` is a dict of float scalars (log them to TensorBoard / JSON lines). ``full_grad``
(the full-batch gradient at the current parameters) is optional: pass it on the steps where
you measure it; the left side is the minimum over measured steps, which is conservative.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import mbag
from theory import bound
from theory import terms


class TrackerState(NamedTuple):
  """Running quantities of Theorem 1 (all float32/int32 scalars).

  Attributes:
    eta: step size; lam: lambda; num_params: d (real, unpadded).
    sum_gamma_used / sum_gamma_exact: sum_{t=0}^{T} gamma_t for the root used / the exact root.
    max_grad_norm: largest stochastic-gradient norm seen; max_full_grad_norm: largest full-gradient norm.
    min_full_grad_sq: smallest measured ||grad f||^2 (the left side); num_measured: how many measured.
    steps: T.
  """

  eta: jax.Array
  lam: jax.Array
  num_params: jax.Array
  sum_gamma_used: jax.Array
  sum_gamma_exact: jax.Array
  max_grad_norm: jax.Array
  max_full_grad_norm: jax.Array
  min_full_grad_sq: jax.Array
  num_measured: jax.Array
  steps: jax.Array


def init_tracker(params, opt_state, *, eta, lam) -> TrackerState:
  """Starts the sums at t = 0, where gamma_0 = eta / sqrt(lambda) (H_0 = I / lambda)."""
  del params
  masks = terms.present_masks(opt_state)
  gamma0 = jnp.asarray(eta, jnp.float32) / jnp.sqrt(jnp.asarray(lam, jnp.float32))
  f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  return TrackerState(
      eta=f(eta), lam=f(lam), num_params=f(terms.num_real_params(masks)),
      sum_gamma_used=gamma0, sum_gamma_exact=gamma0, max_grad_norm=f(0.0), max_full_grad_norm=f(0.0),
      min_full_grad_sq=f(jnp.inf), num_measured=jnp.asarray(0, jnp.int32), steps=jnp.asarray(0, jnp.int32))


def update_tracker(ts: TrackerState, opt_state, grads, *, full_grad=None, L=None, C=None):
  """Adds step t (after the optimizer update that used ``grads``); returns (state, scalars).

  With ``L`` and ``C`` given, the scalars include both sides of the bound so far.
  """
  masks = terms.present_masks(opt_state)
  stats = mbag.find_mbag_state(opt_state).stats
  g_used = terms.gamma_used(opt_state, masks, ts.eta)
  g_exact = terms.gamma_exact(opt_state, masks, ts.eta)
  gnorm = terms.global_norm(grads)
  ts = ts._replace(
      sum_gamma_used=ts.sum_gamma_used + g_used, sum_gamma_exact=ts.sum_gamma_exact + g_exact,
      max_grad_norm=jnp.maximum(ts.max_grad_norm, gnorm), steps=ts.steps + 1)
  if full_grad is not None:
    fsq = jnp.square(terms.global_norm(full_grad))
    ts = ts._replace(min_full_grad_sq=jnp.minimum(ts.min_full_grad_sq, fsq),
                     max_full_grad_norm=jnp.maximum(ts.max_full_grad_norm, jnp.sqrt(fsq)),
                     num_measured=ts.num_measured + 1)
  logdet = terms.logdet_ratio_from_inverse(stats, masks, ts.lam)
  scalars = {
      "bound/logdet_ratio": logdet, "bound/gamma_used": g_used, "bound/gamma_exact": g_exact,
      "bound/sum_gamma_used": ts.sum_gamma_used, "bound/sum_gamma_exact": ts.sum_gamma_exact,
      "bound/G": jnp.maximum(ts.max_grad_norm, ts.max_full_grad_norm),
      "bound/trace_H0_sqrt": terms.trace_H0_sqrt(ts.num_params, ts.lam),
      "bound/lhs": ts.min_full_grad_sq,
      "bound/logdet_over_sum_gamma": logdet / ts.sum_gamma_exact,
  }
  if L is not None and C is not None:
    scalars["bound/rhs"] = bound_rhs(ts, logdet, L, C, exact_root=True)
  return ts, scalars


def bound_rhs(ts: TrackerState, logdet, L, C, *, exact_root: bool = True):
  """Theorem 1's right side from the tracker (jit-friendly: evaluated with jnp)."""
  G = jnp.maximum(ts.max_grad_norm, ts.max_full_grad_norm)
  sum_gamma = ts.sum_gamma_exact if exact_root else ts.sum_gamma_used
  return bound.rhs_jnp(L, ts.eta, logdet, G, terms.trace_H0_sqrt(ts.num_params, ts.lam), ts.lam, C,
                      sum_gamma)
