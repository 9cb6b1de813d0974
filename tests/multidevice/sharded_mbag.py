"""Run in a subprocess with 8 simulated CPU devices (see tests/test_sharding.py); prints JSON."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, PartitionSpec as P  # noqa: E402

import mbag  # noqa: E402
from tests import compat  # noqa: E402


def run(tx, host, grads_seq):
  """The last update and state facts of ``tx`` on one device and with sharded params."""
  state = tx.init(host)
  update = jax.jit(tx.update)
  for g in grads_seq:
    u_ref, state = update(g, state, host)
  single_bytes = mbag.bytes_per_device(mbag.find_mbag_state(state))

  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Explicit,))
  with jax.set_mesh(mesh):
    specs = {"conv": P(None, None, None, "d"), "dense": P(None, "d"), "bias": P()}
    params = {k: jax.device_put(v, specs[k]) for k, v in host.items()}
    state = jax.jit(tx.init)(params)
    before = jax.tree.map(lambda x: compat.placement(x.sharding.spec), state)
    update = jax.jit(tx.update)
    for g in grads_seq:
      g = {k: jax.device_put(v, specs[k]) for k, v in g.items()}
      u, state = update(g, state, params)
    after = jax.tree.map(lambda x: compat.placement(x.sharding.spec), state)
    sharded_bytes = mbag.bytes_per_device(mbag.find_mbag_state(state))
    stats_specs = [compat.spec_str(x.sharding.spec) for x in mbag.find_mbag_state(state).stats]
    update_specs = {k: compat.spec_str(v.sharding.spec) for k, v in u.items()}
  diff = max(float(np.max(np.abs(np.asarray(u[k]) - np.asarray(u_ref[k])))) for k in host)
  scale = max(float(np.max(np.abs(np.asarray(u_ref[k])))) for k in host)
  return {"max_abs_diff": diff, "scale": scale, "single_bytes": single_bytes,
          "sharded_bytes": sharded_bytes, "same_sharding": before == after,
          "stats_specs": stats_specs, "update_specs": update_specs}


def main():
  key = jax.random.PRNGKey(0)
  k1, k2, k3 = jax.random.split(key, 3)
  host = {"conv": jax.random.normal(k1, (3, 3, 16, 64)), "dense": jax.random.normal(k2, (40, 64)),
          "bias": jax.random.normal(k3, (64,))}
  grads_seq = [jax.tree.map(lambda x, i=i: jnp.cos(x * (i + 1)), host) for i in range(6)]
  out = run(mbag.mbag(0.1, block_size=8, root_interval=3), host, grads_seq)
  # Packed symmetric blocks ([n, b(b+1)/2]) follow the parameters' sharding the same way.
  out["symmetric"] = run(mbag.mbag(0.1, block_size=8, root_interval=3, storage="symmetric"),
                         host, grads_seq)
  # Grafting per leaf on leaves sharded along their blocks (each in a bucket of its own).
  out["graft"] = run(mbag.mbag(0.1, block_size=8, root_interval=3, graft="adam"), host,
                     grads_seq)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
