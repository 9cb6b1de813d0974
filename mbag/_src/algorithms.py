r"""What makes each MBAG variant itself: three small functions per algorithm.

The engine (:mod:`mbag._src.engine`) cuts the gradient into mini-blocks, stacks blocks of equal
size into buckets, guards against non-finite values, recomputes roots in chunks every
``T_sqr`` steps, shards and reports. An :class:`Algorithm` tells it only

* ``initial``: the statistic ``S_0`` and the root ``R_0`` as multiples of the identity;
* ``update``: the new statistic of a bucket of blocks from their gradients ``g`` (``[n, b]``);
* ``root``: which matrix function of the statistic is kept as the root (None: no root);
* ``direction``: the preconditioned gradient ``p`` of every block.

Algorithm 1 (the paper's MBAG), for every block::

  H_t = H_{t-1} - (H_{t-1} g)(H_{t-1} g)^T / (1 + g^T H_{t-1} g)   # Sherman-Morrison, H = G^{-1}
  R_t = H_t^{1/2} every T_sqr steps (Newton-Schulz), else R_{t-1}
  p_t = R_t g

Algorithm 2 (MBAG-EMA): ``G_t = alpha G_{t-1} + (1 - alpha) g g^T``, ``R_t = G_t^{-1/2}``,
``p_t = R_t g``. MBAG-N: Algorithm 1's ``H_t`` and ``p_t = H_t g``, no root.

A new variant is a new :class:`Algorithm` (usually one new function and ``_replace`` on an
existing one) given to :func:`mbag.scale_by_block_preconditioner`; see docs/optimizer.md,
"Writing your own variant".
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from mbag._src import linalg
from mbag._src import options as options_lib
from mbag._src import storage as storage_lib

Array = jax.Array


class StepContext(NamedTuple):
  """What an algorithm's functions may read besides the block arrays.

  Attributes:
    store: how the blocks are stored (``store.decode(S)``: dense ``[n, b, b]`` matrices in the
      statistics' dtype; ``store.outer(w)``: ``w w^T`` in the stored form; ``store.symmetric``).
    finite: ``[]`` bool: the step's whole gradient is finite. When it is not, the engine passes
      zero gradients, and an update must leave the statistic exactly as it was.
    count: ``[]`` int32: t, the number of the step being taken (1 for the first).
    hyperparameters: the algorithm's own hyperparameters by name (e.g. ``{"decay": alpha}``);
      scalars, possibly traced (``optax.inject_hyperparams``).
    newton_schulz_steps: T_NS.
    options: the :class:`mbag.MBAGOptions` (root method, Newton-Schulz tolerance, ...).
  """

  store: storage_lib.BlockStorage
  finite: Array
  count: Array
  hyperparameters: Mapping[str, Any]
  newton_schulz_steps: Any
  options: options_lib.MBAGOptions

  def matrix_root(self, A: Array, kind: linalg.RootKind) -> tuple[Array, linalg.RootInfo]:
    """``A^{1/2}`` (``kind="sqrt"``) or ``A^{-1/2}`` (``"inv_sqrt"``) of dense ``[n, b, b]``
    blocks by the configured method (:func:`mbag.linalg.matrix_root`)."""
    o = self.options
    return linalg.matrix_root(A, kind, method=o.root_method, num_steps=self.newton_schulz_steps,
                              tolerance=o.newton_schulz_tolerance,
                              max_steps=o.newton_schulz_max_steps)


class BlockUpdate(NamedTuple):
  """What ``Algorithm.update`` returns for one bucket of ``n`` blocks of size ``b``.

  Attributes:
    statistic: the new statistic, in the stored form (``[n, b, b]`` or packed ``[n, b(b+1)/2]``).
    ok: ``[n]`` bool: blocks whose statistic was updated. A block that is not ok must keep its
      statistic; the engine then zeroes its gradient (no direction, no momentum from it) and
      counts it in ``diagnostics.num_skipped_blocks``.
    denominator: ``[n]`` Sherman-Morrison denominators ``1 + g^T H g`` (their minimum is
      ``diagnostics.min_denominator``), or None for an update without one.
    preconditioned: anything the direction reuses from the update (MBAG-N: ``H_{t-1} g``), or None.
  """

  statistic: Array
  ok: Array
  denominator: Array | None = None
  preconditioned: Array | None = None


# initial(lam) -> (c_S, c_R): S_0 = c_S I and R_0 = c_R I (c_R None: no root).
InitialFn = Callable[[Array], tuple[Array, Array | None]]
UpdateFn = Callable[[Array, Array, StepContext], BlockUpdate]
RootFn = Callable[[Array, StepContext], tuple[Array, linalg.RootInfo]]
# direction(update, R, g) -> p: R the dense root (statistics' dtype) or None, g the gradient
# blocks with zeros where the update was not ok.
DirectionFn = Callable[[BlockUpdate, Array | None, Array], Array]


class Algorithm(NamedTuple):
  """One MBAG variant, as the engine runs it (see the module docstring).

  Attributes:
    name: its preconditioner's name, shown by :func:`mbag.describe`.
    initial: ``lam -> (c_S, c_R)``: ``S_0 = c_S I``, ``R_0 = c_R I`` (``c_R`` None: no root).
    update: ``(S, g, ctx) -> BlockUpdate``: the new statistic of a bucket of blocks.
    root: ``(A, ctx) -> (R, RootInfo)``: the root of the dense statistic ``A`` ``[n, b, b]``,
      recomputed every ``root_interval`` steps (blocks whose root is not finite keep the old
      one); None for a variant without a root.
    direction: ``(update, R, g) -> p``: the preconditioned gradient of every block ``[n, b]``.
    hyperparameters: the names of the hyperparameters ``update``, ``root`` or ``direction`` read
      from ``ctx.hyperparameters`` (the engine checks that they are given).
  """

  name: str
  initial: InitialFn
  update: UpdateFn
  root: RootFn | None
  direction: DirectionFn
  hyperparameters: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- Algorithm 1


def sherman_morrison_update(S: Array, g: Array, ctx: StepContext) -> BlockUpdate:
  r"""``H_t = H_{t-1} - u u^T / (1 + g^T u)``, ``u = H_{t-1} g`` (the paper's Eq. 4).

  The exact inverse of ``G_t = G_{t-1} + g g^T``. A block whose denominator is not positive and
  finite, or whose update overflows, is not ok (keeps ``H_{t-1}``).
  """
  u = jnp.einsum("nij,nj->ni", ctx.store.decode(S), g)
  denominator, w, ok = linalg.rank_one_factor(u, g)
  if ctx.store.symmetric:
    # Materialise w ([n, b], small): otherwise XLA recomputes it, gathers and all, inside the
    # fused update of every packed entry (measured 2.7x slower at b = 9).
    w = jax.lax.optimization_barrier(w)
  return BlockUpdate(S - ctx.store.outer(w), ok, denominator, u)


def sqrt_root(A: Array, ctx: StepContext) -> tuple[Array, linalg.RootInfo]:
  """``H^{1/2}`` (Algorithm 1: the statistic is the inverse ``H = G^{-1}``)."""
  return ctx.matrix_root(A, "sqrt")


def root_direction(update: BlockUpdate, R: Array | None, g: Array) -> Array:
  """``p = R g`` with the root in use."""
  del update
  return jnp.einsum("nij,nj->ni", R, g)


MBAG = Algorithm(
    name="scale_by_mbag",
    initial=lambda lam: (1.0 / lam, jax.lax.rsqrt(lam)),  # H_0 = I / lam, R_0 = lam^{-1/2} I
    update=sherman_morrison_update,
    root=sqrt_root,
    direction=root_direction)


# ----------------------------------------------------------------------------- Algorithm 2


def ema_update(S: Array, g: Array, ctx: StepContext) -> BlockUpdate:
  r"""``G_t = \alpha G_{t-1} + (1 - \alpha) g g^T`` (Algorithm 2; ``alpha`` = ``decay``).

  A block whose ``g g^T`` overflows is not ok; on a step whose gradient is not finite every block
  keeps its statistic (``alpha`` is taken as 1, where a zero gradient would still decay G).
  """
  ok = jnp.all(jnp.isfinite(g * g), axis=-1)
  g = jnp.where(ok[:, None], g, 0.0)
  a = jnp.where(ok & ctx.finite, jnp.asarray(ctx.hyperparameters["decay"], S.dtype), 1.0)
  a = a.reshape(a.shape + (1,) * (S.ndim - 1))
  return BlockUpdate(a * S + (1.0 - a) * ctx.store.outer(g), ok)


def inverse_sqrt_root(A: Array, ctx: StepContext) -> tuple[Array, linalg.RootInfo]:
  """``G^{-1/2}`` (Algorithm 2: the statistic is ``G`` itself)."""
  return ctx.matrix_root(A, "inv_sqrt")


MBAG_EMA = Algorithm(
    name="scale_by_mbag_ema",
    initial=lambda lam: (lam, jax.lax.rsqrt(lam)),  # G_0 = lam I, R_0 = lam^{-1/2} I
    update=ema_update,
    root=inverse_sqrt_root,
    direction=root_direction,
    hyperparameters=("decay",))


# ----------------------------------------------------------------------------- MBAG-N


def inverse_direction(update: BlockUpdate, R: Array | None, g: Array) -> Array:
  """``p = H_t g = H_{t-1} g / (1 + g^T H_{t-1} g)`` (MBAG-N): no second pass over ``H``."""
  del R, g
  ok = update.ok
  return (jnp.where(ok[:, None], update.preconditioned, 0.0)
          / jnp.where(ok, update.denominator, 1.0)[:, None])


MBAG_N = Algorithm(
    name="scale_by_mbag_n",
    initial=lambda lam: (1.0 / lam, None),
    update=sherman_morrison_update,
    root=None,
    direction=inverse_direction)
