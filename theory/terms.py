"""Theorem 1's terms read from an MBAG optimizer state: pure, jit-friendly functions.

The block-diagonal statistic is G_hat = diag(G^{l,pi}); MBAG (Algorithm 1) keeps H = G^{-1} per
block, with padded coordinates stored as zero rows and columns. Every function here restricts
itself to the real (present) coordinates by putting 1 on the diagonal of absent ones, which
contributes log 1 = 0 to determinants and is excluded from eigenvalue minima.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import mbag

Array = jax.Array


def present_masks(opt_state, params=None) -> list[Array]:
  """Per bucket, the ``[n, b]`` mask of real coordinates, read off the state.

  A present coordinate of H (or G) has a positive diagonal entry; a padded one has an exact 0.
  """
  s = mbag.find_mbag_state(opt_state)
  return [jnp.diagonal(S, axis1=-2, axis2=-1) != 0 for S in s.stats]


def _with_unit_absent(M: Array, present: Array, fill: float = 1.0) -> Array:
  absent = (~present).astype(M.dtype)
  return M + fill * jnp.eye(M.shape[-1], dtype=M.dtype) * absent[..., None, :]


def num_real_params(masks: Sequence[Array]) -> Array:
  return sum(jnp.sum(m) for m in masks)


def logdet_ratio_from_inverse(stats: Sequence[Array], masks: Sequence[Array], lam) -> Array:
  """``log |G_hat_T| / |G_hat_0|`` from H = G^{-1}: ``sum_blocks -log det H - d log lambda``.

  Uses a Cholesky factorisation per block (in the dtype of the input; pass float64 for accuracy).
  """
  total = 0.0
  d = 0
  for H, m in zip(stats, masks):
    chol = jnp.linalg.cholesky(_with_unit_absent(0.5 * (H + jnp.swapaxes(H, -1, -2)), m))
    total = total - 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)))
    d = d + jnp.sum(m)
  return total - d * jnp.log(lam)


def min_eigenvalue(mats: Sequence[Array], masks: Sequence[Array]) -> Array:
  """Smallest eigenvalue over all blocks (present coordinates only) of symmetric matrices."""
  mins = []
  for M, m in zip(mats, masks):
    # Absent coordinates (exact zero rows/columns) get an eigenvalue above every present one.
    big = 2.0 * jnp.sum(jnp.abs(M), axis=(-2, -1), keepdims=True) + 1.0
    sym = 0.5 * (M + jnp.swapaxes(M, -1, -2))
    w = jnp.linalg.eigvalsh(sym + big * jnp.eye(M.shape[-1], dtype=M.dtype) * (~m)[..., None, :])
    mins.append(jnp.min(w))
  return jnp.min(jnp.stack(mins)) if mins else jnp.asarray(jnp.inf)


def gamma_used(opt_state, masks, eta) -> Array:
  """gamma_t = lambda_min(eta H_hat^{1/2}) for the root the step actually used (stale or not)."""
  return eta * min_eigenvalue(mbag.find_mbag_state(opt_state).roots, masks)


def gamma_exact(opt_state, masks, eta) -> Array:
  """gamma_t for the exact root: eta sqrt(lambda_min(H_hat)) = eta / sqrt(lambda_max(G_hat))."""
  return eta * jnp.sqrt(jnp.maximum(min_eigenvalue(mbag.find_mbag_state(opt_state).stats, masks), 0.0))


def trace_H0_sqrt(num_params, lam):
  """tr(H_0^{1/2}) = d / sqrt(lambda) for H_0 = I / lambda over the d real parameters."""
  return num_params / np.sqrt(lam)


def global_norm(tree) -> Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
