"""Batched small-matrix linear algebra for MBAG: Sherman-Morrison and matrix roots.

Every function works on stacks of square matrices ``[..., b, b]`` and is
jit-, vmap- and grad-free friendly (no Python branching on traced values).

Rows and columns that are exactly zero are treated as *absent* coordinates:
the roots computed here are zero on them. MBAG pads blocks whose size does
not divide a leaf with such coordinates, and this convention is what makes
padding leave the result unchanged.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
RootKind = Literal["sqrt", "inv_sqrt"]


def packed_size(block_size: int) -> int:
  """Floats in the packed upper triangle of a ``b x b`` symmetric matrix: ``b (b + 1) / 2``."""
  return block_size * (block_size + 1) // 2


def packed_block_size(size: int) -> int:
  """The ``b`` whose packed upper triangle has ``size`` entries; ValueError if there is none."""
  b = (math.isqrt(8 * size + 1) - 1) // 2
  if packed_size(b) != size:
    raise ValueError(f"{size} is not the size of a packed symmetric matrix (b (b + 1) / 2)")
  return b


@functools.lru_cache(maxsize=None)
def _triangle(b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Row and column of each packed entry (row-major upper triangle), and the ``[b, b]`` map
  from a dense position to its packed entry."""
  rows, cols = np.triu_indices(b)
  full = np.empty((b, b), np.int32)
  full[rows, cols] = np.arange(rows.size, dtype=np.int32)
  full[cols, rows] = np.arange(rows.size, dtype=np.int32)
  for a in (rows, cols, full):
    a.setflags(write=False)
  return rows.astype(np.int32), cols.astype(np.int32), full


def pack_symmetric(A: Array) -> Array:
  r"""The upper triangles of symmetric matrices, row by row: ``[..., b, b] -> [..., b(b+1)/2]``.

  Entry ``k`` of the result is ``A[i, j]`` for the ``k``-th pair ``i <= j`` in row-major
  order (``numpy.triu_indices``). Only the upper triangle of ``A`` is read.

  Example:
    >>> import jax.numpy as jnp
    >>> from mbag import linalg
    >>> linalg.pack_symmetric(jnp.array([[1.0, 2.0], [2.0, 3.0]]))
    Array([1., 2., 3.], dtype=float32)
  """
  rows, cols, _ = _triangle(A.shape[-1])
  return A[..., rows, cols]


def unpack_symmetric(packed: Array) -> Array:
  """Inverse of :func:`pack_symmetric`: ``[..., b(b+1)/2] -> [..., b, b]``, exactly symmetric."""
  _, _, full = _triangle(packed_block_size(packed.shape[-1]))
  return packed[..., full]


def packed_outer(w: Array) -> Array:
  """``pack_symmetric(w w^T)`` without forming ``w w^T``: ``[..., b] -> [..., b(b+1)/2]``."""
  rows, cols, _ = _triangle(w.shape[-1])
  return w[..., rows] * w[..., cols]


def sherman_morrison(H: Array, g: Array) -> Array:
  r"""Rank-one update of an inverse: returns ``(H^{-1} + g g^T)^{-1}``.

  .. math::
    H' = H - \frac{H g g^T H}{1 + g^T H g}

  computed as ``H - w w^T`` with ``w = H g / sqrt(1 + g^T H g)`` so that a
  symmetric ``H`` stays exactly symmetric in floating point.

  Args:
    H: symmetric positive definite matrices, shape ``[..., b, b]``.
    g: vectors, shape ``[..., b]``.

  Returns:
    The updated matrices, shape and dtype of ``H``.

  Example:
    >>> import jax.numpy as jnp
    >>> from mbag import linalg
    >>> H = jnp.eye(2) / 0.5
    >>> linalg.sherman_morrison(H, jnp.array([1.0, 0.0]))[0, 0]  # 1 / (0.5 + 1)
    Array(0.6666667, dtype=float32)
  """
  return sherman_morrison_with_denominator(H, g)[0]


