"""Run in a subprocess with 8 simulated CPU devices (see tests/test_sharding.py); prints JSON.

Replicated parameters, MBAG with ``shard_blocks``: on an explicit mesh, on an auto mesh and on
a 2-axis mesh, against the same steps on one device.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, PartitionSpec as P  # noqa: E402

import mbag  # noqa: E402
from tests import compat  # noqa: E402

NUM_STEPS = 6


def specs(tree):
  """Each leaf's placement, written as a PartitionSpec without trailing ``None`` entries."""
  def one(x):
    spec = getattr(x.sharding, "spec", None)
    return "single device" if spec is None else compat.spec_str(P(*compat.placement(spec)))
  return [one(x) for x in jax.tree.leaves(tree)]


def params_and_grads():
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  # Block counts with block_size 8: conv 1024, dense 320, bias 8, head 30 (pads to 32), head_b 2.
  shapes = {"conv": (3, 3, 16, 64), "dense": (40, 64), "bias": (64,), "head": (20, 10),
            "head_b": (10,)}
  params = {k: jax.random.normal(key, s) for key, (k, s) in zip(keys, shapes.items())}
  grads = [jax.tree.map(lambda x, i=i: jnp.cos(x * (i + 1)), params) for i in range(NUM_STEPS)]
  return params, grads


def run_steps(tx, params, grads, place):
  params = place(params)
  state = jax.jit(tx.init)(params)
  before = specs(mbag.find_mbag_state(state))
  update = jax.jit(tx.update)
  for g in grads:
    u, state = update(place(g), state, params)
  return u, state, before


def compare(u, u_ref):
  diff = max(float(np.max(np.abs(np.asarray(u[k]) - np.asarray(u_ref[k])))) for k in u_ref)
  return diff


def case(mesh, tx, params, grads):
  with jax.set_mesh(mesh):
    replicate = lambda t: jax.tree.map(lambda x: jax.device_put(x, P()), t)  # noqa: E731
    u, state, before = run_steps(tx, params, grads, replicate)
    s = mbag.find_mbag_state(state)
    return {"u": u, "before": before, "after": specs(s),
            "stats_specs": [compat.spec_str(x.sharding.spec) for x in s.stats],
            "update_specs": sorted(set(compat.spec_str(x.sharding.spec) for x in u.values())),
            "bytes": mbag.bytes_per_device(s), "stats_rows": [int(x.shape[0]) for x in s.stats],
            "root_residual": float(s.diagnostics.root_residual),
            "num_root_fallbacks": int(s.diagnostics.num_root_fallbacks)}


def main():
  params, grads = params_and_grads()
  kw = dict(block_size=8, root_interval=3, fuse_blocks=False)  # one bucket per leaf
  u_ref, state_ref, _ = run_steps(mbag.mbag(0.1, **kw), params, grads, lambda t: t)
  ref = mbag.find_mbag_state(state_ref)
  scale = max(float(np.max(np.abs(np.asarray(v)))) for v in u_ref.values())
  out = {"scale": scale, "single_bytes": mbag.bytes_per_device(ref),
         "single_rows": [int(x.shape[0]) for x in ref.stats],
         "single_root_residual": float(ref.diagnostics.root_residual)}

  meshes = {
      "explicit": (jax.make_mesh((8,), ("d",), axis_types=(AxisType.Explicit,)), "d"),
      "auto": (jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,)), "d"),
      "two_axes": (jax.make_mesh((4, 2), ("d", "m"), axis_types=(AxisType.Explicit,) * 2),
                   ("d", "m")),
  }
  for name, (mesh, axes) in meshes.items():
    r = case(mesh, mbag.mbag(0.1, shard_blocks=axes, **kw), params, grads)
    r["max_abs_diff"] = compare(r.pop("u"), u_ref)
    out[name] = r
  # Roots in chunks of 64 blocks although the blocks are sharded (the default takes a sharded
  # bucket whole): the chunks slice the sharded block axis, and the state stays sharded.
  for name in ("explicit", "auto"):
    r = case(meshes[name][0], mbag.mbag(0.1, shard_blocks="d", root_chunk_size=64, **kw),
             params, grads)
    r["max_abs_diff"] = compare(r.pop("u"), u_ref)
    out[f"{name}_chunked"] = r

  # MBAG-EMA and MBAG-N with fused buckets (one [n, b, b] array for all leaves of a block size),
  # and MBAG with packed symmetric blocks ([n, b(b+1)/2]) and a bfloat16 root.
  symmetric = lambda lr, **k: mbag.mbag(lr, storage="symmetric", root_dtype="bfloat16", **k)  # noqa: E731
  # Grafting (per leaf: a segment sum over each leaf's blocks of a fused bucket) on top.
  grafted = lambda lr, **k: mbag.mbag(lr, graft="adam", **k)  # noqa: E731
  for name, make in (("ema_fused", mbag.mbag_ema), ("n_fused", mbag.mbag_n),
                     ("symmetric_bf16_fused", symmetric), ("graft_fused", grafted)):
    extra = {} if make is mbag.mbag_n else {"root_interval": 3}
    u1, _, _ = run_steps(make(0.1, block_size=8, fuse_blocks=True, **extra), params, grads,
                         lambda t: t)
    r = case(meshes["explicit"][0], make(0.1, block_size=8, fuse_blocks=True, shard_blocks="d",
                                         **extra), params, grads)
    r["max_abs_diff"] = compare(r.pop("u"), u1)
    r["scale"] = max(float(np.max(np.abs(np.asarray(v)))) for v in u1.values())
    out[name] = r
  print(json.dumps(out))


if __name__ == "__main__":
  main()
