"""How accurate is the Newton-Schulz root on realistic MBAG statistics?

Builds H = (lambda I + sum g g^T)^{-1} for 9x9 and 32x32 blocks from the gradient stream of
benchmarks.sherman_morrison_drift (t steps), and a nearly rank-one case, then compares the
Newton-Schulz square root (fixed steps, and with a tolerance) to the exact float64 root.
Each case is also run in the form MBAG-EMA (Algorithm 2) uses: the same root ``H^{1/2} = G^{-1/2}``
as the inverse-root output of Newton-Schulz run on ``G = H^{-1}`` (``form`` "G" in the rows).
Prints a table and, with --json, one JSON line per row.

  python -m benchmarks.root_accuracy [--t 1000] [--json out.jsonl]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import benchmarks
from benchmarks import sherman_morrison_drift
from mbag import linalg


def statistics_H(b, t, lam=0.01, num_blocks=64, seed=0):
  with jax.enable_x64(True):
    gradient, key = sherman_morrison_drift.stream_fn(jax.random.PRNGKey(seed), num_blocks, b, t)
    keys = jax.random.split(key, t)
    gs = jax.vmap(gradient)(jnp.arange(t), keys)  # [t, n, b]
    G = lam * jnp.eye(b) + jnp.einsum("tni,tnj->nij", gs, gs)
    return np.linalg.inv(np.asarray(G))


def rank_one_H(b, lam=0.01, num_blocks=64, seed=0):
  rng = np.random.default_rng(seed)
  v = rng.standard_normal((num_blocks, b))
  G = lam * np.eye(b) + 1e3 * v[:, :, None] * v[:, None, :]
  return np.linalg.inv(G)


def exact_sqrt(H):
  w, V = np.linalg.eigh(H)
  return (V * np.sqrt(w)[:, None, :]) @ np.swapaxes(V, 1, 2)


def row(name, H, form="H", **kw):
  """Errors of ``H^{1/2}`` computed from H (``form="H"``, Algorithm 1) or as ``G^{-1/2}`` from
  ``G = H^{-1}`` (``form="G"``, the inverse root of Algorithm 2), against the exact float64 root."""
  ref = exact_sqrt(H)
  if form == "H":
    root, info = linalg.matrix_root(jnp.asarray(H, jnp.float32), "sqrt", **kw)
  else:
    G = np.linalg.inv(H)
    root, info = linalg.matrix_root(jnp.asarray(0.5 * (G + np.swapaxes(G, 1, 2)), jnp.float32),
                                    "inv_sqrt", **kw)
  root = np.asarray(root, np.float64)
  rel = np.linalg.norm(root - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
  # Worst direction: the root's error along each eigenvector, relative to the exact value there.
  w, V = np.linalg.eigh(H)
  along = np.einsum("nik,nij,njk->nk", V, root, V) / np.sqrt(w)
  return {"case": name, "form": form, **{k: v for k, v in kw.items()}, "steps": int(info.steps),
          "mean_rel_error": float(rel.mean()), "max_rel_error": float(rel.max()),
          "worst_direction_ratio": float(along.min()),
          "max_residual": float(np.max(info.residual)), "max_root_error": float(np.max(info.relative_error))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--t", type=int, default=1000)
  parser.add_argument("--json")
  args = parser.parse_args()
  cases = [(f"stream b=9 t={args.t}", statistics_H(9, args.t)),
           (f"stream b=32 t={args.t}", statistics_H(32, args.t)),
           ("rank-one b=9", rank_one_H(9))]
  settings = [dict(num_steps=5), dict(num_steps=7), dict(num_steps=10), dict(num_steps=20),
              dict(tolerance=1e-3), dict(tolerance=1e-5)]
  rows = [row(name, H, form, **s) for name, H in cases for form in ("H", "G") for s in settings]
  print(f"{'case':<22}{'form':<6}{'setting':<18}{'steps':>6}{'mean err':>11}{'max err':>10}"
        f"{'worst dir':>11}{'residual':>11}{'root_error':>11}")
  for r in rows:
    setting = f"tol={r['tolerance']:g}" if "tolerance" in r else f"steps={r['num_steps']}"
    print(f"{r['case']:<22}{r['form']:<6}{setting:<18}{r['steps']:>6}{r['mean_rel_error']:>11.2e}"
          f"{r['max_rel_error']:>10.2e}{r['worst_direction_ratio']:>11.3g}{r['max_residual']:>11.2e}"
          f"{r['max_root_error']:>11.2e}")
  if args.json:
    benchmarks.append_json_lines(args.json, rows)


if __name__ == "__main__":
  main()