def sherman_morrison_with_denominator(H: Array, g: Array) -> tuple[Array, Array]:
  """Like :func:`sherman_morrison`, also returning ``1 + g^T H g`` (shape ``[...]``).

  The denominator is >= 1 in exact arithmetic for positive semi-definite H; a
  value below 1 signals that H lost positive definiteness.
  """
  H_new, denominator, _ = guarded_sherman_morrison(H, g)
  return H_new, denominator


def guarded_sherman_morrison(H: Array, g: Array, *, packed: bool = False
                             ) -> tuple[Array, Array, Array]:
  """Sherman-Morrison that leaves a block unchanged when its update is not finite.

  Args:
    H: ``[..., b, b]`` symmetric positive definite matrices, or with ``packed=True`` their
      packed upper triangles ``[..., b(b+1)/2]`` (:func:`pack_symmetric`); the result has the
      same form, so packed storage never holds more than the triangle.
    g: ``[..., b]`` vectors.
    packed: whether ``H`` is packed.

  Returns:
    ``(H_new, denominator, ok)`` where ``ok`` (``[...]`` bool) is False for blocks whose update
    would overflow or whose denominator is not positive (a sign that H lost positive
    definiteness); those blocks keep H bit for bit.
  """
  dense = unpack_symmetric(H) if packed else H
  u = jnp.einsum("...ij,...j->...i", dense, g)
  denominator, w, ok = rank_one_factor(u, g)
  return H - (packed_outer(w) if packed else w[..., :, None] * w[..., None, :]), denominator, ok


def rank_one_factor(u: Array, g: Array) -> tuple[Array, Array, Array]:
  """``(1 + g^T u, w = u / sqrt(1 + g^T u), ok)`` with ``w = 0`` where the update is not finite."""
  denominator = 1.0 + jnp.sum(u * g, axis=-1)
  w = u * jax.lax.rsqrt(jnp.maximum(denominator, 1e-30))[..., None]
  ok = jnp.isfinite(denominator) & (denominator > 0) & jnp.all(jnp.isfinite(w * w), axis=-1)
  return denominator, jnp.where(ok[..., None], w, 0.0), ok


class RootInfo(NamedTuple):
  """What a root computation reports about itself.

  Attributes:
    residual: ``[...]`` relative residual of each returned root: for a square
      root X of A, ``||X^2 - A||_F / ||A||_F``; for an inverse root Y,
      ``||Y A Y - I||_F / ||I||_F`` (I restricted to present coordinates).
    relative_error: ``[...]`` ``||I - Y X||_F`` over present coordinates, where X and
      Y are the computed square root and inverse square root of the normalised
      matrix. In every eigen-direction this is about the sum of the relative
      errors of X and Y, so it is ~0 for an exact root and >= ~1 when some
      direction has not converged. Unlike ``residual`` it is not hidden by the large
      eigenvalues: 5 Newton-Schulz steps on nearly rank-one statistics give a
      tiny residual but a relative error near 1.
    steps: ``[]`` int32, Newton-Schulz iterations run (0 for eigh).
  """

  residual: Array
  relative_error: Array
  steps: Array


def _absent_mask(A: Array) -> Array:
  """``[..., b]`` boolean: True where row and column of A are identically zero."""
  return jnp.logical_and(jnp.all(A == 0, axis=-1), jnp.all(A == 0, axis=-2))


def _normalize(A: Array) -> tuple[Array, Array, Array]:
  """Frobenius-normalises A and puts 1 on the diagonal of absent coordinates.

  Returns ``(A', norm, present)`` with ``A' = A / ||A||_F + diag(absent)``:
  the absent coordinates become a decoupled eigenvalue 1, a fixed point of the
  Newton-Schulz iteration, so they cannot disturb the present ones.
  """
  A = 0.5 * (A + jnp.swapaxes(A, -1, -2))
  absent = _absent_mask(A)
  # Scale before squaring so that entries up to the float32 maximum do not overflow.
  amax = jnp.max(jnp.abs(A), axis=(-2, -1))
  amax = jnp.where(amax > 0, amax, 1.0)
  norm = amax * jnp.sqrt(jnp.sum((A / amax[..., None, None]) ** 2, axis=(-2, -1)))
  safe = jnp.where(norm > 0, norm, 1.0)
  A_n = A / safe[..., None, None]
  A_n = A_n + jnp.eye(A.shape[-1], dtype=A.dtype) * absent[..., None, :].astype(A.dtype)
  return A_n, safe, jnp.logical_not(absent)


