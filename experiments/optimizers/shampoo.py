"""Shampoo (Gupta, Koren & Singer, 2018) as an optax GradientTransformation.

Every leaf is seen as a tensor ``G`` of order ``k``. For each of its axes ``i``
Shampoo keeps a Kronecker factor, the contraction of ``G`` with itself over all
other axes, and preconditions with the inverse ``2k``-th root of each factor:

.. math::
  H^{(i)}_t = \\epsilon I + \\sum_{s \\in S_t} G_s^{(i)} G_s^{(i)\\top},\\qquad
  P_t = G_t \\times_1 (H^{(1)})^{-1/2k} \\cdots \\times_k (H^{(k)})^{-1/2k}.

For a matrix this is Algorithm 1 of the paper, ``P = L^{-1/4} G R^{-1/4}`` with
``L = eps I + sum G G^T`` and ``R = eps I + sum G^T G``. ``S_t`` is the set of
steps at which the statistics were updated (every ``statistics_interval`` steps,
T1), and the roots are recomputed every ``root_interval`` steps (T2) by an
eigendecomposition in float32, as done in the paper's experiments (MBAG Sec. VI).
"""

from __future__ import annotations

import collections
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.optimizers import _checks

Array = jax.Array
TensorMode = Literal["matrix", "tensor"]
_TENSOR_MODES = ("matrix", "tensor")


class ScaleByShampooState(NamedTuple):
  """State of :func:`scale_by_shampoo`.

  Attributes:
    count: [] int32. Number of updates so far (t).
    stats: per leaf (tree-flatten order), per axis of its preconditioned shape
      (see :func:`preconditioned_shape`): the Kronecker factor ``H^(i)``, [d, d]
      float32, or its diagonal, [d] float32, for axes longer than
      ``max_preconditioner_dim``. Empty tuple for empty leaves.
    roots: same shapes as ``stats``: ``(H^(i))^{-1/2k}`` in use (possibly stale).
    num_root_fallbacks: [] int32. Factors whose recomputed root was not finite and
      kept their previous root.
  """

  count: Array
  stats: tuple[tuple[Array, ...], ...]
  roots: tuple[tuple[Array, ...], ...]
  num_root_fallbacks: Array


class _LeafPlan(NamedTuple):
  shape: tuple[int, ...]  # shape of the tensor Shampoo preconditions
  full: tuple[bool, ...]  # per axis: full Kronecker factor (True) or its diagonal


def preconditioned_shape(shape: tuple[int, ...], tensor_mode: TensorMode) -> tuple[int, ...]:
  """The shape Shampoo sees for a leaf of ``shape``.

  ``"matrix"``: leaves of order >= 3 are reshaped to 2-D by merging all axes but
  the last, so a flax conv kernel ``(kh, kw, c_in, c_out)`` becomes
  ``(kh*kw*c_in, c_out)``. ``"tensor"``: the leaf keeps its order (the paper's
  Algorithm 2). A scalar is seen as a vector of length 1 in both modes.
  """
  shape = tuple(int(d) for d in shape)
  if not shape:
    return (1,)
  if tensor_mode == "matrix" and len(shape) > 2:
    return (math.prod(shape[:-1]), shape[-1])
  return shape


def _plan(shape: tuple[int, ...], tensor_mode: TensorMode, max_dim: int) -> _LeafPlan | None:
  if math.prod(shape) == 0 and len(shape) > 0:
    return None
  pshape = preconditioned_shape(shape, tensor_mode)
  return _LeafPlan(pshape, tuple(d <= max_dim for d in pshape))


def _axis_statistic(G: Array, axis: int, full: bool) -> Array:
  """``G_(i) G_(i)^T`` (contraction over every other axis), or its diagonal."""
  others = tuple(a for a in range(G.ndim) if a != axis)
  if full:
    return jnp.tensordot(G, G, axes=(others, others))
  return jnp.sum(G * G, axis=others)


def _precondition(G: Array, roots: tuple[Array, ...], full: tuple[bool, ...]) -> Array:
  """``G x_1 R_1 ... x_k R_k`` (mode-i products with symmetric or diagonal roots)."""
  for axis, (R, is_full) in enumerate(zip(roots, full)):
    if is_full:
      G = jnp.moveaxis(jnp.tensordot(R, G, axes=((1,), (axis,))), 0, axis)
    else:
      G = G * R.reshape([-1 if a == axis else 1 for a in range(G.ndim)])
  return G


