"""Data parallelism for the training loop (``config.data_parallel``).

With ``config.data_parallel = True`` the loop runs under an explicit-sharding mesh with one
axis, ``"data"``, over all devices (all processes' devices when JAX runs several). Parameters,
model state and the training set are replicated; each batch is split along its batch axis.
The loss is a mean over the global batch, so ``jax.jit`` averages the gradients across devices
by itself. MBAG's statistics and roots are sharded along their block axis over ``"data"``
(``shard_blocks``, see :func:`state_sharding`); the state of other optimizers follows the
parameters (replicated).

With ``data_parallel = False`` (the default) every function here is the identity and no mesh is
set: runs are exactly what they were.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable

import jax
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
# Optimizers whose step is not sharding-aware (kfac-jax estimates curvature with its own
# pmap-style axis handling); data_parallel rejects them.
UNSUPPORTED = ("kfac",)


def check_config(config: Any) -> None:
  """Raises ValueError when ``config.data_parallel`` is not a bool or cannot split the batch."""
  value = config.data_parallel
  if not isinstance(value, bool):
    raise ValueError(f"config.data_parallel must be true or false, got {value!r}")
  if not value:
    return
  if config.optimizer in UNSUPPORTED:
    raise ValueError(f"config.data_parallel=True does not support optimizer "
                     f"{config.optimizer!r} (supported: every optax optimizer of the registry)")
  devices = jax.device_count()
  if config.batch_size % devices:
    raise ValueError(f"config.data_parallel=True splits each batch over the {devices} devices, "
                     f"but config.batch_size={config.batch_size} is not a multiple of {devices}")


def make_mesh(config: Any) -> jax.sharding.Mesh | None:
  """The data mesh over all (global) devices, or None when ``config.data_parallel`` is off."""
  if not config.data_parallel:
    return None
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Explicit,))


def use_mesh(mesh: jax.sharding.Mesh | None):
  """``jax.set_mesh(mesh)``, or a no-op context without a mesh."""
  return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def num_shards(mesh: jax.sharding.Mesh | None) -> int:
  """How many ways a batch is split."""
  return 1 if mesh is None else mesh.shape[DATA_AXIS]


def put_replicated(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Puts a pytree on every device of the mesh (``jax.device_put`` without a mesh)."""
  if mesh is None:
    return jax.device_put(tree)
  return jax.device_put(tree, NamedSharding(mesh, P()))


def put_split(tree: Any, mesh: jax.sharding.Mesh | None, axis: int = 0) -> Any:
  """Puts host arrays on the mesh split along ``axis`` (``jax.device_put`` without a mesh)."""
  if mesh is None:
    return jax.device_put(tree)
  spec = P(*([None] * axis), DATA_AXIS)
  return jax.device_put(tree, NamedSharding(mesh, spec))


def split_batch(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Inside jit: reshards every array of a batch along its leading (batch) axis."""
  if mesh is None:
    return tree
  return jax.tree.map(lambda x: jax.sharding.reshard(x, P(DATA_AXIS)), tree)


def state_sharding(data_parallel: bool, constructor: Callable[..., Any]) -> dict[str, Any]:
  """Extra keyword arguments of an optimizer ``constructor`` under data parallelism.

  ``{"shard_blocks": "data"}`` for constructors that take ``shard_blocks`` (MBAG, MBAG-N,
  MBAG-EMA) when ``data_parallel``, else ``{}`` (the state follows the parameters).
  """
  if data_parallel and "shard_blocks" in inspect.signature(constructor).parameters:
    return {"shard_blocks": DATA_AXIS}
  return {}
