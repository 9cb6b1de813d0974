"""Are a refactor's updates bit-identical? Fingerprint every algorithm x option, then compare.

Runs mbag / mbag_ema / mbag_n for 12 steps (root_interval 4, fixed random gradients) on a tree
with a conv kernel, a dense kernel, a bias and a scalar, under each engineering option, and saves
the final parameters. Run it at two commits (each from its own checkout) and compare:

  python -m benchmarks.update_fingerprint --out before.npz      # at the old commit
  python -m benchmarks.update_fingerprint --out after.npz       # at the new one
  python -m benchmarks.update_fingerprint --compare before.npz after.npz

``--compare`` prints the arrays that differ in shape or in any bit and exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
import optax

import mbag

CASES = {
    "default": {}, "nofuse": dict(fuse_blocks=False), "symmetric": dict(storage="symmetric"),
    "bf16root": dict(root_dtype="bfloat16"), "chunk": dict(root_chunk_size=2),
    "tol": dict(newton_schulz_tolerance=1e-3), "eigh": dict(root_method="eigh"),
    "tau8": dict(block_size=8), "tau1": dict(block_size=1), "warm": dict(root_warmup_steps=3),
    "lam": dict(initial_accumulator_value=0.1), "ns7": dict(newton_schulz_steps=7),
}
ROOT_OPTIONS = ("bf16root", "chunk", "tol", "eigh", "warm", "ns7")  # MBAG-N takes no root


def fingerprint(steps: int = 12) -> dict[str, np.ndarray]:
  shapes = {"conv": (3, 3, 4, 8), "dense": (40, 24), "b": (24,), "s": ()}
  params = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
  out = {}
  for alg in ("mbag", "mbag_ema", "mbag_n"):
    for name, kw in CASES.items():
      if alg == "mbag_n" and name in ROOT_OPTIONS:
        continue
      extra = {} if alg == "mbag_n" else dict(root_interval=4)
      tx = getattr(mbag, alg)(1e-2, **extra, **kw)
      p, state, update = params, tx.init(params), jax.jit(tx.update)
      key = jax.random.PRNGKey(0)
      for i in range(steps):
        key, *keys = jax.random.split(key, len(shapes) + 1)
        grads = {k: jax.random.normal(kk, s) * (1 + i % 3) for (k, s), kk in zip(shapes.items(), keys)}
        u, state = update(grads, state, p)
        p = optax.apply_updates(p, u)
      out.update({f"{alg}/{name}/{k}": np.asarray(v) for k, v in p.items()})
  return out


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
  """One line per array that is missing on a side or differs in shape or in any bit."""
  lines = [f"{k}: only in the first" for k in sorted(set(a) - set(b))]
  lines += [f"{k}: only in the second" for k in sorted(set(b) - set(a))]
  for k in sorted(set(a) & set(b)):
    if a[k].shape != b[k].shape:
      same = a[k].size == b[k].size and np.array_equal(a[k].reshape(-1), b[k].reshape(-1))
      lines.append(f"{k}: shape {a[k].shape} vs {b[k].shape}"
                   + (" (same values)" if same else ""))
    elif not np.array_equal(a[k], b[k]):
      lines.append(f"{k}: max |difference| {float(np.max(np.abs(a[k] - b[k]))):.3g}")
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="save the fingerprint to this .npz file")
  parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two .npz files")
  args = parser.parse_args(argv)
  if args.compare:
    a, b = (dict(np.load(path)) for path in args.compare)
    lines = compare(a, b)
    print(f"{len(set(a) | set(b))} arrays, {len(lines)} differ" + "".join(f"\n  {l}" for l in lines))
    return 1 if lines else 0
  if not args.out:
    parser.error("give --out FILE or --compare A B")
  prints = fingerprint()
  np.savez(args.out, **prints)
  print(f"{len(prints)} arrays -> {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