def _inverse_roots(S: Array, power: Array, epsilon, relative_floor) -> Array:
  """``S^power`` for a batch [n, d, d] of symmetric matrices whose spectrum is >= epsilon.

  Eigenvalues are raised to ``max(epsilon, relative_floor * lambda_max)``:
  ``epsilon`` is the exact lower bound of a Shampoo factor (``eps I`` + a PSD
  sum), and float32 ``eigh`` resolves eigenvalues only down to about
  ``d * eps_f32 * lambda_max``; below that, rounding-level components of the
  gradient along numerically null eigenvectors would be amplified by up to
  ``(lambda_max / epsilon)^{1/4}`` per factor (measured: 1.1e-3 relative error on a
  rank-one 3x4 step with epsilon=1e-6 without the relative floor, 2e-5 with it).
  """
  S = 0.5 * (S + jnp.swapaxes(S, -1, -2))
  w, Q = jnp.linalg.eigh(S)
  floor = jnp.maximum(epsilon, relative_floor[:, None] * jnp.max(w, axis=-1, keepdims=True))
  w = jnp.maximum(w, floor) ** power[:, None]
  return jnp.einsum("nij,nj,nkj->nik", Q, w, Q)


def _all_finite(leaves) -> Array:
  flags = [jnp.all(jnp.isfinite(x)) for x in leaves]
  return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def scale_by_shampoo(
    statistics_interval: int = 5,
    root_interval: int = 50,
    epsilon: float = 1e-4,
    *,
    max_preconditioner_dim: int = 2048,
    tensor_mode: TensorMode = "matrix",
    relative_eigenvalue_floor: float | None = None,
) -> optax.GradientTransformation:
  r"""Shampoo preconditioner: ``g -> G x_1 (H^(1))^{-1/2k} ... x_k (H^(k))^{-1/2k}`` per leaf.

  .. math::
    H^{(i)}_t = H^{(i)}_{t-1} + [t \equiv 1 \ (\mathrm{mod}\ T_1)]\, G_t^{(i)} G_t^{(i)\top},
    \quad H^{(i)}_0 = \epsilon I,\qquad
    R^{(i)}_t = (H^{(i)}_t)^{-1/2k} \text{ when } t \equiv 1 \ (\mathrm{mod}\ T_2),
    \text{ else } R^{(i)}_{t-1}.

  Steps are counted from 1, so the first step updates the statistics and computes
  the roots from ``eps I + G_1^(i) G_1^(i)T`` (the reference PyTorch
  implementation also refreshes at its first step). A vector (bias, BatchNorm
  scale) is a tensor of order 1: one ``d x d`` factor with power ``-1/2``, i.e.
  full-matrix AdaGrad on that vector. An axis longer than
  ``max_preconditioner_dim`` keeps only the diagonal of its factor
  (``eps + sum_j G_ij^2``, same power), so memory stays ``O(d)`` for it.

  A step whose gradient has a NaN or Inf leaves the statistics unchanged; a root
  that comes back non-finite keeps the previous one (counted in the state).

  Args:
    statistics_interval: T1, update the statistics when ``t % T1 == 1 % T1``.
    root_interval: T2, recompute the inverse roots when ``t % T2 == 1 % T2``.
    epsilon: initial value ``eps I`` of every factor (the paper's epsilon).
    max_preconditioner_dim: axes longer than this get a diagonal factor.
    tensor_mode: "matrix" (default) reshapes leaves of order >= 3 to
      ``(prod(shape[:-1]), shape[-1])``; "tensor" keeps one factor per axis
      (the paper's Algorithm 2, power ``-1/2k``).
    relative_eigenvalue_floor: before the root, eigenvalues of a full factor are
      raised to this fraction of its largest one (float32 ``eigh`` accuracy; no
      effect while the factor's condition number is below its inverse). None:
      ``d * finfo(float32).eps`` for a ``d x d`` factor.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleByShampooState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from experiments.optimizers.shampoo import scale_by_shampoo
    >>> tx = optax.chain(scale_by_shampoo(1, 1), optax.scale(-0.1))
    >>> params = {"w": jnp.ones((3, 2))}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.ones((3, 2))}, state)

  References:
    Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018.
  """
  statistics_interval = _checks.check_int("statistics_interval", statistics_interval, 1)
  root_interval = _checks.check_int("root_interval", root_interval, 1)
  max_dim = _checks.check_int("max_preconditioner_dim", max_preconditioner_dim, 1)
  _checks.check_number("epsilon", epsilon, lambda v: v > 0, "> 0")
  _checks.check_choice("tensor_mode", tensor_mode, _TENSOR_MODES)
  if relative_eigenvalue_floor is not None:
    _checks.check_number("relative_eigenvalue_floor", relative_eigenvalue_floor,
                         lambda v: 0 <= v < 1, "in [0, 1) or None")

  def floor_for(d):
    if relative_eigenvalue_floor is not None:
      return relative_eigenvalue_floor
    return d * float(jnp.finfo(jnp.float32).eps)

  def plans_of(leaves):
    return [_plan(tuple(np.shape(x)), tensor_mode, max_dim) for x in leaves]

  def init_fn(params):
    leaves = jax.tree_util.tree_leaves(params)
    eps = jnp.asarray(epsilon, jnp.float32)
    stats, roots = [], []
    for plan in plans_of(leaves):
      if plan is None:
        stats.append(())
        roots.append(())
        continue
      power = -1.0 / (2 * len(plan.shape))
      stats.append(tuple(eps * jnp.eye(d, dtype=jnp.float32) if full else jnp.full([d], eps)
                         for d, full in zip(plan.shape, plan.full)))
      roots.append(tuple(eps ** power * jnp.eye(d, dtype=jnp.float32) if full
                         else jnp.full([d], eps ** power) for d, full in zip(plan.shape, plan.full)))
    return ScaleByShampooState(jnp.zeros([], jnp.int32), tuple(stats), tuple(roots),
                               jnp.zeros([], jnp.int32))

  def compute_roots(stats, old_roots, plans):
    """All roots at once; full factors of equal size share one batched eigh."""
    new_roots = [list(r) for r in old_roots]
    groups = collections.defaultdict(list)
    fallbacks = jnp.zeros([], jnp.int32)
    for li, plan in enumerate(plans):
      if plan is None:
        continue
      power = -1.0 / (2 * len(plan.shape))
      for ai, full in enumerate(plan.full):
        S, old = stats[li][ai], old_roots[li][ai]
        if full:
          groups[S.shape[0]].append((li, ai, power))
        else:
          root = jnp.maximum(S, epsilon) ** power
          ok = jnp.all(jnp.isfinite(root))
          new_roots[li][ai] = jnp.where(ok, root, old)
          fallbacks = fallbacks + (~ok).astype(jnp.int32)
    for members in groups.values():
      S = jnp.stack([stats[li][ai] for li, ai, _ in members])
      power = jnp.asarray([p for _, _, p in members], jnp.float32)
      floor = jnp.full([len(members)], floor_for(S.shape[-1]), jnp.float32)
      roots = _inverse_roots(S, power, epsilon, floor)
      ok = jnp.all(jnp.isfinite(roots), axis=(-2, -1))
      fallbacks = fallbacks + jnp.sum(~ok).astype(jnp.int32)
      for j, (li, ai, _) in enumerate(members):
        new_roots[li][ai] = jnp.where(ok[j], roots[j], old_roots[li][ai])
    return tuple(tuple(r) for r in new_roots), fallbacks

  def update_fn(updates, state, params=None):
    del params
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    plans = plans_of(leaves)
    grads = [None if p is None else x.astype(jnp.float32).reshape(p.shape)
             for x, p in zip(leaves, plans)]
    count = optax.safe_int32_increment(state.count)
    finite = _all_finite([g for g in grads if g is not None])
    is_stat_step = jnp.logical_and((count - 1) % statistics_interval == 0, finite)
    is_root_step = (count - 1) % root_interval == 0

    def add_statistics(stats):
      return tuple(() if p is None else tuple(
          S + _axis_statistic(g, axis, full) for axis, (S, full) in enumerate(zip(stats_i, p.full)))
                   for stats_i, g, p in zip(stats, grads, plans))

    stats = jax.lax.cond(is_stat_step, add_statistics, lambda s: s, state.stats)
    roots, fallbacks = jax.lax.cond(
        is_root_step, lambda s, r: compute_roots(s, r, plans),
        lambda s, r: (r, jnp.zeros([], jnp.int32)), stats, state.roots)
    out = [x if p is None else _precondition(g, r, p.full).reshape(x.shape).astype(x.dtype)
           for x, g, r, p in zip(leaves, grads, roots, plans)]
    new_state = ScaleByShampooState(count, stats, roots, state.num_root_fallbacks + fallbacks)
    return jax.tree_util.tree_unflatten(treedef, out), new_state

  return optax.GradientTransformation(init_fn, update_fn)


