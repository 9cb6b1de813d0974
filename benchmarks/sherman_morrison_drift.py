"""Float32 Sherman-Morrison over a long run, against a float64 inverse of the accumulated statistics.

Gradients are a synthetic but realistic stream: heavy-tailed (Student-t, 3 dof), strongly correlated
within a block (covariance condition number 1e4), with a scale that decays over training, and a
dominant direction that switches halfway (nearly rank-one phases). The same updates also run on the
packed upper triangles (``storage="symmetric"``), which must give the same matrices bit for bit.
Prints one JSON line of results.

  python -m benchmarks.sherman_morrison_drift --steps 100000
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from mbag import linalg


def stream_fn(key, num_blocks, b, steps):
  k1, k2 = jax.random.split(key)
  q, _ = jnp.linalg.qr(jax.random.normal(k1, (num_blocks, b, b), jnp.float64))
  spectrum = jnp.geomspace(1.0, 1e-2, b)  # covariance condition number 1e4
  L = q * spectrum[None, None, :]

  def gradient(t, key):
    ka, kb = jax.random.split(key)
    z = jax.random.t(ka, 3.0, (num_blocks, b), jnp.float64)
    scale = 0.1 / jnp.sqrt(1.0 + t / 1000.0) * jnp.exp(0.5 * jax.random.normal(kb, (num_blocks, 1)))
    g = jnp.einsum("nij,nj->ni", L, z) * scale
    flip = jnp.where(t > steps // 2, -1.0, 1.0)  # the dominant direction changes halfway
    return g * jnp.concatenate([jnp.full((num_blocks, 1), flip), jnp.ones((num_blocks, b - 1))], -1)

  return gradient, k2


def run(steps, num_blocks=32, b=9, lam=0.01, seed=0):
  with jax.enable_x64(True):
    gradient, key = stream_fn(jax.random.PRNGKey(seed), num_blocks, b, steps)

    def body(carry, t):
      H32, P32, G64, key, min_den = carry
      key, sub = jax.random.split(key)
      g = gradient(t, sub)
      H32, den, _ = linalg.guarded_sherman_morrison(H32, g.astype(jnp.float32))
      P32, _, _ = linalg.guarded_sherman_morrison(P32, g.astype(jnp.float32), packed=True)
      G64 = G64 + g[:, :, None] * g[:, None, :]
      return (H32, P32, G64, key, jnp.minimum(min_den, jnp.min(den))), None

    eye = jnp.eye(b)
    H0 = jnp.broadcast_to(eye / lam, (num_blocks, b, b)).astype(jnp.float32)
    init = (H0, linalg.pack_symmetric(H0), jnp.broadcast_to(eye * lam, (num_blocks, b, b)), key,
            jnp.asarray(jnp.inf, jnp.float32))
    start = time.perf_counter()
    (H32, P32, G64, _, min_den), _ = jax.jit(
        lambda c: jax.lax.scan(body, c, jnp.arange(steps)))(init)
    packed_equal = bool(np.array_equal(np.asarray(linalg.unpack_symmetric(P32)), np.asarray(H32)))
    H32 = np.asarray(H32, np.float64)
    seconds = time.perf_counter() - start
  G64 = np.asarray(G64)
  H64 = np.linalg.inv(G64)
  rel_err = np.linalg.norm(H32 - H64, axis=(1, 2)) / np.linalg.norm(H64, axis=(1, 2))
  cond = np.linalg.cond(G64)
  return {
      "steps": steps, "blocks": num_blocks, "block_size": b, "lambda": lam,
      "max_rel_error": float(rel_err.max()), "median_rel_error": float(np.median(rel_err)),
      "max_cond_G": float(cond.max()),
      "max_rel_error_over_cond_eps": float((rel_err / (cond * np.finfo(np.float32).eps)).max()),
      "min_eig_H32": float(np.linalg.eigvalsh(H32).min()),
      "exactly_symmetric": bool(np.array_equal(H32, np.swapaxes(H32, 1, 2))),
      "min_denominator": float(min_den), "packed_equals_dense": packed_equal,
      "seconds": seconds,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=100_000)
  parser.add_argument("--block_size", type=int, default=9)
  args = parser.parse_args()
  print(json.dumps(run(args.steps, b=args.block_size)))


if __name__ == "__main__":
  main()
