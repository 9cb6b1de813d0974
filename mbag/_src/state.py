"""The state of the MBAG preconditioners: statistics, roots, diagnostics, and how to find it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from mbag._src import linalg

Array = jax.Array


class MBAGDiagnostics(NamedTuple):
  """Numerical health of the preconditioner, kept in the state (all scalars).

  Attributes:
    root_residual: [] float32. Largest relative residual over all blocks of the
      root computed last (``||X^2 - H||_F/||H||_F`` for Algorithm 1,
      ``||Y G Y - I||_F/||I||_F`` for Algorithm 2); 0 before the first root.
      Dominated by the large eigenvalues: it can be tiny while small ones are wrong.
    root_error: [] float32. Largest ``||I - Y X||_F`` over blocks of the last root
      (see :class:`mbag.linalg.RootInfo`): ~ the worst relative error of the root over
      eigen-directions. ~1 means some direction has not converged.
    root_steps: [] int32. Newton-Schulz iterations used by the last root (0: eigh or none yet).
    min_denominator: [] float32. Smallest Sherman-Morrison denominator
      ``1 + g^T H g`` of the last step; >= 1 while H is positive definite
      (always 1 for Algorithm 2, which has none).
    num_nonfinite_grads: [] int32. Steps whose gradient had a NaN or Inf (treated as zero).
    num_root_fallbacks: [] int32. Blocks whose new root was not finite and kept the previous one.
    num_skipped_blocks: [] int32. Block statistic updates skipped because they would
      overflow or (Sherman-Morrison) had a non-positive denominator.
  """

  root_residual: Array
  root_error: Array
  root_steps: Array
  min_denominator: Array
  num_nonfinite_grads: Array
  num_root_fallbacks: Array
  num_skipped_blocks: Array


class ScaleByMBAGState(NamedTuple):
  """State of :func:`scale_by_mbag`, :func:`scale_by_mbag_ema` and :func:`scale_by_mbag_n`.

  Attributes:
    count: [] int32. Number of updates so far (t).
    stats: per bucket, [n, b, b] float32: H_t = G_t^{-1} (Algorithm 1, MBAG-N)
      or the EMA statistic G_t (Algorithm 2); with ``storage="symmetric"`` the packed upper
      triangles, [n, b(b+1)/2]. Padded coordinates are zero.
    roots: per bucket, [n, b, b] (or [n, b(b+1)/2]) float32, or ``root_dtype``: the root in
      use, H^{1/2} or G^{-1/2}; empty for MBAG-N.
    diagnostics: MBAGDiagnostics.
    root_due: [] bool. A scheduled root was skipped (non-finite gradient): the next step with
      a finite gradient computes it.
    graft: with grafting (``graft=``), per bucket, [n, b] the diagonal method's second moments
      (``mbag/_src/graft.py``); () without.

  For parameters without leaves (and for ``optax.tree.map_params``' placeholder) ``stats`` and
  ``roots`` are a single empty ``[0]`` array instead of tuples, so that the state's structure
  never depends on the parameters' beyond the number of buckets.
  """

  count: Array
  stats: tuple[Array, ...] | Array
  roots: tuple[Array, ...] | Array
  diagnostics: MBAGDiagnostics
  root_due: Array
  graft: tuple[Array, ...] = ()

  def dense_stats(self) -> tuple[Array, ...]:
    """The statistics as ``[n, b, b]`` matrices, whatever the storage."""
    if not isinstance(self.stats, tuple):
      return ()
    return tuple(_dense(S, S.dtype) for S in self.stats)

  def dense_roots(self) -> tuple[Array, ...]:
    """The roots as ``[n, b, b]`` matrices in the statistics' dtype, whatever the storage and
    ``root_dtype``."""
    if not isinstance(self.roots, tuple):
      return ()
    return tuple(_dense(R, S.dtype) for R, S in zip(self.roots, self.stats))


def _dense(x: Array, dtype) -> Array:
  x = linalg.unpack_symmetric(x) if x.ndim == 2 else x
  return x if x.dtype == dtype else x.astype(dtype)


def find_mbag_state(opt_state: Any) -> ScaleByMBAGState:
  """Returns the (single) :class:`ScaleByMBAGState` inside a possibly nested optax state.

  Raises ValueError if there is none or more than one.
  """
  found = [s for s in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda x: isinstance(x, ScaleByMBAGState)) if isinstance(s, ScaleByMBAGState)]
  if len(found) != 1:
    raise ValueError(f"expected exactly one ScaleByMBAGState in the optimizer state, found {len(found)}")
  return found[0]
