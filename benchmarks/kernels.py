r"""What bounds MBAG's update on this backend: its kernels timed against a memory stream, side by side.

  python -m benchmarks.kernels [--blocks 94256x9 26323x32] [--repeats 10] [--json out.jsonl]

For each bucket shape ``n x b`` (defaults: ResNet-56's 3x3 conv taps, and the CURVES autoencoder's
dense blocks at tau = 32), in one process and interleaved round by round, the median seconds of:

* ``copy``: a read+write pass over ``n b^2`` float32 (one block matrix per block, state-sized);
* ``adam``: a flat Adam update of ``n b`` parameters (the first-order cost of the same parameters);
* ``sherman_morrison``: :func:`mbag.linalg.sherman_morrison`, ``u = H g``,
  ``w = u / sqrt(1 + g^T u)``, ``H - w w^T`` with its non-finite guard (Algorithm 1's steady
  statistics update; the minimum traffic is two reads and one write of H);
* ``rank_one_add``: ``G + g g^T`` (one read and one write: what keeping G instead of H costs);
* ``matvec``: ``R g`` (one read of the root: the steady step's direction);
* ``matmul``: ``A @ B`` of the batch, with its GFLOP/s (a Newton-Schulz iteration is 3 of them);
* ``newton_schulz``: :func:`mbag.linalg.matrix_root` with 5 steps (the root step's core);
* ``inverse``: batched ``jnp.linalg.inv`` (what a root step of a variant keeping G instead of
  H would add; docs/performance.md says why that variant was not kept).

Ratios are to ``copy`` (1.0 = at the memory limit of one pass) and to ``adam``. The
sherman_morrison output is checked against a float64 NumPy Sherman-Morrison on a few blocks
before anything is timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import benchmarks
from experiments import xla_flags
from mbag import linalg

DEFAULT_BLOCKS = ("94256x9", "26323x32")


def parse_blocks(spec: str) -> tuple[int, int]:
  try:
    n, b = (int(x) for x in spec.lower().split("x"))
  except ValueError:
    raise ValueError(f"--blocks: expected NxB (e.g. 94256x9), got {spec!r}") from None
  if n < 1 or b < 1:
    raise ValueError(f"--blocks: N and B must be >= 1, got {spec!r}")
  return n, b


# The library's kernel (guarded, as the steady update runs it); a module name so a test can swap it.
sherman_morrison = linalg.sherman_morrison


def kernels(n: int, b: int) -> dict:
  """name -> a callable running that kernel once on this bucket shape; the ones that update state
  (copy, adam, sherman_morrison, rank_one_add) donate it and keep the result for the next call."""
  key = jax.random.PRNGKey(0)
  A = 0.1 * jax.random.normal(key, (n, b, b))
  spd = jnp.eye(b) + A @ jnp.swapaxes(A, -1, -2) / b
  g = 0.01 * jax.random.normal(jax.random.fold_in(key, 1), (n, b))
  flat = g.reshape(-1)

  def adam(p, m, v, grad):
    m = 0.9 * m + 0.1 * grad
    v = 0.999 * v + 0.001 * grad * grad
    return p - 1e-3 * m / (jnp.sqrt(v) + 1e-8), m, v

  state = {"S": spd + 0.0, "G": spd + 0.0, "C": spd + 0.0,
           "adam": (jnp.zeros_like(flat), jnp.zeros_like(flat), jnp.zeros_like(flat))}
  copy = jax.jit(lambda x: x * 1.0001 + 1e-6, donate_argnums=(0,))
  sm = jax.jit(sherman_morrison, donate_argnums=(0,))
  add = jax.jit(lambda G, g: G + g[:, :, None] * g[:, None, :], donate_argnums=(0,))
  adam_fn = jax.jit(adam, donate_argnums=(0, 1, 2))
  matvec = jax.jit(lambda R, g: jnp.einsum("nij,nj->ni", R, g))
  matmul = jax.jit(lambda X, Y: X @ Y)
  ns = jax.jit(lambda X: linalg.matrix_root(X, "sqrt", num_steps=5)[0])
  inv = jax.jit(jnp.linalg.inv)

  def run_copy():
    state["C"] = copy(state["C"])
    return state["C"]

  def run_sm():
    state["S"] = sm(state["S"], g)
    return state["S"]

  def run_add():
    state["G"] = add(state["G"], g)
    return state["G"]

  def run_adam():
    state["adam"] = adam_fn(*state["adam"], flat)
    return state["adam"][0]

  return {"copy": run_copy, "adam": run_adam, "sherman_morrison": run_sm,
          "rank_one_add": run_add, "matvec": lambda: matvec(spd, g),
          "matmul": lambda: matmul(spd, spd), "newton_schulz": lambda: ns(spd),
          "inverse": lambda: inv(spd)}


def check_sherman_morrison(b: int) -> float:
  """Largest relative error of the timed Sherman-Morrison on 4 blocks against float64 NumPy."""
  rng = np.random.default_rng(0)
  A = rng.standard_normal((4, b, b))
  H = np.eye(b) + A @ A.transpose(0, 2, 1) / b
  g = rng.standard_normal((4, b))
  ref = np.stack([h - np.outer(h @ x, h @ x) / (1.0 + x @ h @ x) for h, x in zip(H, g)])
  got = np.asarray(sherman_morrison(jnp.asarray(H, jnp.float32), jnp.asarray(g, jnp.float32)))
  return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def measure(n: int, b: int, repeats: int) -> dict:
  err = check_sherman_morrison(b)
  if not err < 1e-4:
    raise AssertionError(f"the timed Sherman-Morrison is wrong: relative error {err:.2e}")
  fns = kernels(n, b)
  for f in fns.values():  # compile and warm up
    jax.block_until_ready(f())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, f in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(f())
      times[name].append(time.perf_counter() - start)
  med = {name: statistics.median(t) for name, t in times.items()}
  record = {"benchmark": "kernels", "blocks": n, "block_size": b,
            "state_bytes": 4 * n * b * b, "repeats": repeats, "hardware": benchmarks.hardware(),
            "jax": jax.__version__, "sherman_morrison_relative_error": err}
  for name, t in med.items():
    record[f"{name}_ms"] = 1e3 * t
    record[f"{name}_over_copy"] = t / med["copy"]
    record[f"{name}_over_adam"] = t / med["adam"]
  record["copy_GBps"] = 2 * record["state_bytes"] / med["copy"] / 1e9
  record["matmul_GFLOPs"] = 2 * n * b ** 3 / med["matmul"] / 1e9
  return record


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--blocks", nargs="+", default=list(DEFAULT_BLOCKS),
                      help="bucket shapes NxB (number of blocks x block size)")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--json", help="append one JSON line per bucket shape to this file")
  args = parser.parse_args(argv)
  if args.repeats < 1:
    parser.error(f"--repeats must be >= 1, got {args.repeats}")
  shapes = [parse_blocks(s) for s in args.blocks]
  command = " ".join(["python -m benchmarks.kernels", *(sys.argv[1:] if argv is None else argv)])
  records = []
  for n, b in shapes:
    record = measure(n, b, args.repeats)
    record["command"] = command
    records.append(record)
    print(f"{n} blocks of {b}x{b} ({record['state_bytes'] / 1e6:.0f} MB per state array), "
          f"{record['hardware']}; copy {record['copy_GBps']:.1f} GB/s, matmul "
          f"{record['matmul_GFLOPs']:.1f} GFLOP/s")
    print(f"  {'kernel':<18}{'ms':>9}{'x copy':>9}{'x adam':>9}")
    for name in ("copy", "adam", "sherman_morrison", "rank_one_add", "matvec", "matmul",
                 "newton_schulz", "inverse"):
      print(f"  {name:<18}{record[name + '_ms']:9.2f}{record[name + '_over_copy']:9.2f}"
            f"{record[name + '_over_adam']:9.2f}")
  if args.json:
    benchmarks.append_json_lines(args.json, records)
  return records


if __name__ == "__main__":
  xla_flags.set_entry_point_flags()
  main()
