"""Compile time of ``jax.jit(tx.update)`` against Adam's as the number of parameter leaves grows.

A model of ``L`` dense layers has ``2 L`` leaves (a ``(width, width)`` kernel and a bias each).
For each leaf count, Adam and the MBAG layouts are compiled in one process, interleaved over
``--repeats`` rounds (the median is kept), and the ratio to Adam is the result:

* ``default``: buckets by block size (``fuse_blocks=None``), leaves read back by gathers;
* ``per_leaf``: one bucket per leaf (``fuse_blocks=False``), the layout before buckets were the
  default (slow to compile: XLA compiles every leaf's small matrix products separately).

  python -m benchmarks.compile_time [--leaves 50 100 400] [--repeats 3] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import benchmarks
import mbag


def mlp_params(num_leaves: int, width: int) -> dict:
  return {f"layer{i:03d}": {"kernel": jnp.zeros((width, width)), "bias": jnp.zeros(width)}
          for i in range(num_leaves // 2)}


def compile_seconds(tx: optax.GradientTransformation, params) -> float:
  """Seconds to lower and compile ``jax.jit(tx.update)`` from nothing (caches cleared first)."""
  state = tx.init(params)
  jax.clear_caches()  # jit caches by function: a repeat would otherwise measure a cache hit
  start = time.perf_counter()
  jax.jit(tx.update).lower(params, state, params).compile()
  return time.perf_counter() - start


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--leaves", type=int, nargs="+", default=[50, 100, 400])
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--per_leaf_max", type=int, default=100,
                      help="skip the per-leaf layout above this many leaves (minutes)")
  parser.add_argument("--json", help="append one JSON line per leaf count to this file")
  args = parser.parse_args(argv)
  for n in args.leaves:
    params = mlp_params(n, args.width)
    txs = {"adam": optax.adam(1e-3), "mbag default": mbag.mbag(1e-3)}
    if n <= args.per_leaf_max:
      txs["mbag per_leaf"] = mbag.mbag(1e-3, fuse_blocks=False)
    times: dict[str, list[float]] = {k: [] for k in txs}
    for _ in range(args.repeats):
      for name, tx in txs.items():
        times[name].append(compile_seconds(tx, params))
    median = {k: statistics.median(v) for k, v in times.items()}
    row = {"benchmark": "compile_time", "leaves": n, "width": args.width,
           "seconds": {k: round(v, 3) for k, v in median.items()},
           "ratio_to_adam": {k: round(v / median["adam"], 2) for k, v in median.items()},
           "repeats": args.repeats, "jax": jax.__version__, "backend": jax.default_backend(),
           "machine": platform.processor() or platform.machine()}
    print(json.dumps(row), flush=True)
    if args.json:
      benchmarks.append_json_lines(args.json, [row])


if __name__ == "__main__":
  main()
