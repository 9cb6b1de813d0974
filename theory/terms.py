"""Theorem 1's terms read from an MBAG optimizer state: pure, jit-friendly functions.

The block-diagonal statistic is ``G_hat = diag(G^{l,pi})``; MBAG (Algorithm 1) keeps
``H = G^{-1}`` per block as ``[n, b, b]`` arrays, padded coordinates being exact zero rows and
columns. Every function here works on the real (present) coordinates only:

* Cholesky determinants put 1 on the diagonal of absent coordinates (``log 1 = 0``);
* spectra put a value above every present eigenvalue there (``2 * max row sum + 1``, Gershgorin),
  so that after ``eigvalsh`` (ascending) the present eigenvalues are the first ``num_present``.

Accumulations and factorisations run in :func:`wide_dtype` (float64 when ``jax_enable_x64`` is
on, float32 otherwise) whatever the dtype of the state.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

import mbag

Array = jax.Array


def wide_dtype():
  """float64 when JAX has 64-bit types enabled, else float32."""
  return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def present_masks_from_state(opt_state: Any) -> list[Array]:
  """Per bucket, the ``[n, b]`` mask of real coordinates read off H (zero diagonal = padding).

  Equivalent to ``mbag.blocks.bucket_present_masks(params, layout)`` for the states of Algorithm 1 and
  MBAG-N (H stays positive definite on present coordinates); use that when params are at hand.
  """
  stats = mbag.find_mbag_state(opt_state).dense_stats()
  return [jnp.diagonal(S, axis1=-2, axis2=-1) != 0 for S in stats]


def num_present(masks: Sequence[Array]) -> Array:
  """d, the number of real (unpadded) parameters."""
  return sum(jnp.sum(m.astype(jnp.int32)) for m in masks)


def _sym(M: Array, dtype) -> Array:
  M = M.astype(dtype)
  return 0.5 * (M + jnp.swapaxes(M, -1, -2))


def _fill_absent(M: Array, present: Array, fill) -> Array:
  absent = jnp.logical_not(present).astype(M.dtype)
  return M + jnp.eye(M.shape[-1], dtype=M.dtype) * (absent * fill)[..., None, :]


def present_spectrum(M: Array, present: Array) -> tuple[Array, Array]:
  r"""Eigenvalues of each block of symmetric ``M`` over its present coordinates.

  Args:
    M: ``[n, b, b]`` symmetric (it is symmetrised), zero on absent rows/columns.
    present: ``[n, b]`` bool.

  Returns:
    ``(w, valid)``, both ``[n, b]``: ascending eigenvalues in :func:`wide_dtype`, and which of
    them belong to present coordinates (the first ``sum(present)`` of each row).
  """
  S = _sym(M, wide_dtype())
  high = 2.0 * jnp.max(jnp.sum(jnp.abs(S), axis=-1), axis=-1, keepdims=True) + 1.0
  w = jnp.linalg.eigvalsh(_fill_absent(S, present, high))
  k = jnp.sum(present, axis=-1, keepdims=True)
  valid = jnp.arange(M.shape[-1])[None, :] < k
  return w, valid


def min_present_eigenvalue(mats: Sequence[Array], masks: Sequence[Array]) -> Array:
  """Smallest eigenvalue over all blocks and buckets, present coordinates only."""
  mins = []
  for M, m in zip(mats, masks):
    w, valid = present_spectrum(M, m)
    mins.append(jnp.min(jnp.where(valid, w, jnp.inf)))
  return jnp.min(jnp.stack(mins)) if mins else jnp.asarray(jnp.inf, wide_dtype())


def logdet_ratio_from_inverse(stats: Sequence[Array], masks: Sequence[Array], lam, *,
                              method: str = "eigh",
                              spectra: Sequence[tuple[Array, Array]] | None = None) -> Array:
  r"""``log(|G_hat_T| / |G_hat_0|) = -sum_blocks log det H_T - d log(lambda)``.

  ``method="eigh"`` sums the logs of the present eigenvalues of H (``spectra`` from
  :func:`present_spectrum` may be passed to reuse them); ``method="cholesky"`` uses
  ``log det H = 2 sum log diag(chol(H))``. Both run in :func:`wide_dtype`. The tracker uses eigh:
  it needs the spectrum anyway, and on jax 0.10.2's CPU runtime a program mixing ``eigvalsh`` and
  ``cholesky`` of H can hang (see docs/numerics.md, "Known issues").

  Args:
    stats: per bucket ``[n, b, b]``, H = G^{-1} (Algorithm 1 / MBAG-N state).
    masks: per bucket ``[n, b]`` bool, present coordinates.
    lam: lambda of ``G_0 = lambda I``.
    method: "eigh" or "cholesky".
    spectra: optional precomputed ``present_spectrum(H, mask)`` per bucket (eigh only).

  Returns:
    A scalar in :func:`wide_dtype`.
  """
  if method not in ("eigh", "cholesky"):
    raise ValueError(f"method must be 'eigh' or 'cholesky', got {method!r}")
  dtype = wide_dtype()
  total = jnp.zeros([], dtype)
  for i, (H, m) in enumerate(zip(stats, masks)):
    if method == "cholesky":
      chol = jnp.linalg.cholesky(_fill_absent(_sym(H, dtype), m, 1.0))
      total = total - 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)))
    else:
      w, valid = spectra[i] if spectra is not None else present_spectrum(H, m)
      tiny = jnp.finfo(w.dtype).tiny
      total = total - jnp.sum(jnp.where(valid, jnp.log(jnp.maximum(w, tiny)), 0.0))
  return total - num_present(masks).astype(dtype) * jnp.log(jnp.asarray(lam, dtype))


def gamma_used(roots: Sequence[Array], masks: Sequence[Array], eta) -> Array:
  r"""``gamma_t = lambda_min(eta R_t)`` for the roots ``R_t`` the step used (stale or approximate).

  For a root that is not exactly symmetric (Newton-Schulz) this is the smallest eigenvalue of its
  symmetric part, ``min_v v^T R v / |v|^2``: the quantity the descent step of the proof needs.
  """
  return jnp.asarray(eta, wide_dtype()) * min_present_eigenvalue(roots, masks)


def gamma_exact(stats: Sequence[Array], masks: Sequence[Array], eta) -> Array:
  r"""``gamma_t`` for the exact root: ``eta sqrt(lambda_min(H_hat)) = eta / sqrt(lambda_max(G_hat))``."""
  lam_min = jnp.maximum(min_present_eigenvalue(stats, masks), 0.0)
  return jnp.asarray(eta, wide_dtype()) * jnp.sqrt(lam_min)


def trace_H0_sqrt(num_params, lam):
  r"""``tr(H_0^{1/2}) = d / sqrt(lambda)`` for ``H_0 = I / lambda`` over the d real parameters."""
  return num_params / jnp.sqrt(lam)


def potential_increments(stats: Sequence[Array], roots: Sequence[Array],
                         grad_buckets: Sequence[Array]) -> tuple[Array, Array]:
  r"""``(g^T H_t g, |R_t g|^2)`` summed over blocks: one step of the elliptical potential.

  The proof bounds the curvature term by ``sum_t g_t^T H_t g_t <= log(|G_T|/|G_0|)``
  (elliptical potential lemma); with a stale or approximate root the step's actual term is
  ``|R_t g_t|^2``, which that lemma does not bound.
  """
  dtype = wide_dtype()
  exact = jnp.zeros([], dtype)
  used = jnp.zeros([], dtype)
  for H, R, g in zip(stats, roots, grad_buckets):
    g = g.astype(dtype)
    exact = exact + jnp.einsum("ni,nij,nj->", g, H.astype(dtype), g)
    Rg = jnp.einsum("nij,nj->ni", R.astype(dtype), g)
    used = used + jnp.sum(Rg * Rg)
  return exact, used


def root_error_vs_current(stats: Sequence[Array], roots: Sequence[Array]) -> Array:
  r"""``max_blocks ||R_t^2 - H_t||_F / ||H_t||_F``: how far the root in use is from the current H.

  Zero for the exact current root; it grows with staleness and with unconverged Newton-Schulz.
  """
  dtype = wide_dtype()
  worst = jnp.zeros([], dtype)
  for H, R in zip(stats, roots):
    H, R = H.astype(dtype), R.astype(dtype)
    err = jnp.sqrt(jnp.sum((R @ R - H) ** 2, axis=(-2, -1)))
    nrm = jnp.sqrt(jnp.sum(H * H, axis=(-2, -1)))
    worst = jnp.maximum(worst, jnp.max(err / jnp.where(nrm > 0, nrm, 1.0), initial=0.0))
  return worst


def global_norm(tree: Any) -> Array:
  """Euclidean norm of all leaves together, in :func:`wide_dtype`."""
  dtype = wide_dtype()
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(dtype))) for x in jax.tree_util.tree_leaves(tree)))