def shampoo(
    learning_rate: optax.ScalarOrSchedule,
    *,
    statistics_interval: int = 5,
    root_interval: int = 50,
    epsilon: float = 1e-4,
    momentum: float = 0.9,
    max_preconditioner_dim: int = 2048,
    tensor_mode: TensorMode = "matrix",
    relative_eigenvalue_floor: float | None = None,
) -> optax.GradientTransformation:
  r"""Shampoo with heavy-ball momentum on the preconditioned gradient.

  .. math::
    v_t = \mu v_{t-1} + P_t,\qquad \theta_t = \theta_{t-1} - \eta_t v_t,

  with ``P_t`` from :func:`scale_by_shampoo` (the same momentum form as MBAG).

  Args:
    learning_rate: eta, a float or an optax schedule.
    statistics_interval, root_interval, epsilon, max_preconditioner_dim,
    tensor_mode, relative_eigenvalue_floor: see :func:`scale_by_shampoo`.
    momentum: mu in [0, 1).

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018.
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_number("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  return optax.chain(
      scale_by_shampoo(statistics_interval, root_interval, epsilon,
                       max_preconditioner_dim=max_preconditioner_dim, tensor_mode=tensor_mode,
                       relative_eigenvalue_floor=relative_eigenvalue_floor),
      optax.trace(decay=momentum, nesterov=False),
      optax.scale_by_learning_rate(learning_rate))
