"""MBAG optimizers: preconditioner + heavy-ball momentum + learning rate."""

from __future__ import annotations

from typing import Any

import optax

from mbag._src import sharding
from mbag._src import storage as storage_lib
from mbag._src import transform


def _with_momentum(preconditioner, learning_rate, momentum) -> optax.GradientTransformation:
  # v_t = momentum * v_{t-1} + p_t; update = -lr_t * v_t (Algorithm 1, lines 11-12).
  return optax.chain(preconditioner, optax.trace(decay=momentum, nesterov=False),
                     optax.scale_by_learning_rate(learning_rate))


def mbag(
    learning_rate: optax.ScalarOrSchedule,
    *,
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    momentum: float = 0.9,
    root_interval: int = 50,
    newton_schulz_steps: int = 5,
    root_method: transform.RootMethod = "newton_schulz",
    newton_schulz_tolerance: float | None = None,
    newton_schulz_max_steps: int = 100,
    root_warmup_steps: int = 0,
    dimension_numbers: Any = None,
    grouping: Any = None,
    fuse_blocks: bool | None = None,
    statistics_dtype=None,
    shard_blocks: sharding.ShardBlocks = None,
    storage: storage_lib.Storage = "dense",
    root_dtype=None,
    root_chunk_size: int | None = None,
) -> optax.GradientTransformation:
  r"""MBAG (Algorithm 1): mini-block full-matrix AdaGrad with heavy-ball momentum.

  .. math::
    v_t = \beta v_{t-1} + H_t^{1/2} g_t,\qquad \theta_t = \theta_{t-1} - \eta_t v_t,

  with ``H_t`` and its (periodically refreshed) root as in :func:`scale_by_mbag`.

  Args:
    learning_rate: eta, a float or an optax schedule.
    block_size: tau.
    initial_accumulator_value: lambda.
    momentum: beta in [0, 1).
    root_interval: T_sqr.
    newton_schulz_steps: T_NS.
    root_method: "newton_schulz" or "eigh".
    newton_schulz_tolerance, newton_schulz_max_steps, root_warmup_steps, dimension_numbers,
    grouping, fuse_blocks, statistics_dtype, shard_blocks, storage, root_dtype, root_chunk_size:
      see :func:`scale_by_mbag` (``shard_blocks="data"``: the statistics and roots sharded over
      the data axis; ``storage="symmetric"``: only the upper triangles of H and its root are
      kept; ``root_dtype="bfloat16"``: the root in bfloat16; ``root_chunk_size``: blocks per
      chunk of the root computation).

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, mbag
    >>> params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    >>> tx = mbag.mbag(1e-3, block_size=4)
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)

  References:
    Lee, "MBAG: A Scalable Mini-Block Adaptive Gradient Method for Deep Neural Networks".
  """
  transform.validate_hyperparameters(momentum=momentum, learning_rate=learning_rate)
  pre = transform.scale_by_mbag(
      block_size, initial_accumulator_value, root_interval, newton_schulz_steps, root_method,
      newton_schulz_tolerance=newton_schulz_tolerance,
      newton_schulz_max_steps=newton_schulz_max_steps, root_warmup_steps=root_warmup_steps,
      dimension_numbers=dimension_numbers, grouping=grouping, fuse_blocks=fuse_blocks,
      statistics_dtype=statistics_dtype, shard_blocks=shard_blocks, storage=storage,
      root_dtype=root_dtype, root_chunk_size=root_chunk_size)
  return _with_momentum(pre, learning_rate, momentum)


def mbag_ema(
    learning_rate: optax.ScalarOrSchedule,
    *,
    decay: float = 0.99,
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    momentum: float = 0.9,
    root_interval: int = 50,
    newton_schulz_steps: int = 5,
    root_method: transform.RootMethod = "newton_schulz",
    newton_schulz_tolerance: float | None = None,
    newton_schulz_max_steps: int = 100,
    root_warmup_steps: int = 0,
    dimension_numbers: Any = None,
    grouping: Any = None,
    fuse_blocks: bool | None = None,
    statistics_dtype=None,
    shard_blocks: sharding.ShardBlocks = None,
    storage: storage_lib.Storage = "dense",
    root_dtype=None,
    root_chunk_size: int | None = None,
) -> optax.GradientTransformation:
  r"""MBAG-EMA (Algorithm 2): ``v_t = beta v_{t-1} + G_t^{-1/2} g_t`` with an EMA statistic.

  See :func:`scale_by_mbag_ema` for the statistic and :func:`mbag` for the arguments.

  References:
    Lee, "MBAG", Algorithm 2.
  """
  transform.validate_hyperparameters(momentum=momentum, learning_rate=learning_rate)
  pre = transform.scale_by_mbag_ema(
      decay, block_size, initial_accumulator_value, root_interval, newton_schulz_steps,
      root_method, newton_schulz_tolerance=newton_schulz_tolerance,
      newton_schulz_max_steps=newton_schulz_max_steps, root_warmup_steps=root_warmup_steps,
      dimension_numbers=dimension_numbers, grouping=grouping, fuse_blocks=fuse_blocks,
      statistics_dtype=statistics_dtype, shard_blocks=shard_blocks, storage=storage,
      root_dtype=root_dtype, root_chunk_size=root_chunk_size)
  return _with_momentum(pre, learning_rate, momentum)


def mbag_n(
    learning_rate: optax.ScalarOrSchedule,
    *,
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    momentum: float = 0.9,
    dimension_numbers: Any = None,
    grouping: Any = None,
    fuse_blocks: bool | None = None,
    statistics_dtype=None,
    shard_blocks: sharding.ShardBlocks = None,
    storage: storage_lib.Storage = "dense",
) -> optax.GradientTransformation:
  r"""MBAG-N: ``v_t = beta v_{t-1} + H_t g_t`` (preconditioning by ``G_t^{-1}``, no root).

  References:
    Lee, "MBAG", Sections IV.B and VI.
  """
  transform.validate_hyperparameters(momentum=momentum, learning_rate=learning_rate)
  pre = transform.scale_by_mbag_n(
      block_size, initial_accumulator_value, dimension_numbers=dimension_numbers,
      grouping=grouping, fuse_blocks=fuse_blocks,
      statistics_dtype=statistics_dtype, shard_blocks=shard_blocks, storage=storage)
  return _with_momentum(pre, learning_rate, momentum)
