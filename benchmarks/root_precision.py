"""What a bfloat16 (and a packed symmetric) root does to MBAG's direction ``R g``.

On the realistic statistics of benchmarks.root_accuracy (9x9 and 32x32 blocks after t steps of the
drift benchmark's gradient stream, and a nearly rank-one case), the float32 Newton-Schulz root
(T_NS = 5, the paper's) is stored as MBAG would store it: dense float32, its packed upper triangle
(``storage="symmetric"``), and that triangle in bfloat16 (``root_dtype="bfloat16"``). Each is
applied, in float32, to gradients of the same stream, and compared with the exact float64 root's
direction: relative error ``|R g - R* g| / |R* g|`` (median and max over blocks), and the part due to
storage alone, ``|R_stored g - R_32 g| / |R_32 g|``. Prints a table; ``--json`` appends JSON lines.

  python -m benchmarks.root_precision [--t 1000] [--json out.jsonl]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import benchmarks
from benchmarks import root_accuracy
from mbag import linalg


def _rel(a, b):
  return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def rows_for(name, H, g, num_steps=5):
  exact = np.einsum("nij,nj->ni", root_accuracy.exact_sqrt(H), g)
  root32, _ = linalg.matrix_root(jnp.asarray(H, jnp.float32), "sqrt", num_steps=num_steps)
  stored = {
      "dense float32": root32,
      "symmetric float32": linalg.unpack_symmetric(linalg.pack_symmetric(root32)),
      "symmetric bfloat16": linalg.unpack_symmetric(
          linalg.pack_symmetric(root32).astype(jnp.bfloat16)).astype(jnp.float32),
  }
  g32 = jnp.asarray(g, jnp.float32)
  base = np.asarray(jnp.einsum("nij,nj->ni", root32, g32), np.float64)
  out = []
  for storage, R in stored.items():
    d = np.asarray(jnp.einsum("nij,nj->ni", R, g32), np.float64)
    err, own = _rel(d, exact), _rel(d, base)
    cos = np.sum(d * exact, -1) / (np.linalg.norm(d, axis=-1) * np.linalg.norm(exact, axis=-1))
    out.append({"case": name, "storage": storage, "newton_schulz_steps": num_steps,
                "median_rel_error": float(np.median(err)), "max_rel_error": float(err.max()),
                "median_storage_error": float(np.median(own)), "max_storage_error": float(own.max()),
                "min_cosine": float(cos.min())})
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--t", type=int, default=1000)
  parser.add_argument("--json")
  args = parser.parse_args(argv)
  rng = np.random.default_rng(1)
  rows = []
  for name, H in ((f"stream b=9 t={args.t}", root_accuracy.statistics_H(9, args.t)),
                  (f"stream b=32 t={args.t}", root_accuracy.statistics_H(32, args.t)),
                  ("rank-one b=9", root_accuracy.rank_one_H(9))):
    # Gradients that excite every direction of H alike, and ones along its weakest direction
    # (largest root eigenvalue: where MBAG moves most).
    w, V = np.linalg.eigh(H)
    rows += rows_for(name + " random g", H, rng.standard_normal(H.shape[:2]))
    rows += rows_for(name + " top g", H, V[:, :, -1] + 0.1 * rng.standard_normal(H.shape[:2]))
  print(f"{'case':<32}{'storage':<20}{'med err':>10}{'max err':>10}{'med store':>11}"
        f"{'max store':>11}{'min cos':>12}")
  for r in rows:
    print(f"{r['case']:<32}{r['storage']:<20}{r['median_rel_error']:>10.2e}{r['max_rel_error']:>10.2e}"
          f"{r['median_storage_error']:>11.2e}{r['max_storage_error']:>11.2e}{r['min_cosine']:>12.8f}")
  if args.json:
    benchmarks.append_json_lines(args.json, rows)


if __name__ == "__main__":
  main()
