"""A few data-parallel MBAG steps on a global mesh; one of ``--num_processes`` JAX processes.

Run by tests/test_data_parallel.py: two processes on 127.0.0.1 with 2 simulated CPU devices each
(jax.distributed, gloo collectives), and one process with 4 devices as the reference. Every
process builds the same global data from a seed and places its own shards of it; it prints JSON
with the final (replicated) parameters, the losses and the MBAG state's sharding.

  python tests/multidevice/multiprocess_mbag.py --num_processes=2 --process_id=0 \
      --devices_per_process=2 --port=12345
"""

import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--num_processes", type=int, default=1)
parser.add_argument("--process_id", type=int, default=0)
parser.add_argument("--devices_per_process", type=int, default=4)
parser.add_argument("--port", type=int, default=0)
ARGS = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices_per_process}"

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

import mbag  # noqa: E402
from tests import compat  # noqa: E402

NUM_STEPS = 5
BATCH = 32


def global_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from the same host value on every process (each places its own shards)."""
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def local_value(x: jax.Array) -> np.ndarray:
  """The value of a replicated global array (every device holds all of it)."""
  return np.asarray(x.addressable_shards[0].data)


def main():
  if ARGS.num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{ARGS.port}",
                               num_processes=ARGS.num_processes, process_id=ARGS.process_id,
                               initialization_timeout=60)
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Explicit,))
  rng = np.random.default_rng(0)
  host_params = {"w1": rng.normal(size=(16, 40)).astype(np.float32) / 4,
                 "b1": np.zeros(40, np.float32),
                 "w2": rng.normal(size=(40, 10)).astype(np.float32) / 6,
                 "b2": np.zeros(10, np.float32)}
  xs = rng.normal(size=(NUM_STEPS, BATCH, 16)).astype(np.float32)
  ys = rng.integers(0, 10, size=(NUM_STEPS, BATCH)).astype(np.int32)

  def loss_fn(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  tx = mbag.mbag(0.05, block_size=8, root_interval=2, shard_blocks="data")

  @jax.jit
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  with jax.set_mesh(mesh):
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    params = {k: global_array(v, replicated) for k, v in host_params.items()}
    state = jax.jit(tx.init)(params)
    losses = []
    for t in range(NUM_STEPS):
      params, state, loss = step(params, state, global_array(xs[t], split),
                                 global_array(ys[t], split))
      losses.append(float(local_value(loss)))
    s = mbag.find_mbag_state(state)
    out = {
        "process_id": jax.process_index(), "process_count": jax.process_count(),
        "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
        "losses": losses,
        "params": {k: local_value(v).tolist() for k, v in params.items()},
        "stats_specs": sorted({compat.spec_str(x.sharding.spec) for x in s.stats}),
        "stats_shapes": [list(x.shape) for x in s.stats],
        "local_stats_shapes": [list(x.addressable_shards[0].data.shape) for x in s.stats],
    }
  print(json.dumps(out), flush=True)
  if ARGS.num_processes > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
