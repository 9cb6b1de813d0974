r"""Grafting: MBAG chooses the direction, a diagonal method the step size.

With grafting, the preconditioned direction ``p`` of every leaf (or of every mini-block) is
rescaled to the norm of a diagonal method's direction ``d`` for the same gradient:

.. math::
  p \leftarrow p \, \frac{\|d\|}{\|p\|},\qquad d = \frac{g}{\sqrt{\hat v_t} + \epsilon},

with one second-moment vector ``v`` per parameter:

* ``"adam"``: ``v_t = \beta_2 v_{t-1} + (1 - \beta_2) g^2``, ``\hat v_t = v_t / (1 - \beta_2^t)``
  (Adam's step without its first moment: the momentum that follows MBAG's preconditioner is the
  first moment);
* ``"rmsprop"``: the same ``v_t`` without bias correction;
* ``"adagrad"``: ``v_t = v_{t-1} + g^2``.

The step size, learning-rate schedule and warm-up tuned for Adam (or AdaGrad) then carry over:
the structured preconditioner only turns the direction. This is how Distributed Shampoo
transfers Adam's hyperparameters (Anil et al. 2020, "Scalable second order optimization";
Shi et al. 2023, "A distributed data-parallel PyTorch implementation of the distributed Shampoo
optimizer", Section 2.3). A zero direction stays zero (no division by zero), ``eps`` keeps ``d``
finite for a zero gradient, and a step whose gradient was not finite leaves ``v`` unchanged (and
is not counted by Adam's bias correction); a block MBAG skipped (its update overflowed) counts as
a zero gradient. ``decay`` defaults to Adam's ``b2`` = 0.999 for "rmsprop" too (optax.rmsprop's
is 0.9), and "adagrad" starts from ``v = 0`` (optax.adagrad from 0.1), so pass the values your
diagonal optimizer used. Cost: ``v`` is one value of ``statistics_dtype`` per entry of a block
(4 bytes per parameter in float32, padded entries included), kept like the gradient's blocks:
replicated when the parameters are, also under ``shard_blocks``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbag._src import options as options_lib

Array = jax.Array
GRAFT_METHODS = ("adam", "rmsprop", "adagrad")
GRANULARITIES = ("leaf", "block")


class Graft(NamedTuple):
  """How MBAG's directions are grafted onto a diagonal method's step sizes.

  Attributes:
    method: "adam", "rmsprop" or "adagrad" (module docstring).
    granularity: "leaf" (default): one norm ratio per parameter leaf (a layer's kernel), as
      Distributed Shampoo grafts per layer; "block": one ratio per mini-block (each block then
      moves exactly as far as the diagonal method would move it).
    decay: beta_2 of "adam" and "rmsprop" (ignored by "adagrad").
    eps: added to ``sqrt(v)``.
  """

  method: Literal["adam", "rmsprop", "adagrad"] = "adam"
  granularity: Literal["leaf", "block"] = "leaf"
  decay: float = 0.999
  eps: float = 1e-8


def resolve(graft: Any) -> Graft | None:
  """``None``, a method name or a :class:`Graft` as a validated :class:`Graft` (or None)."""
  if graft is None:
    return None
  if isinstance(graft, str):
    graft = Graft(method=graft)
  if not isinstance(graft, Graft):
    raise ValueError(f"graft must be None, one of {GRAFT_METHODS} or an mbag.Graft, got {graft!r}")
  if graft.method not in GRAFT_METHODS:
    raise ValueError(f"graft method must be one of {GRAFT_METHODS}, got {graft.method!r}")
  if graft.granularity not in GRANULARITIES:
    raise ValueError(f"graft granularity must be one of {GRANULARITIES}, got "
                     f"{graft.granularity!r}")
  options_lib.check("graft decay", graft.decay, lambda v: 0 < v < 1, "in (0, 1)")
  options_lib.check("graft eps", graft.eps, lambda v: v > 0, "> 0")
  return graft


def segment_ids(block_counts: tuple[int, ...]) -> np.ndarray:
  """For each block of a bucket, the index of its leaf (sorted)."""
  return np.repeat(np.arange(len(block_counts), dtype=np.int32), block_counts)


def graft_bucket(p: Array, g: Array, v: Array, graft: Graft, count: Array, finite: Array,
                 block_counts: tuple[int, ...]) -> tuple[Array, Array]:
  """Grafts one bucket's directions: ``(p * ||d|| / ||p||, new v)``.

  Args:
    p: ``[n, b]`` MBAG's directions.
    g: ``[n, b]`` the gradient blocks (zero where MBAG skipped a block or the step).
    v: ``[n, b]`` the second moments.
    graft: the resolved :class:`Graft`.
    count: ``[]`` int32, t: the number of steps with a finite gradient so far, this one included
      (Adam's bias correction).
    finite: ``[]`` bool, the step's gradient was finite.
    block_counts: per leaf of the bucket, its number of blocks (in order).
  """
  g2 = g * g
  if graft.method == "adagrad":
    v_new = v + g2
    v_hat = v_new
  else:
    beta = jnp.where(finite, jnp.asarray(graft.decay, v.dtype), 1.0)
    v_new = beta * v + (1.0 - beta) * g2
    v_hat = v_new
    if graft.method == "adam":
      t = count.astype(v.dtype)
      v_hat = v_new / (1.0 - jnp.asarray(graft.decay, v.dtype) ** t)
  d = g / (jnp.sqrt(v_hat) + jnp.asarray(graft.eps, v.dtype))
  d2, p2 = jnp.sum(d * d, axis=-1), jnp.sum(p * p, axis=-1)
  if graft.granularity == "leaf" and len(block_counts) == 1:
    # A bucket of one leaf (also every leaf whose blocks are sharded: those keep a bucket of
    # their own): plain sums, which keep the blocks' sharding.
    return p * _norm_ratio(jnp.sum(d2), jnp.sum(p2)), v_new
  if graft.granularity == "leaf":
    ids = segment_ids(block_counts)
    k = len(block_counts)
    d2 = jax.ops.segment_sum(d2, ids, k, indices_are_sorted=True)[ids]
    p2 = jax.ops.segment_sum(p2, ids, k, indices_are_sorted=True)[ids]
  return p * _norm_ratio(d2, p2)[:, None], v_new


def _norm_ratio(d2: Array, p2: Array) -> Array:
  """``||d|| / ||p||`` from the squared norms; 0 where ``p`` is zero (a zero direction stays
  zero, no division by zero)."""
  return jnp.where(p2 > 0, jnp.sqrt(d2) * jax.lax.rsqrt(jnp.where(p2 > 0, p2, 1.0)), 0.0)