def _outer_mask(present: Array, dtype) -> Array:
  m = present.astype(dtype)
  return m[..., :, None] * m[..., None, :]


def _residual(root: Array, A_n: Array, present: Array, kind: RootKind) -> Array:
  """Relative residual of a root of the normalised matrix (``||A_n||_F = 1`` on present coords)."""
  if kind == "sqrt":
    err = root @ root - A_n
    ref = jnp.ones(A_n.shape[:-2], A_n.dtype)
  else:
    err = root @ A_n @ root - jnp.eye(A_n.shape[-1], dtype=A_n.dtype)
    ref = jnp.sqrt(jnp.maximum(jnp.sum(present, axis=-1), 1).astype(A_n.dtype))
  err = err * _outer_mask(present, err.dtype)
  return jnp.sqrt(jnp.sum(err * err, axis=(-2, -1))) / ref


def _coupled_iterations(A_n: Array, num_steps, tolerance, max_steps) -> tuple[Array, Array, Array]:
  """Coupled Newton-Schulz on a normalised matrix: X -> A^{1/2}, Y -> A^{-1/2}.

  X_{k+1} = X_k T_k,  Y_{k+1} = T_k Y_k,  T_k = (3 I - Y_k X_k) / 2,  X_0 = A, Y_0 = I.
  The first step needs one product (Y_0 X_0 = A, Y_1 = T_0). With a tolerance
  the iteration stops once ``max ||I - Y_k X_k||_F`` over the batch is below it
  (at most ``max_steps`` iterations); otherwise exactly ``num_steps`` run.
  """
  eye = jnp.eye(A_n.shape[-1], dtype=A_n.dtype)

  def t_of(Z):
    return 1.5 * eye - 0.5 * Z

  def deviation(Z):
    return jnp.max(jnp.sqrt(jnp.sum((eye - Z) ** 2, axis=(-2, -1))), initial=0.0)

  T = t_of(A_n)
  X, Y = A_n @ T, T
  if tolerance is None:
    def body(_, carry):
      X, Y = carry
      T = t_of(Y @ X)
      return X @ T, T @ Y
    X, Y = jax.lax.fori_loop(1, num_steps, body, (X, Y))
    return X, Y, jnp.asarray(num_steps, jnp.int32)

  def cond(carry):
    k, _, _, dev = carry
    return jnp.logical_and(k < max_steps, dev > tolerance)

  def body_tol(carry):
    k, X, Y, _ = carry
    Z = Y @ X
    T = t_of(Z)
    return k + 1, X @ T, T @ Y, deviation(Z)

  k, X, Y, _ = jax.lax.while_loop(
      cond, body_tol, (jnp.asarray(1, jnp.int32), X, Y, deviation(Y @ X)))
  return X, Y, k


