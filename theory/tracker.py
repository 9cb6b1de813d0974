r"""A tracker of Theorem 1's terms that any training loop can call (pure, jit-friendly).

The caller carries a :class:`TrackerState` and calls two pure functions::

    ts = theory.init_tracker(params, opt_state, eta=lr, lam=lam)        # before step 1
    for t in 1..T:
      grads = grad(loss)(params, batch)                                  # g_t at theta_{t-1}
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)                      # theta_t
      ts, scalars = theory.update_tracker(ts, opt_state, grads,
                                          full_grad=grad(f)(params),     # optional, at theta_t
                                          loss=f(params))                # optional, at theta_t

``opt_state`` is the state *returned* by the update that used ``grads``: its statistics are
``H_t`` (g_t included) and its roots are the ones that step multiplied ``g_t`` by. ``scalars`` is
a flat dict of scalar arrays (log them to TensorBoard / JSON lines); under ``jax.jit`` the keys
depend only on which optional arguments are given.

Cost per call: one ``eigvalsh`` of every block of H (log det, gamma of the exact root and the
Newton-Schulz conditions all come from it) and of the roots, and one ``R @ R`` product (about
two exact root computations). The theorem's sum of gamma_t needs every step; the full gradient may be measured on a subset of steps (the minimum over a subset is larger,
so the check stays conservative).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import mbag
from theory import bound
from theory import newton_schulz
from theory import terms

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TrackerState:
  """Running quantities of Theorem 1 (a pytree; the last three fields are static).

  Attributes:
    steps: [] int32, T (calls of :func:`update_tracker`).
    eta: [] the fixed step size (the theorem's), or with step sizes given per step (a schedule)
      the largest so far (the bound's eta-terms grow with it).  lam: [] lambda of ``G_0 = lambda I``.
    sum_gamma_used: [] ``sum_{t=0}^T lambda_min(eta_t R_t)`` for the roots used (R_0 = H_0^{1/2}).
    sum_gamma_exact: [] ``sum_{t=0}^T eta_t sqrt(lambda_min(H_t))`` (the exact root).
    potential_exact: [] ``sum_t g_t^T H_t g_t`` (<= log det ratio by the elliptical potential lemma).
    potential_used: [] ``sum_t |R_t g_t|^2`` (what the steps actually had; not bounded by the lemma).
    max_grad_norm: [] largest stochastic-gradient norm ``|g_t|`` seen.
    max_full_grad_norm: [] largest measured full-gradient norm.
    min_full_grad_sq: [] smallest measured ``|grad f(theta_t)|^2``: the left side (inf until measured).
    num_full_grad: [] int32, how many full gradients were measured.
    min_loss: [] smallest measured ``f(theta_t)`` (inf until measured).
    max_hessian_norm: [] largest Hessian-norm estimate passed in (0 until one is).
    masks: per bucket ``[n, b]`` bool, the real (unpadded) coordinates.
    layout: static ``mbag.blocks.Layout`` of the parameters (None: only gradient norms are accepted).
    param_shapes: static shapes of the parameter leaves (to check ``grads``).
    num_params: static int, d (real parameters).
  """

  steps: Array
  eta: Array
  lam: Array
  sum_gamma_used: Array
  sum_gamma_exact: Array
  potential_exact: Array
  potential_used: Array
  max_grad_norm: Array
  max_full_grad_norm: Array
  min_full_grad_sq: Array
  num_full_grad: Array
  min_loss: Array
  max_hessian_norm: Array
  masks: tuple[Array, ...]
  layout: Any = None
  param_shapes: tuple = ()
  num_params: int = 0

  def replace(self, **changes) -> "TrackerState":
    return dataclasses.replace(self, **changes)


_STATIC = ("layout", "param_shapes", "num_params")
jax.tree_util.register_dataclass(
    TrackerState,
    data_fields=[f.name for f in dataclasses.fields(TrackerState) if f.name not in _STATIC],
    meta_fields=list(_STATIC))


def _bucket_shapes(params, layout: mbag.blocks.Layout) -> tuple:
  leaves = jax.tree_util.tree_leaves(params)
  return tuple((sum(layout.specs[i].num_blocks(np.shape(leaves[i])) for i in bucket), b, b)
               for bucket, b in zip(layout.buckets, layout.block_sizes))


def _infer_layout(params, shapes: tuple, block_size, grouping, fuse_blocks) -> mbag.blocks.Layout:
  sizes = [block_size] if block_size is not None else sorted({s[-1] for s in shapes} | {32})
  # mbag's fuse_blocks: None (its default, buckets by block size), False or True.
  fuses = [fuse_blocks] if fuse_blocks is not None else [None, False, True]
  found = []
  for b in sizes:
    for fuse in fuses:
      layout = mbag.blocks.make_layout(params, int(b), grouping, fuse)
      if _bucket_shapes(params, layout) == shapes and layout not in found:
        found.append(layout)
  if not found:
    raise ValueError(
        f"init_tracker: no block layout of these params gives the optimizer state's statistics "
        f"shapes {list(shapes)} (tried block_size in {sizes}, fuse_blocks in {fuses}); pass the "
        f"block_size / grouping / fuse_blocks that the optimizer was built with")
  if len(found) > 1:
    raise ValueError(f"init_tracker: {len(found)} different block layouts match the optimizer "
                     f"state's shapes {list(shapes)}; pass block_size and fuse_blocks explicitly")
  return found[0]


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def init_tracker(params, opt_state, *, eta: float, lam: float, block_size: int | None = None,
                 grouping=None, fuse_blocks: bool | None = None) -> TrackerState:
  r"""Starts the tracker at t = 0 for MBAG (Algorithm 1) with step size ``eta`` and ``lambda = lam``.

  The sums start with ``gamma_0 = eta / sqrt(lambda)`` (``H_0 = I/lambda``, root ``lambda^{-1/2} I``),
  so call this before the first update.

  Args:
    params: the parameters (only their tree structure and shapes are read), or None to accept
      only gradient norms in :func:`update_tracker` (no elliptical-potential sums then).
    opt_state: an optimizer state containing one ``mbag.ScaleByMBAGState`` of Algorithm 1
      (``mbag.mbag`` / ``mbag.scale_by_mbag``).
    eta: the fixed step size eta of the theorem.
    lam: lambda (the optimizer's ``initial_accumulator_value``).
    block_size, grouping, fuse_blocks: as given to the optimizer; when None they are inferred
      by matching the state's shapes (an error says when that is ambiguous).

  Returns:
    A :class:`TrackerState`.

  Raises:
    ValueError: eta or lam not positive; the state has no roots (MBAG-N) or, for a fresh state,
      its statistics are not ``I/lam`` (wrong lam, or MBAG-EMA whose statistic is G, not H);
      the parameters do not match the state.
  """
  for name, value in (("eta", eta), ("lam", lam)):
    if _is_concrete(value) and not (np.ndim(value) == 0 and float(value) > 0 and math.isfinite(float(value))):
      raise ValueError(f"init_tracker: {name} must be a finite number > 0, got {value!r}")
  state = mbag.find_mbag_state(opt_state)
  if not state.roots:
    raise ValueError("init_tracker: the MBAG state has no roots (MBAG-N); Theorem 1 is about "
                     "Algorithm 1 (mbag.mbag / mbag.scale_by_mbag)")
  stats = state.dense_stats()  # [n, b, b] also for storage="symmetric"
  shapes = tuple(tuple(S.shape) for S in stats)
  if all(_is_concrete(S) for S in stats) and _is_concrete(state.count) and int(state.count) == 0:
    diag = np.concatenate([np.diagonal(np.asarray(S), axis1=-2, axis2=-1).ravel() for S in stats])
    diag = diag[diag != 0]
    if diag.size and not np.allclose(diag, 1.0 / float(lam), rtol=1e-5):
      raise ValueError(
          f"init_tracker: a fresh Algorithm-1 state has H_0 = I/lam = {1.0 / float(lam):g} on its "
          f"diagonal, found {diag.min():g}..{diag.max():g}: is lam={lam!r} the optimizer's "
          f"initial_accumulator_value, and is the optimizer mbag.mbag (not mbag_ema, whose statistic is G)?")
  if params is None:
    layout, param_shapes = None, ()
    masks = tuple(terms.present_masks_from_state(opt_state))
  else:
    layout = _infer_layout(params, shapes, block_size, grouping, fuse_blocks)
    param_shapes = tuple(tuple(np.shape(x)) for x in jax.tree_util.tree_leaves(params))
    masks = tuple(jnp.asarray(m) for m in mbag.blocks.bucket_present_masks(params, layout))
  dtype = terms.wide_dtype()
  eta_a, lam_a = jnp.asarray(eta, dtype), jnp.asarray(lam, dtype)
  gamma0 = eta_a / jnp.sqrt(lam_a)
  zero, inf = jnp.zeros([], dtype), jnp.asarray(jnp.inf, dtype)
  num_params = int(sum(np.asarray(m).sum() for m in masks)) if all(
      _is_concrete(m) for m in masks) else 0
  return TrackerState(
      steps=jnp.zeros([], jnp.int32), eta=eta_a, lam=lam_a, sum_gamma_used=gamma0,
      sum_gamma_exact=gamma0, potential_exact=zero, potential_used=zero, max_grad_norm=zero,
      max_full_grad_norm=zero, min_full_grad_sq=inf, num_full_grad=jnp.zeros([], jnp.int32),
      min_loss=inf, max_hessian_norm=zero, masks=masks, layout=layout,
      param_shapes=param_shapes, num_params=num_params)


def _grad_buckets(ts: TrackerState, grads):
  """``(global norm, buckets or None)`` of ``grads`` (a params-like pytree, or a scalar norm)."""
  leaves = jax.tree_util.tree_leaves(grads)
  if not isinstance(grads, (dict, list, tuple)) and len(leaves) == 1 and np.ndim(leaves[0]) == 0:
    return jnp.asarray(leaves[0]).astype(terms.wide_dtype()), None
  shapes = tuple(tuple(np.shape(x)) for x in leaves)
  if ts.layout is None:
    return terms.global_norm(grads), None
  if shapes != ts.param_shapes:
    raise ValueError(
        f"update_tracker: grads must be a pytree like the params given to init_tracker (leaf "
        f"shapes {list(ts.param_shapes)}) or a scalar global norm; got leaf shapes {list(shapes)}")
  return terms.global_norm(grads), mbag.blocks.tree_to_buckets(grads, ts.layout)


def update_tracker(ts: TrackerState, opt_state, grads, *, full_grad=None, loss=None,
                   hessian_norm=None, L=None, C=None, ns_tolerance: float = 1e-3, eta=None
                   ) -> tuple[TrackerState, dict[str, Array]]:
  r"""Adds step t; returns the new state and this step's scalars.

  Args:
    ts: the tracker state after step t-1.
    opt_state: the optimizer state returned by the update of step t (see the module doc).
    grads: g_t, the stochastic gradient that update used: a pytree like the params, or its
      global norm as a scalar (then the elliptical-potential sums are not updated or reported).
    full_grad: optional full-batch gradient at theta_t (after the update); updates the left side
      ``min_t |grad f(theta_t)|^2`` and G.
    loss: optional ``f(theta_t)``; its running minimum gives a conservative C.
    hessian_norm: optional Hessian spectral-norm estimate at a visited point (an estimate of L
      from below, e.g. :func:`theory.problems.hessian_norm_estimate`); its running maximum is kept.
    L, C: if both given, the scalars include ``bound/rhs`` and ``bound/ratio`` (lhs / rhs) with
      gamma of the exact root (the theorem's definition).
    ns_tolerance: tolerance for the predicted Newton-Schulz step count.
    eta: the step size this step applied (a schedule's value at it); None: the fixed ``ts.eta``.
      gamma_t is ``lambda_min(eta_t H_t^{1/2})`` (the paper's definition), and ``ts.eta`` keeps the
      largest step size seen. Theorem 1 assumes a constant one: with a varying schedule the terms
      are measured, but the theorem does not cover the run.

  Returns:
    ``(ts, scalars)``; scalars (all ``[]`` arrays) are named ``bound/...`` for the theorem's terms
    and ``ns/...`` for the Newton-Schulz conditions of the current H (see docs/numerics.md, "Known issues").
  """
  state = mbag.find_mbag_state(opt_state)
  stats, roots, masks = state.dense_stats(), state.dense_roots(), ts.masks
  gnorm, g_buckets = _grad_buckets(ts, grads)
  dtype = terms.wide_dtype()

  spectra_H = [terms.present_spectrum(H, m) for H, m in zip(stats, masks)]
  lam_min_H = jnp.min(jnp.stack([jnp.min(jnp.where(v, w, jnp.inf)) for w, v in spectra_H]))
  eta_t = ts.eta if eta is None else jnp.asarray(eta, dtype)
  g_exact = eta_t * jnp.sqrt(jnp.maximum(lam_min_H, 0.0))
  g_used = terms.gamma_used(roots, masks, eta_t)
  logdet = terms.logdet_ratio_from_inverse(stats, masks, ts.lam, spectra=spectra_H)

  ts = ts.replace(steps=ts.steps + 1, eta=jnp.maximum(ts.eta, eta_t),
                  sum_gamma_used=ts.sum_gamma_used + g_used,
                  sum_gamma_exact=ts.sum_gamma_exact + g_exact,
                  max_grad_norm=jnp.maximum(ts.max_grad_norm, gnorm))
  scalars = {}
  if g_buckets is not None:
    p_exact, p_used = terms.potential_increments(stats, roots, g_buckets)
    ts = ts.replace(potential_exact=ts.potential_exact + p_exact,
                    potential_used=ts.potential_used + p_used)
    scalars["bound/potential_exact"] = ts.potential_exact
    scalars["bound/potential_used"] = ts.potential_used
  if full_grad is not None:
    fsq = jnp.square(terms.global_norm(full_grad))
    ts = ts.replace(min_full_grad_sq=jnp.minimum(ts.min_full_grad_sq, fsq),
                    max_full_grad_norm=jnp.maximum(ts.max_full_grad_norm, jnp.sqrt(fsq)),
                    num_full_grad=ts.num_full_grad + 1)
    scalars["bound/full_grad_sq"] = fsq
  if loss is not None:
    ts = ts.replace(min_loss=jnp.minimum(ts.min_loss, jnp.asarray(loss, dtype)))
    scalars["bound/min_loss"] = ts.min_loss
  if hessian_norm is not None:
    ts = ts.replace(max_hessian_norm=jnp.maximum(ts.max_hessian_norm, jnp.asarray(hessian_norm, dtype)))
    scalars["bound/L_estimate"] = ts.max_hessian_norm

  num_params = terms.num_present(masks).astype(dtype)
  G = jnp.maximum(ts.max_grad_norm, ts.max_full_grad_norm)
  scalars.update({
      "bound/logdet_ratio": logdet,
      "bound/gamma_used": g_used,
      "bound/gamma_exact": g_exact,
      "bound/sum_gamma_used": ts.sum_gamma_used,
      "bound/sum_gamma_exact": ts.sum_gamma_exact,
      "bound/logdet_over_sum_gamma": logdet / ts.sum_gamma_exact,
      "bound/grad_norm": gnorm,
      "bound/G": G,
      "bound/trace_H0_sqrt": terms.trace_H0_sqrt(num_params, ts.lam),
      "bound/inv_sqrt_lambda": 1.0 / jnp.sqrt(ts.lam),
      "bound/lhs": ts.min_full_grad_sq,
      "bound/num_full_grad": ts.num_full_grad,
  })
  if L is not None and C is not None:
    rhs = bound_rhs(ts, logdet, L, C, exact_root=True)
    scalars["bound/rhs"] = rhs
    scalars["bound/ratio"] = ts.min_full_grad_sq / rhs

  norms = [jnp.sqrt(jnp.sum(jnp.where(v, w * w, 0.0), axis=-1, keepdims=True)) for w, v in spectra_H]
  spectra_n = [(w / jnp.where(n > 0, n, 1.0), v) for (w, v), n in zip(spectra_H, norms)]
  a_min = jnp.min(jnp.stack([jnp.min(jnp.where(v, w, jnp.inf)) for w, v in spectra_n]))
  a_max = jnp.max(jnp.stack([jnp.max(jnp.where(v, w, -jnp.inf)) for w, v in spectra_n]))
  dist = jnp.maximum(1.0 - a_min, a_max - 1.0)
  scalars.update({
      "ns/min_normalised_eigenvalue": a_min,
      "ns/max_norm_I_minus_A": dist,
      "ns/sufficient_condition_holds": (dist < 1.0).astype(dtype),
      "ns/predicted_steps": newton_schulz.predicted_steps(spectra_n, ns_tolerance),
      "ns/root_error_vs_current_H": terms.root_error_vs_current(stats, roots),
      "ns/root_residual_at_refresh": state.diagnostics.root_residual,
  })
  return ts, scalars


def bound_rhs(ts: TrackerState, logdet, L, C, *, exact_root: bool = True) -> Array:
  """Theorem 1's right side from the tracker so far (jit-friendly: :data:`bound.rhs_jnp`).

  Args:
    ts: the tracker state.
    logdet: ``log(|G_T| / |G_0|)`` (``scalars["bound/logdet_ratio"]``).
    L, C: the smoothness constant and ``f(theta_0) - f*``.
    exact_root: sum gamma of the exact root (the theorem) or of the roots used.
  """
  dtype = terms.wide_dtype()
  G = jnp.maximum(ts.max_grad_norm, ts.max_full_grad_norm)
  sum_gamma = ts.sum_gamma_exact if exact_root else ts.sum_gamma_used
  d = terms.num_present(ts.masks).astype(dtype)
  return bound.rhs_jnp(jnp.asarray(L, dtype), ts.eta, logdet, G, terms.trace_H0_sqrt(d, ts.lam),
                       ts.lam, jnp.asarray(C, dtype), sum_gamma)
