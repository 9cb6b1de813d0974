r"""The MBAG preconditioners as optax GradientTransformations (Algorithms 1 and 2, MBAG-N).

Each is the shared engine (:func:`mbag.scale_by_block_preconditioner`) running one
:class:`mbag.algorithms.Algorithm`; the engineering options (:class:`mbag.MBAGOptions`) are
plain keywords of every constructor.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import optax

from mbag._src import algorithms
from mbag._src import engine
from mbag._src import options as options_lib

RootMethod = options_lib.RootMethod


def _caller_stacklevel() -> int:
  """The ``stacklevel`` of the first frame outside the mbag package (the user's call), however
  many of mbag's wrappers lie between: a DeprecationWarning is shown where it is attributed to
  the user's code (``__main__``), not to mbag's."""
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  frame, level = sys._getframe(1), 1  # pylint: disable=protected-access
  while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
    frame, level = frame.f_back, level + 1
  return level


def dimension_numbers_or_grouping(dimension_numbers: Any, grouping: Any) -> Any:
  """``dimension_numbers``, or the deprecated ``grouping`` (its older name), with a warning."""
  if grouping is None:
    return dimension_numbers
  if dimension_numbers is not None:
    raise ValueError("dimension_numbers and grouping are two names of the same argument; "
                     "give only dimension_numbers")
  warnings.warn("mbag: the `grouping=` argument is deprecated; use `dimension_numbers=` "
                "(same values)", DeprecationWarning, stacklevel=_caller_stacklevel())
  return grouping


@options_lib.with_option_keywords
def scale_by_mbag(
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    root_interval: int = 50,
    newton_schulz_steps: int = 5,
    *,
    root_warmup_steps: int = 0,
    dimension_numbers: Any = None,
    graft: Any = None,
    grouping: Any = None,
    options: options_lib.MBAGOptions,
) -> optax.GradientTransformation:
  r"""MBAG preconditioner (Algorithm 1): ``g -> H_t^{1/2} g`` per mini-block.

  .. math::
    H_t = H_{t-1} - \frac{H_{t-1} g_t g_t^T H_{t-1}}{1 + g_t^T H_{t-1} g_t},\quad
    H_0 = I/\lambda,\qquad
    p_t = R_t g_t,\quad R_t = \begin{cases}\sqrt{H_t} & t \equiv 0 \pmod{T_{sqr}}\\
    R_{t-1} & \text{otherwise}\end{cases},\quad R_0 = \lambda^{-1/2} I.

  ``H_t`` is the exact inverse of ``G_t = lambda I + sum_s g_s g_s^T`` (full-matrix
  AdaGrad statistics restricted to each block), kept by Sherman-Morrison.

  A gradient containing NaN or Inf is treated as zero: the statistics stay
  exactly as they were, the returned direction is zero and
  ``diagnostics.num_nonfinite_grads`` grows. A root that comes back non-finite
  for a block keeps that block's previous root.

  Args:
    block_size: tau, the size of a mini-block (small conv kernels keep their ``kh*kw`` taps
      whole, see :func:`mbag.default_dimension_numbers`); must be static (a Python int).
    initial_accumulator_value: lambda > 0.
    root_interval: T_sqr; the root is recomputed when ``t % root_interval == 0``.
    newton_schulz_steps: T_NS, iterations of the coupled Newton-Schulz iteration.
    root_warmup_steps: also recompute the root at every step ``t <= root_warmup_steps``.
      0 (default) is the paper's algorithm, whose first ``root_interval - 1`` steps use
      ``lambda^{-1/2} I`` (momentum SGD with a ``lambda^{-1/2}``-times larger step); 1 takes the
      first root at step 1 (docs/optimizer.md, "From AdamW to MBAG", says which start to pick).
    dimension_numbers: which axes of each leaf form blocks (default: the paper's rules,
      :func:`mbag.default_dimension_numbers`). One spec for every leaf, a pytree of specs (or
      None) with the params' structure or a prefix of it, or a callable
      ``(key_path, shape) -> spec | None`` (e.g. :func:`mbag.dimension_numbers_by_path`).
      A spec is a :class:`mbag.BlockDimensionNumbers`, an ``optax.contrib.MuonDimensionNumbers``
      (block = its reduction axes), an int (this leaf's block size, default rule) or a low-level
      :class:`mbag.BlockSpec`. Leaves whose grouping the defaults had to guess are listed in
      one warning at ``init``; ``print(mbag.describe(params, tx))`` shows the whole layout.
    graft: None (default: the paper's algorithm), "adam", "rmsprop", "adagrad" or an
      :class:`mbag.Graft`: each leaf's direction rescaled to the norm of that diagonal method's
      direction, so that its learning rate and schedule carry over (one more float32 per
      parameter of state).
    grouping: deprecated, the older name of ``dimension_numbers``.
    options: not an argument: the fields of :class:`mbag.MBAGOptions` are keywords
      (``root_method``, ``newton_schulz_tolerance``, ``newton_schulz_max_steps``, ``fuse_blocks``,
      ``statistics_dtype``, ``shard_blocks``, ``storage``, ``root_dtype``, ``root_chunk_size``).

  Returns:
    An ``optax.GradientTransformation`` with state :class:`mbag.ScaleByMBAGState`.

  Example:
    >>> import jax.numpy as jnp, optax, mbag
    >>> tx = optax.chain(mbag.scale_by_mbag(block_size=2, root_interval=1), optax.scale(-0.1))
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([1.0, 0.0, 0.0])}, state)

  References:
    Lee, "MBAG: A Scalable Mini-Block Adaptive Gradient Method for Deep Neural
    Networks", Algorithm 1 and Section IV.
  """
  return engine.scale_by_block_preconditioner(
      algorithms.MBAG, block_size=block_size, initial_accumulator_value=initial_accumulator_value,
      root_interval=root_interval, newton_schulz_steps=newton_schulz_steps,
      root_warmup_steps=root_warmup_steps, graft=graft, options=options,
      dimension_numbers=dimension_numbers_or_grouping(dimension_numbers, grouping))


@options_lib.with_option_keywords
def scale_by_mbag_ema(
    decay: float = 0.99,
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    root_interval: int = 50,
    newton_schulz_steps: int = 5,
    *,
    root_warmup_steps: int = 0,
    dimension_numbers: Any = None,
    graft: Any = None,
    grouping: Any = None,
    options: options_lib.MBAGOptions,
) -> optax.GradientTransformation:
  r"""MBAG-EMA preconditioner (Algorithm 2): ``g -> G_t^{-1/2} g`` per mini-block.

  .. math::
    G_t = \alpha G_{t-1} + (1 - \alpha) g_t g_t^T,\quad G_0 = \lambda I,\qquad
    p_t = R_t g_t,\ R_t = G_t^{-1/2} \text{ every } T_{sqr} \text{ steps},\ R_0 = \lambda^{-1/2} I.

  The inverse root is the ``Y`` output of the same Newton-Schulz iteration
  run on ``G`` (no Sherman-Morrison). Arguments as in :func:`scale_by_mbag`, plus ``decay``
  (alpha, in (0, 1)). Non-finite gradients leave G unchanged.

  References:
    Lee, "MBAG", Algorithm 2.
  """
  options_lib.check("decay", decay, lambda v: 0 < v < 1, "in (0, 1)")
  return engine.scale_by_block_preconditioner(
      algorithms.MBAG_EMA, block_size=block_size,
      initial_accumulator_value=initial_accumulator_value, root_interval=root_interval,
      newton_schulz_steps=newton_schulz_steps, root_warmup_steps=root_warmup_steps, graft=graft,
      hyperparameters={"decay": decay}, options=options,
      dimension_numbers=dimension_numbers_or_grouping(dimension_numbers, grouping))


@options_lib.with_option_keywords
def scale_by_mbag_n(
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    *,
    dimension_numbers: Any = None,
    graft: Any = None,
    grouping: Any = None,
    options: options_lib.MBAGOptions,
) -> optax.GradientTransformation:
  r"""MBAG-N preconditioner: ``g -> H_t g`` per mini-block, with H_t as in Algorithm 1.

  No square root: the gradient is preconditioned by ``G_t^{-1}`` at every step
  (Section IV.B, "MBAG-N"). Arguments as in :func:`scale_by_mbag`; it computes no root, so
  the root options (``root_method``, the Newton-Schulz settings, ``root_dtype``,
  ``root_chunk_size``) set away from their defaults are refused with a ValueError.
  """
  return engine.scale_by_block_preconditioner(
      algorithms.MBAG_N, block_size=block_size,
      initial_accumulator_value=initial_accumulator_value, graft=graft, options=options,
      dimension_numbers=dimension_numbers_or_grouping(dimension_numbers, grouping))
