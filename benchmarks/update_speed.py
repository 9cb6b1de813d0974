"""Optimizer-update speed and memory of MBAG against Adam on the ResNet-56 parameter tree.

Everything is measured side by side in one process (ratios, not absolute times, are the result):
Adam update, MBAG steady step (no root), MBAG root step, amortised root cost, bytes of optimizer
state per parameter (also of AdaGrad), and the steady step's achieved bytes/s against
the bandwidth of a read+write pass over a buffer 8x the last-level cache, measured in this run
(bytes the step must move / that bandwidth is the memory limit). Storage variants: dense (the
default), ``storage="symmetric"``, and symmetric with a bfloat16 root. Three block layouts of the
dense storage are timed: the default (blocks of equal size share a bucket, leaves read back by
gathers), the same buckets read back by slices (the layout before gathers, ``fused_sliced``), and
one bucket per leaf (``per_leaf``).

  python -m benchmarks.update_speed [--repeats 30] [--layouts] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import glob
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import benchmarks
import mbag
from experiments import xla_flags


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


def time_updates(txs: dict, params, repeats: int) -> tuple[dict, dict]:
  """Median seconds of a jitted tx.update (state donated, as in a training step) for each tx,
  and the bytes of each tx's state.

  The candidates run interleaved, one step each per round, so that load on a shared machine
  affects all of them alike.
  """
  grads = jax.tree.map(lambda x: 0.01 * jnp.cos(x), params)
  fns, states, times, nbytes = {}, {}, {name: [] for name in txs}, {}
  for name, tx in txs.items():
    fns[name] = jax.jit(tx.update, donate_argnums=(1,))
    state = tx.init(params)
    nbytes[name] = tree_bytes(state)
    u, states[name] = fns[name](grads, state, params)
    jax.block_until_ready((u, states[name]))
  for _ in range(repeats):
    for name in txs:
      start = time.perf_counter()
      u, states[name] = fns[name](grads, states[name], params)
      jax.block_until_ready((u, states[name]))
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}, nbytes


def sliced_read_back(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """``tx`` whose buckets are read back into leaves by slices instead of gathers (when traced)."""

  def update(updates, state, params=None):
    with mbag.blocks.read_back_by_slices():
      return tx.update(updates, state, params)

  return optax.GradientTransformation(tx.init, update)


def last_level_cache_bytes() -> int:
  """Size of the largest CPU cache (Linux sysfs); 32 MiB when it cannot be read."""
  sizes = []
  for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
    with open(path) as f:
      text = f.read().strip()
    unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    sizes.append(int(text.rstrip("KMG")) * unit)
  return max(sizes, default=32 << 20)


def copy_bandwidth(num_bytes: int, repeats: int) -> float:
  """Bytes/s of a read+write pass over a buffer of num_bytes (donated, like optimizer state).

  A buffer that fits in the last-level cache measures the cache, not memory: the limit of a
  step that streams its state is the bandwidth over a buffer several times the cache.
  """
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


# Storage variants of MBAG's default layout: keyword arguments of mbag.mbag.
STORAGES = {
    "default": {},
    "symmetric": {"storage": "symmetric"},
    "symmetric_bf16": {"storage": "symmetric", "root_dtype": "bfloat16"},
}
# Block layouts of the dense storage: (fuse_blocks, read back by slices).
LAYOUTS = {"fused_sliced": (None, True), "per_leaf": (False, False)}


def baselines() -> dict:
  """Adam and AdaGrad. Shampoo's update alone is not timed here: its first (root) step on this
  tree did not return on the 2-core CPU (threads waiting, no CPU used, twice), which is the batched
  ``eigh`` deadlock that ``experiments.xla_flags`` avoids (now set in ``__main__``, not rerun with
  Shampoo); benchmarks.step_time times its whole training step and reports its state."""
  return {"adam": optax.adam(1e-3), "adagrad": optax.adagrad(1e-3)}


def measure(params, repeats: int, root_interval: int, *, with_layouts: bool = True,
            with_baselines: bool = True, storages=tuple(STORAGES)) -> dict:
  """Everything of the module docstring, side by side in one process, as a flat dict
  (``storages``: which of :data:`STORAGES`; "default" is always measured)."""
  n = num_params(params)
  results = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
             "machine": platform.processor() or platform.machine(),
             "hardware": benchmarks.hardware(), "num_params": n,
             "jax": jax.__version__, "repeats": repeats}
  txs = baselines() if with_baselines else {"adam": optax.adam(1e-3)}
  variants = {tag: (kw, None, False) for tag, kw in STORAGES.items()
              if tag == "default" or tag in storages}
  if with_layouts:
    variants.update({tag: ({}, fuse, sliced) for tag, (fuse, sliced) in LAYOUTS.items()})
  for tag, (kw, fuse, sliced) in variants.items():
    wrap = sliced_read_back if sliced else (lambda tx: tx)
    txs[f"{tag}_steady"] = wrap(mbag.mbag(1e-3, fuse_blocks=fuse, root_interval=10**9, **kw))
    txs[f"{tag}_root"] = wrap(mbag.mbag(1e-3, fuse_blocks=fuse, root_interval=1, **kw))
  t, nbytes = time_updates(txs, params, repeats)
  for name in txs:
    if not name.endswith("_root"):
      base = name.removesuffix("_steady")
      results[f"{base}_update_ms"] = 1e3 * t[name]
      results[f"{base}_state_bytes_per_param"] = nbytes[name] / n
  results["mbag_state_bytes_per_param"] = results["default_state_bytes_per_param"]
  # The memory limit: a read+write stream over a buffer 8x the last-level cache, and (the old
  # estimate) over a buffer as large as the dense MBAG state, which may sit partly in cache.
  llc = last_level_cache_bytes()
  results["last_level_cache_bytes"] = llc
  big = copy_bandwidth(8 * llc, repeats)
  results["copy_bandwidth_GBps"] = big / 1e9
  state = txs["default_steady"].init(params)
  s = mbag.find_mbag_state(state)
  results["copy_bandwidth_state_sized_GBps"] = copy_bandwidth(
      tree_bytes(s.stats) + tree_bytes(s.roots), repeats) / 1e9
  for tag in variants:
    steady, root = t[f"{tag}_steady"], t[f"{tag}_root"]
    moved = steady_bytes_moved(txs[f"{tag}_steady"].init(params), params)
    results[f"mbag_{tag}_steady_bytes_moved"] = moved
    results[f"mbag_{tag}_steady_ms"] = 1e3 * steady
    results[f"mbag_{tag}_root_step_ms"] = 1e3 * root
    results[f"mbag_{tag}_amortised_root_fraction"] = (root - steady) / root_interval / steady
    results[f"mbag_{tag}_steady_over_adam"] = steady / t["adam"]
    results[f"mbag_{tag}_amortised_over_adam"] = (
        steady + (root - steady) / root_interval) / t["adam"]
    # Achieved bytes/s of the steady step, and its time over the memory limit (1 = at the limit).
    results[f"mbag_{tag}_steady_GBps"] = moved / steady / 1e9
    results[f"mbag_{tag}_steady_over_traffic_estimate"] = steady / (moved / big)
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--root_interval", type=int, default=50)
  parser.add_argument("--layouts", action="store_true",
                      help="also time the dense storage's other block layouts (compiles 4 more "
                           "programs: minutes on 2 cores)")
  parser.add_argument("--json", help="append the results as one JSON line to this file")
  args = parser.parse_args(argv)

  results = measure(resnet56_params(), args.repeats, args.root_interval,
                    with_layouts=args.layouts)
  results["command"] = " ".join(["python -m benchmarks.update_speed", *sys.argv[1:]])
  width = max(len(k) for k in results)
  for k, v in results.items():
    print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  if args.json:
    benchmarks.append_json_lines(args.json, [results])


if __name__ == "__main__":
  xla_flags.set_entry_point_flags()
  main()
