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

Several processes (``jax.distributed``)
---------------------------------------

The mesh spans ``jax.devices()``, i.e. the devices of every process once JAX runs several
(multi-controller JAX: one process per host, or several on one host). Every process runs the
same command with its own ``--process_id``; the entry points (``experiments/cli.py``) call
:func:`initialize_distributed` before any JAX computation. Two processes on one host, 2 CPU
devices each (a 4-device mesh; ``--xla_force_host_platform_device_count`` only simulates CPU
devices, on GPUs each process sees its own)::

  export XLA_FLAGS=--xla_force_host_platform_device_count=2
  for i in 0 1; do
    python -m experiments.cifar --config=experiments/configs/digits.py:smoke \
        --config.optimizer=mbag --config.data_parallel=true --workdir=runs/digits/dp2 \
        --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=$i &
  done; wait

On several hosts: the same command on each host, ``--coordinator_address=<host of process
0>:<free port>`` reachable from every host, ``--num_processes`` the number of hosts (or of
processes in all), ``--process_id`` 0, 1, ... (unique; process 0 runs the coordinator), and a
``--workdir`` on a file system all hosts share (orbax writes one checkpoint together; process 0
alone writes ``config.json``, ``metrics.jsonl`` and TensorBoard events and prints progress).
Every process loads the same data set and holds the same host data: :func:`put_replicated` /
:func:`put_split` place each process's own shards of it (``jax.make_array_from_callback``), and
replicated results (losses, metrics, parameters) are read on every process from its own
devices. On CPU the processes' collectives go through gloo (set by
:func:`initialize_distributed`). SIGINT / SIGTERM: whichever process receives one, all processes
agree at the next record (every ``log_every_steps`` and at each epoch's end;
:func:`max_over_processes`, the loop's only collective besides the training step's), save the
checkpoint together and stop.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import numpy as np
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


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
  """``jax.distributed.initialize`` with these arguments (gloo collectives on CPU).

  Call it before any JAX computation, once per process, with the same ``coordinator_address``
  and ``num_processes`` on every process and ``process_id`` 0 .. num_processes - 1.
  """
  # The CPU backend's collectives across processes (it has none by default); GPUs use NCCL,
  # which this does not change.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
  """True in process 0, the one that writes the run's files and prints (always true alone)."""
  return jax.process_index() == 0


def max_over_processes(value: int) -> int:
  """The largest of every process's ``value`` (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return int(value)
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def _put(tree: Any, sharding: NamedSharding) -> Any:
  """``jax.device_put(tree, sharding)``; with several processes, host leaves placed by
  ``jax.make_array_from_callback`` (each process its own shards of the same host value;
  ``device_put`` would compare the value across processes first, an all-gather of the data)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array):
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def put_replicated(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Puts a pytree on every device of the mesh (``jax.device_put`` without a mesh)."""
  if mesh is None:
    return jax.device_put(tree)
  return _put(tree, NamedSharding(mesh, P()))


def put_split(tree: Any, mesh: jax.sharding.Mesh | None, axis: int = 0) -> Any:
  """Puts host arrays on the mesh split along ``axis`` (``jax.device_put`` without a mesh)."""
  if mesh is None:
    return jax.device_put(tree)
  spec = P(*([None] * axis), DATA_AXIS)
  return _put(tree, NamedSharding(mesh, spec))


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
