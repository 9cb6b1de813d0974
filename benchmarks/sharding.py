"""MBAG state per device and update time, one device against 8 (simulated) devices.

Data parallelism as in ``config.data_parallel``: parameters and gradients replicated, the
statistics and roots sharded over the ``data`` axis with ``shard_blocks="data"``. Two trees:
ResNet-56 (shapes from ``jax.eval_shape`` of ``experiments.models.CifarResNet(depth=56)``) and a
stack of transformer-block-shaped dense layers with tens of millions of parameters. For each:
the MBAG state's bytes on every device, and the median time of a jitted steady update (no root)
and of a root step, the 1-device and 8-device updates interleaved round by round. ResNet-56 is
measured with one bucket per leaf (the default) and with fused buckets.

The 8 devices are simulated on the host CPU (``--xla_force_host_platform_device_count=8``): they
share its cores, so the time ratio shows the cost of the sharded program (padding, slicing,
gathering the directions), not a speed-up; the memory per device is what a real mesh gets.

Also a projection, on paper, of the state per device for a 1e9-parameter model: MBAG keeps H
and its root, ``tau x tau`` per block of ``tau`` parameters, i.e. ``2 tau`` float32 per
parameter; ``shard_blocks`` divides them over k devices; the momentum (4 bytes per parameter)
follows the replicated parameters:

  bytes per device = 2 * tau * 4 * N / k + 4 * N

  python -m benchmarks.sharding [--repeats 15] [--out results/benchmarks/sharding_cpu.jsonl]
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

import mbag  # noqa: E402

NUM_DEVICES = 8
PROJECTION_PARAMS = 1e9
PROJECTION_TAUS = (8, 16, 32)
PROJECTION_DEVICES = (8, 64, 256)


def resnet56_shapes() -> dict:
  """Parameter shapes of ``CifarResNet(depth=56)`` (853,018 parameters), without running it."""
  from experiments import models  # pylint: disable=import-outside-toplevel
  model = models.CifarResNet(depth=56, num_classes=10)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                                train=False))
  return variables["params"]


def transformer_shapes(d_model: int, num_layers: int) -> dict:
  """Dense kernels and biases of ``num_layers`` transformer blocks (MLP width 4 d_model)."""
  layers = {}
  for i in range(num_layers):
    layers[f"layer{i}"] = {
        "qkv": {"kernel": (d_model, 3 * d_model), "bias": (3 * d_model,)},
        "out": {"kernel": (d_model, d_model), "bias": (d_model,)},
        "mlp_in": {"kernel": (d_model, 4 * d_model), "bias": (4 * d_model,)},
        "mlp_out": {"kernel": (4 * d_model, d_model), "bias": (d_model,)},
        "norm1": {"scale": (d_model,)}, "norm2": {"scale": (d_model,)},
    }
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), layers,
                      is_leaf=lambda x: isinstance(x, tuple))


def random_tree(shapes, seed: int = 0):
  leaves, treedef = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [0.02 * jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])


def num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def time_interleaved(cases: dict, repeats: int) -> dict:
  """Median seconds per call of each ``name -> (fn, state, args)``; one call each per round.

  ``fn(args..., state) -> (out, state)`` with the state donated, as in a training step.
  """
  times = {name: [] for name in cases}
  states = {name: c[1] for name, c in cases.items()}
  for name, (fn, _, args) in cases.items():  # compile and warm up
    out, states[name] = fn(*args, states[name])
    jax.block_until_ready((out, states[name]))
  for _ in range(repeats):
    for name, (fn, _, args) in cases.items():
      start = time.perf_counter()
      out, states[name] = fn(*args, states[name])
      jax.block_until_ready((out, states[name]))
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def measure(name: str, shapes, block_size: int, repeats: int, fuse_blocks: bool = False) -> dict:
  params = random_tree(shapes)
  grads = jax.tree.map(lambda x: jnp.cos(x), params)
  mesh = jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(AxisType.Explicit,))
  result = {"model": name, "num_params": num_params(params), "block_size": block_size,
            "fuse_blocks": fuse_blocks, "repeats": repeats}
  for kind, root_interval in (("steady", 10**9), ("root", 1)):
    # One pair at a time, so that only two states of a large model are alive.
    kw = dict(block_size=block_size, root_interval=root_interval, fuse_blocks=fuse_blocks)
    single = mbag.scale_by_mbag(**kw)
    state = jax.jit(single.init)(params)
    result["state_bytes_1"] = mbag.bytes_per_device(mbag.find_mbag_state(state))
    update = jax.jit(lambda g, p, s, tx=single: tx.update(g, s, p), donate_argnums=(2,))
    cases = {"1": (update, state, (grads, params))}
    with jax.set_mesh(mesh):
      sharded = mbag.scale_by_mbag(shard_blocks="data", **kw)
      rep = NamedSharding(mesh, P())
      p8, g8 = jax.device_put(params, rep), jax.device_put(grads, rep)
      state8 = jax.jit(sharded.init)(p8)
      result["state_bytes_8"] = mbag.bytes_per_device(mbag.find_mbag_state(state8))
      update8 = jax.jit(lambda g, p, s, tx=sharded: tx.update(g, s, p), donate_argnums=(2,))
    cases["8"] = (_in_mesh(update8, mesh), state8, (g8, p8))
    del state, state8
    times = time_interleaved(cases, repeats)
    del cases
    result[f"{kind}_ms_1"] = 1e3 * times["1"]
    result[f"{kind}_ms_8"] = 1e3 * times["8"]
    result[f"{kind}_time_ratio_8_over_1"] = times["8"] / times["1"]
  result["state_bytes_ratio_8_over_1"] = result["state_bytes_8"] / result["state_bytes_1"]
  return result


def _in_mesh(fn, mesh):
  def call(*args):
    with jax.set_mesh(mesh):
      return fn(*args)
  return call


def projection() -> dict:
  """State bytes per device (GB) for a 1e9-parameter model: ``8 tau N / k + 4 N``."""
  n = PROJECTION_PARAMS
  rows = []
  for tau in PROJECTION_TAUS:
    for k in PROJECTION_DEVICES:
      rows.append({"tau": tau, "devices": k, "stats_roots_GB": 8 * tau * n / k / 1e9,
                   "momentum_GB": 4 * n / 1e9, "total_GB": (8 * tau * n / k + 4 * n) / 1e9,
                   "unsharded_total_GB": (8 * tau * n + 4 * n) / 1e9})
  return {"model": "projection_1e9_params", "num_params": n,
          "formula": "bytes/device = 2*tau*4*N/k (H and root, sharded) + 4*N (momentum, "
                     "replicated with the params); padding of block counts ignored",
          "rows": rows}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--d_model", type=int, default=1024)
  parser.add_argument("--num_layers", type=int, default=2)
  parser.add_argument("--large_block_size", type=int, default=8)
  parser.add_argument("--out", default="results/benchmarks/sharding_cpu.jsonl",
                      help="JSON lines written here (replaced)")
  args = parser.parse_args()
  common = {"command": "python -m benchmarks.sharding " + " ".join(sys.argv[1:]),
            "hardware": f"{NUM_DEVICES} simulated devices on {os.cpu_count()} CPU cores "
                        f"({platform.processor() or platform.machine()}), "
                        f"{jax.device_count()} x {jax.devices()[0].device_kind}",
            "jax": jax.__version__}
  records = [
      measure("resnet56", resnet56_shapes(), 32, args.repeats),
      measure("resnet56", resnet56_shapes(), 32, args.repeats, fuse_blocks=True),
      measure(f"transformer_d{args.d_model}_L{args.num_layers}",
              transformer_shapes(args.d_model, args.num_layers), args.large_block_size,
              max(3, args.repeats // 3)),
      projection(),
  ]
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps({**common, **r}) + "\n")
  for r in records[:-1]:
    print(f"{r['model']}{' (fused)' if r['fuse_blocks'] else ''}: {r['num_params']:,} params, "
          f"tau={r['block_size']}: state per device "
          f"{r['state_bytes_1']:,} B (1 device) -> {r['state_bytes_8']:,} B (8 devices), "
          f"ratio {r['state_bytes_ratio_8_over_1']:.4f}; steady update {r['steady_ms_1']:.1f} -> "
          f"{r['steady_ms_8']:.1f} ms (x{r['steady_time_ratio_8_over_1']:.2f}), root step "
          f"{r['root_ms_1']:.1f} -> {r['root_ms_8']:.1f} ms (x{r['root_time_ratio_8_over_1']:.2f})")
  print(records[-1]["formula"])
  for row in records[-1]["rows"]:
    print(f"  tau={row['tau']:>2} k={row['devices']:>3}: H+root {row['stats_roots_GB']:8.2f} GB "
          f"+ momentum {row['momentum_GB']:.1f} GB = {row['total_GB']:8.2f} GB per device "
          f"(unsharded {row['unsharded_total_GB']:.0f} GB)")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