def matrix_root(
    A: Array,
    kind: RootKind,
    *,
    method: Literal["newton_schulz", "eigh"] = "newton_schulz",
    num_steps: int = 5,
    tolerance: float | None = None,
    max_steps: int = 100,
) -> tuple[Array, RootInfo]:
  r"""``A^{1/2}`` (kind="sqrt") or ``A^{-1/2}`` (kind="inv_sqrt") of a batch of PSD matrices.

  Newton-Schulz follows Section IV.B of the paper: the input is divided by its
  Frobenius norm (so every eigenvalue lies in (0, 1] and the sufficient
  condition ``||I - A'||_2 < 1`` holds), the coupled iteration runs, and the
  result is rescaled by ``||A||_F^{1/2}`` (or ``||A||_F^{-1/2}``).
  ``method="eigh"`` computes the exact root from an eigendecomposition.

  Args:
    A: ``[..., b, b]`` symmetric positive (semi-)definite matrices.
    kind: which root.
    method: "newton_schulz" or "eigh".
    num_steps: Newton-Schulz iterations when ``tolerance`` is None.
    tolerance: if set, iterate until ``max_k ||I - Y_k X_k||_F <= tolerance``
      (this deviation shrinks quadratically near convergence), at most ``max_steps``.
    max_steps: iteration cap used with ``tolerance``.

  Returns:
    ``(root, info)``; ``info.residual`` is the relative residual of each root.
  """
  A_n, norm, present = _normalize(A)
  if method == "eigh":
    w, V = jnp.linalg.eigh(A_n)
    Vt = jnp.swapaxes(V, -1, -2)
    X = (V * jnp.sqrt(jnp.maximum(w, 0.0))[..., None, :]) @ Vt
    f_inv = jnp.where(w > 0, jax.lax.rsqrt(jnp.maximum(w, jnp.finfo(w.dtype).tiny)), 0.0)
    Y = (V * f_inv[..., None, :]) @ Vt
    steps = jnp.asarray(0, jnp.int32)
  elif method == "newton_schulz":
    X, Y, steps = _coupled_iterations(A_n, num_steps, tolerance, max_steps)
  else:
    raise ValueError(f"unknown root method {method!r}; use 'newton_schulz' or 'eigh'")
  root_n = X if kind == "sqrt" else Y
  residual = _residual(root_n, A_n, present, kind)
  dev = (jnp.eye(A_n.shape[-1], dtype=A_n.dtype) - Y @ X) * _outer_mask(present, A_n.dtype)
  relative_error = jnp.sqrt(jnp.sum(dev * dev, axis=(-2, -1)))
  scale = jnp.sqrt(norm) if kind == "sqrt" else jax.lax.rsqrt(norm)
  root = root_n * scale[..., None, None] * _outer_mask(present, root_n.dtype)
  return root, RootInfo(residual=residual, relative_error=relative_error, steps=steps)


def newton_schulz(
    A: Array, num_steps: int, *, tolerance: float | None = None, max_steps: int = 100
) -> tuple[Array, Array]:
  r"""Approximations of ``A^{1/2}`` and ``A^{-1/2}`` by coupled Newton-Schulz.

  .. math::
    X_k = \tfrac12 X_{k-1}(3I - Y_{k-1}X_{k-1}),\quad
    Y_k = \tfrac12 (3I - Y_{k-1}X_{k-1}) Y_{k-1},\quad X_0 = A',\ Y_0 = I,

  with ``A' = A / ||A||_F`` (Section IV.B, eq. 5), rescaled afterwards.
  Batched over leading axes. Zero rows/columns get zero in both outputs.

  Args:
    A: ``[..., b, b]`` symmetric positive definite matrices.
    num_steps: number of iterations (ignored if ``tolerance`` is set).
    tolerance: optional stopping tolerance on ``max ||I - Y_k X_k||_F``.
    max_steps: iteration cap when a tolerance is given.

  Returns:
    ``(sqrt, inv_sqrt)``, each of the shape of ``A``.

  Example:
    >>> import jax.numpy as jnp
    >>> from mbag import linalg
    >>> s, r = linalg.newton_schulz(jnp.diag(jnp.array([4.0, 1.0])), 20)
    >>> jnp.round(jnp.diag(s), 4), jnp.round(jnp.diag(r), 4)
    (Array([2., 1.], dtype=float32), Array([0.5, 1. ], dtype=float32))
  """
  A_n, norm, present = _normalize(A)
  X, Y, _ = _coupled_iterations(A_n, num_steps, tolerance, max_steps)
  mask = _outer_mask(present, X.dtype)
  sqrt = X * jnp.sqrt(norm)[..., None, None] * mask
  inv_sqrt = Y * jax.lax.rsqrt(norm)[..., None, None] * mask
  return sqrt, inv_sqrt
