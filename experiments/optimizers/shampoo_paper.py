r"""Shampoo as in the reference code the paper ran (moskomule/shampoo.pytorch, ``shampoo.py``).

The paper's Table I footnote names github.com/moskomule/shampoo.pytorch. Its optimizer
differs from Gupta et al.'s Algorithm 1 (``experiments.optimizers.shampoo``, the modern
variant here) in ways that this variant reproduces:

* **Roots of order -1/k**: a leaf of order ``k`` (PyTorch layout) gets one factor per axis,
  each raised to ``-1/k``: ``L^{-1/2} G R^{-1/2}`` for a dense weight, four factors at
  ``-1/4`` for a conv kernel, a full ``d x d`` inverse for a bias (``-1/1``); Gupta et
  al. use ``-1/(2k)``.
* **Statistics every step** (no T1); the roots every ``update_freq`` steps (here
  ``root_interval``), counted from step 0, right after that step's statistics.
* **Momentum on the input**: the tensor that is preconditioned (and whose statistics are
  accumulated) is ``(1 - mu) g_t + mu u_{t-1}``, a mix of the raw gradient and the previous
  *update* (``u_{-1} = g_0``), and the step is ``theta -= lr u_t``; there is no momentum
  on the output.
* **Weight decay inside**: ``weight_decay * theta`` is added to that mix before
  preconditioning (``exec.py`` uses 1e-4).
* **Axes one after the other**: the factor of axis ``i`` is accumulated from the tensor
  already multiplied by the roots of axes ``0 .. i-1`` of this step (the code reuses the
  variable), in PyTorch's axis order: ``(out, in)`` for a dense kernel, ``(out, in, kh,
  kw)`` for a conv kernel. Flax leaves are transposed to that order and back.

Numerics: the roots come from ``eigh`` in float32 (the reference: SVD in float32) with the
eigenvalues raised to ``epsilon`` (the factors' exact lower bound), and a root that is not
finite keeps the previous one (counted in the state), as the modern variant.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.optimizers import _checks
from experiments.optimizers import shampoo as shampoo_lib

Array = jax.Array


class ScaleByShampooPaperState(NamedTuple):
  """State of :func:`scale_by_shampoo_paper`.

  Attributes:
    count: [] int32. Steps taken (the reference's ``state["step"]``).
    previous: per leaf (tree-flatten order), float32 in the leaf's shape: the last
      update ``u_{t-1}`` (the reference's ``momentum_buffer``); zeros before the first step.
    stats: per leaf, per axis of its PyTorch layout: ``[d, d]`` float32 factor, from
      ``epsilon I``.
    roots: same shapes: the factor to the power ``-1/k`` in use.
    num_root_fallbacks: [] int32. Roots that came back non-finite and were not used.
  """

  count: Array
  previous: tuple[Array, ...]
  stats: tuple[tuple[Array, ...], ...]
  roots: tuple[tuple[Array, ...], ...]
  num_root_fallbacks: Array


def torch_axes(ndim: int) -> tuple[int, ...]:
  """The permutation from a flax leaf to PyTorch's layout of the same weight.

  Dense ``(in, out) -> (out, in)``; conv ``(..., c_in, c_out) -> (c_out, c_in, ...)``;
  vectors unchanged.
  """
  if ndim <= 1:
    return tuple(range(ndim))
  return (ndim - 1, ndim - 2, *range(ndim - 2))


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  shape = tuple(int(d) for d in shape) or (1,)
  return tuple(shape[a] for a in torch_axes(len(shape)))


def scale_by_shampoo_paper(
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    epsilon: float = 1e-4,
    root_interval: int = 1,
) -> optax.GradientTransformation:
  r"""The reference code's Shampoo direction ``u_t`` (descent: ``theta -= lr u_t``).

  .. math::
    X_t = (1-\mu) g_t + \mu u_{t-1} + \omega \theta_{t-1}\ (u_{-1} = g_0),\qquad
    \text{for } i = 1..k:\ H^{(i)} \mathrel{+}= X_{(i)} X_{(i)}^\top,\
    X \leftarrow X \times_i (H^{(i)})^{-1/k},\qquad u_t = X.

  Args:
    momentum: mu in [0, 1).
    weight_decay: omega >= 0, added before preconditioning (needs ``params`` in ``update``).
    epsilon: initial value ``epsilon I`` of every factor.
    root_interval: recompute the roots when ``t % root_interval == 0`` (t from 0).

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleByShampooPaperState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> tx = optax.chain(scale_by_shampoo_paper(), optax.scale(-0.1))
    >>> state = tx.init({"w": jnp.ones((3, 2))})
    >>> updates, state = tx.update({"w": jnp.ones((3, 2))}, state, {"w": jnp.ones((3, 2))})

  References:
    Gupta, Koren & Singer, ICML 2018; github.com/moskomule/shampoo.pytorch (``shampoo.py``).
  """
  _checks.check_number("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  _checks.check_number("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  _checks.check_number("epsilon", epsilon, lambda v: v > 0, "> 0")
  root_interval = _checks.check_int("root_interval", root_interval, 1)
  no_floor = jnp.zeros([1], jnp.float32)

  def init_fn(params):
    leaves = jax.tree_util.tree_leaves(params)
    previous = tuple(jnp.zeros(np.shape(x), jnp.float32) for x in leaves)
    stats, roots = [], []
    for x in leaves:
      shape = _torch_shape(np.shape(x))
      power = -1.0 / len(shape)
      stats.append(tuple(epsilon * jnp.eye(d, dtype=jnp.float32) for d in shape))
      roots.append(tuple(epsilon ** power * jnp.eye(d, dtype=jnp.float32) for d in shape))
    return ScaleByShampooPaperState(jnp.zeros([], jnp.int32), previous, tuple(stats),
                                    tuple(roots), jnp.zeros([], jnp.int32))

  def precondition(X, stats, roots, fresh_roots: bool):
    """One leaf, axes in order: accumulate, maybe re-root, multiply (see the module docstring)."""
    k = X.ndim
    power = jnp.full([1], -1.0 / k, jnp.float32)
    new_stats, new_roots, fallbacks = [], [], jnp.zeros([], jnp.int32)
    for axis, (S, R) in enumerate(zip(stats, roots)):
      unfolded = jnp.moveaxis(X, axis, 0).reshape(X.shape[axis], -1)
      S = S + unfolded @ unfolded.T
      if fresh_roots:
        root = shampoo_lib._inverse_roots(S[None], power, epsilon, no_floor)[0]  # pylint: disable=protected-access
        ok = jnp.all(jnp.isfinite(root))
        R = jnp.where(ok, root, R)
        fallbacks = fallbacks + (~ok).astype(jnp.int32)
      X = jnp.moveaxis(jnp.tensordot(R, X, axes=((1,), (axis,))), 0, axis)
      new_stats.append(S)
      new_roots.append(R)
    return X, tuple(new_stats), tuple(new_roots), fallbacks

  def update_fn(updates, state, params=None):
    if weight_decay and params is None:
      raise ValueError("scale_by_shampoo_paper with weight_decay > 0 needs params in update()")
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    param_leaves = (jax.tree_util.tree_leaves(params) if params is not None
                    else [None] * len(leaves))
    first = state.count == 0
    is_root_step = state.count % root_interval == 0
    out, previous, stats, roots = [], [], [], []
    fallbacks = jnp.zeros([], jnp.int32)
    for g, p, prev, S, R in zip(leaves, param_leaves, state.previous, state.stats, state.roots):
      g32 = g.astype(jnp.float32)
      X = (1.0 - momentum) * g32 + momentum * jnp.where(first, g32, prev)
      if weight_decay:
        X = X + weight_decay * p.astype(jnp.float32)
      axes = torch_axes(max(g.ndim, 1))
      X = jnp.transpose(X.reshape(g.shape or (1,)), axes)
      X, S, R, bad = jax.lax.cond(
          is_root_step, lambda X, S, R: precondition(X, S, R, True),
          lambda X, S, R: precondition(X, S, R, False), X, S, R)
      u = jnp.transpose(X, np.argsort(axes)).reshape(g.shape)
      out.append(u.astype(g.dtype))
      previous.append(u)
      stats.append(S)
      roots.append(R)
      fallbacks = fallbacks + bad
    new_state = ScaleByShampooPaperState(
        optax.safe_int32_increment(state.count), tuple(previous), tuple(stats), tuple(roots),
        state.num_root_fallbacks + fallbacks)
    return jax.tree_util.tree_unflatten(treedef, out), new_state

  return optax.GradientTransformation(init_fn, update_fn)


def shampoo_paper(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    epsilon: float = 1e-4,
    root_interval: int = 1,
) -> optax.GradientTransformation:
  """The reference code's Shampoo: ``theta -= lr u_t`` with ``u_t`` of :func:`scale_by_shampoo_paper`.

  Args:
    learning_rate: a float or an optax schedule.
    momentum, weight_decay, epsilon, root_interval: see :func:`scale_by_shampoo_paper`
      (reference defaults of ``exec.py``: momentum 0.9, epsilon 1e-4, weight decay 1e-4,
      update_freq 1; the paper's T2 = 50 is ``root_interval=50``).

  Returns:
    An ``optax.GradientTransformation``.
  """
  _checks.check_learning_rate(learning_rate)
  return optax.chain(scale_by_shampoo_paper(momentum, weight_decay, epsilon, root_interval),
                     optax.scale_by_learning_rate(learning_rate))

