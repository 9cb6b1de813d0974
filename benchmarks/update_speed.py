"""Optimizer-update speed and memory of MBAG against Adam on the ResNet-56 parameter tree.

Everything is measured side by side in one process (ratios, not absolute times, are the result):
Adam update, MBAG steady step (no root), MBAG root step, amortised root cost, bytes of optimizer
state per parameter, and the steady step against a memory-traffic estimate (bytes the step must
move / copy bandwidth measured in this run). Three block layouts are timed: the default (blocks of
equal size share a bucket, leaves read back by gathers), the same buckets read back by slices
(the layout before gathers, ``fused_sliced``), and one bucket per leaf (``per_leaf``).

  python -m benchmarks.update_speed [--repeats 30] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mbag
from mbag._src import partition


def resnet56_params() -> dict:
  """Shapes of ResNet-56 (option-A shortcuts, flax layouts): 853,018 parameters."""
  params = {"stem": {"kernel": (3, 3, 3, 16), "bn_scale": (16,), "bn_bias": (16,)}}
  c_in = 16
  for stage, c in enumerate((16, 32, 64)):
    for block in range(9):
      p = {}
      for conv in range(2):
        p[f"conv{conv}"] = (3, 3, c_in if conv == 0 else c, c)
        p[f"bn{conv}_scale"] = (c,)
        p[f"bn{conv}_bias"] = (c,)
      params[f"stage{stage}_block{block}"] = p
      c_in = c
  params["head"] = {"kernel": (64, 10), "bias": (10,)}
  key = jax.random.PRNGKey(0)
  leaves, treedef = jax.tree.flatten(params, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [0.1 * jax.random.normal(k, s) for k, s in zip(keys, leaves)])


def num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def time_updates(txs: dict, params, repeats: int) -> dict:
  """Median seconds of a jitted tx.update (state donated, as in a training step) for each tx.

  The candidates run interleaved, one step each per round, so that load on a shared machine
  affects all of them alike.
  """
  grads = jax.tree.map(lambda x: 0.01 * jnp.cos(x), params)
  fns, states, times = {}, {}, {name: [] for name in txs}
  for name, tx in txs.items():
    fns[name] = jax.jit(tx.update, donate_argnums=(1,))
    u, states[name] = fns[name](grads, tx.init(params), params)
    jax.block_until_ready((u, states[name]))
  for _ in range(repeats):
    for name in txs:
      start = time.perf_counter()
      u, states[name] = fns[name](grads, states[name], params)
      jax.block_until_ready((u, states[name]))
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def sliced_read_back(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """``tx`` whose buckets are read back into leaves by slices instead of gathers (when traced)."""

  def update(updates, state, params=None):
    saved, partition.GATHER_MAX_SIZE = partition.GATHER_MAX_SIZE, 0
    try:
      return tx.update(updates, state, params)
    finally:
      partition.GATHER_MAX_SIZE = saved

  return optax.GradientTransformation(tx.init, update)


def copy_bandwidth(num_bytes: int, repeats: int) -> float:
  """Bytes/s of a read+write pass over a buffer of num_bytes (donated, like optimizer state)."""
  x = jnp.ones(num_bytes // 4, jnp.float32)
  step = jax.jit(lambda a: a * 1.0001 + 1e-6, donate_argnums=(0,))
  x = step(x)
  x.block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    x = step(x)
    x.block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * num_bytes / statistics.median(times)


def steady_bytes_moved(state, params) -> int:
  """Minimal traffic of a steady MBAG step: read+write H, read the root, read g, write the
  update, read+write momentum."""
  s = mbag.find_mbag_state(state)
  stats, roots = tree_bytes(s.stats), tree_bytes(s.roots)
  vec = tree_bytes(params)
  return 2 * stats + roots + 4 * vec


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--root_interval", type=int, default=50)
  parser.add_argument("--json", help="append the results as one JSON line to this file")
  args = parser.parse_args()

  params = resnet56_params()
  n = num_params(params)
  results = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
             "machine": platform.processor() or platform.machine(), "num_params": n,
             "jax": jax.__version__, "repeats": args.repeats}

  txs = {"adam": optax.adam(1e-3)}
  layouts = {"default": (None, False), "fused_sliced": (None, True), "per_leaf": (False, False)}
  for tag, (fuse, sliced) in layouts.items():
    wrap = sliced_read_back if sliced else (lambda tx: tx)
    txs[f"{tag}_steady"] = wrap(mbag.mbag(1e-3, fuse_blocks=fuse, root_interval=10**9))
    txs[f"{tag}_root"] = wrap(mbag.mbag(1e-3, fuse_blocks=fuse, root_interval=1))
  t = time_updates(txs, params, args.repeats)
  results["adam_update_ms"] = 1e3 * t["adam"]
  results["adam_state_bytes_per_param"] = tree_bytes(optax.adam(1e-3).init(params)) / n
  state = txs["default_steady"].init(params)
  results["mbag_state_bytes_per_param"] = tree_bytes(state) / n
  moved = steady_bytes_moved(state, params)
  results["mbag_steady_bytes_moved"] = moved
  # Stream over a buffer as large as the MBAG state (larger than the CPU's last-level cache).
  s = mbag.find_mbag_state(state)
  bandwidth = copy_bandwidth(tree_bytes(s.stats) + tree_bytes(s.roots), args.repeats)
  results["copy_bandwidth_GBps"] = bandwidth / 1e9
  results["memory_traffic_estimate_ms"] = 1e3 * moved / bandwidth
  for tag in layouts:
    steady, root = t[f"{tag}_steady"], t[f"{tag}_root"]
    results[f"mbag_{tag}_steady_ms"] = 1e3 * steady
    results[f"mbag_{tag}_root_step_ms"] = 1e3 * root
    results[f"mbag_{tag}_amortised_root_fraction"] = (root - steady) / args.root_interval / steady
    results[f"mbag_{tag}_steady_over_adam"] = steady / t["adam"]
    results[f"mbag_{tag}_amortised_over_adam"] = (
        steady + (root - steady) / args.root_interval) / t["adam"]
    results[f"mbag_{tag}_steady_over_traffic_estimate"] = (
        results[f"mbag_{tag}_steady_ms"] / results["memory_traffic_estimate_ms"])

  width = max(len(k) for k in results)
  for k, v in results.items():
    print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(results) + "\n")


if __name__ == "__main__":
  main()
