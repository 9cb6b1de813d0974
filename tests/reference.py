"""Plain float64 NumPy versions of MBAG's algorithms, written from the paper, for reference tests.

Parameters are a flat vector split into explicit index groups; everything is
dense and unoptimised on purpose.
"""

import numpy as np


def sqrtm_psd(A, power):
  w, v = np.linalg.eigh(0.5 * (A + A.T))
  return (v * np.maximum(w, 0) ** power) @ v.T if power > 0 else (v * w ** power) @ v.T


def newton_schulz_np(A, steps, want):
  """Paper's eq. (5) with Frobenius normalisation; want 'sqrt' (X) or 'inv_sqrt' (Y)."""
  nrm = np.linalg.norm(A)
  X, Y = A / nrm, np.eye(len(A))
  for _ in range(steps):
    T = 0.5 * (3 * np.eye(len(A)) - Y @ X)
    X, Y = X @ T, T @ Y
  return X * np.sqrt(nrm) if want == "sqrt" else Y / np.sqrt(nrm)


def run_mbag(grads, groups, *, lam, momentum, lr, root_interval, algorithm="inverse",
             decay=0.99, root="eigh", ns_steps=5, graft=None, graft_units=None,
             graft_decay=0.999, graft_eps=1e-8, weight_decay=0.0, params=None):
  """Returns the list of updates (-lr * v_t) for a sequence of flat gradients.

  algorithm: "inverse" (Algorithm 1), "ema" (Algorithm 2) or "direct" (MBAG-N).
  groups: list of index arrays partitioning the parameter vector.
  graft: None, "adam", "rmsprop" or "adagrad": the direction p is rescaled, on each index array
    of ``graft_units`` (leaves or blocks), to the norm of d = g / (sqrt(v_hat) + eps) with
    v = decay v + (1 - decay) g^2 (v_hat = v / (1 - decay^t) for adam) or v = v + g^2 (adagrad);
    then the momentum is Adam's first moment (an average of p, debiased), not the heavy ball.
  weight_decay: decoupled, -lr * weight_decay * params added to each update (params fixed).
  """
  stats, roots = [], []
  for idx in groups:
    b = len(idx)
    stats.append(np.eye(b) / lam if algorithm in ("inverse", "direct") else np.eye(b) * lam)
    roots.append(np.eye(b) / np.sqrt(lam))
  v = np.zeros_like(grads[0], dtype=np.float64)
  second = np.zeros_like(v)
  updates = []
  for t, g in enumerate(grads, start=1):
    p = np.zeros_like(v)
    for k, idx in enumerate(groups):
      gk = np.asarray(g[idx], np.float64)
      if algorithm == "ema":
        stats[k] = decay * stats[k] + (1 - decay) * np.outer(gk, gk)
      else:
        G = np.linalg.inv(stats[k]) + np.outer(gk, gk)  # the definition, not the formula
        stats[k] = np.linalg.inv(G)
      if algorithm == "direct":
        p[idx] = stats[k] @ gk
        continue
      if t % root_interval == 0:
        want = "sqrt" if algorithm == "inverse" else "inv_sqrt"
        if root == "eigh":
          roots[k] = sqrtm_psd(stats[k], 0.5 if want == "sqrt" else -0.5)
        else:
          roots[k] = newton_schulz_np(stats[k], ns_steps, want)
      p[idx] = roots[k] @ gk
    if graft is not None:
      g64 = np.asarray(g, np.float64)
      second = second + g64**2 if graft == "adagrad" else (
          graft_decay * second + (1 - graft_decay) * g64**2)
      v_hat = second / (1 - graft_decay**t) if graft == "adam" else second
      d = g64 / (np.sqrt(v_hat) + graft_eps)
      for idx in graft_units:
        norm_p = np.linalg.norm(p[idx])
        p[idx] = p[idx] * np.linalg.norm(d[idx]) / norm_p if norm_p > 0 else 0.0
    if graft is None:
      v = momentum * v + p  # heavy ball (the paper)
    else:  # grafted: Adam's first moment, m_t = b m_{t-1} + (1 - b) p, debiased by 1 - b^t
      m = (momentum * (v * (1 - momentum ** (t - 1))) + (1 - momentum) * p)
      v = m / (1 - momentum ** t) if momentum > 0 else m
    decay_term = 0.0 if params is None else weight_decay * np.asarray(params, np.float64)
    updates.append(-lr * (v + decay_term))
  return updates


def run_diagonal_adagrad(grads, *, lam, momentum, lr):
  """Diagonal AdaGrad (accumulator lam + sum g^2, no epsilon) with heavy-ball momentum."""
  acc = np.full_like(grads[0], lam, dtype=np.float64)
  v = np.zeros_like(acc)
  out = []
  for g in grads:
    acc = acc + np.asarray(g, np.float64) ** 2
    v = momentum * v + g / np.sqrt(acc)
    out.append(-lr * v)
  return out


def run_full_adagrad(grads, *, lam, momentum, lr):
  """Dense full-matrix AdaGrad: G_t = lam I + sum g g^T, p = G_t^{-1/2} g."""
  d = len(grads[0])
  G = lam * np.eye(d)
  v = np.zeros(d)
  out = []
  for g in grads:
    g = np.asarray(g, np.float64)
    G = G + np.outer(g, g)
    v = momentum * v + sqrtm_psd(G, -0.5) @ g
    out.append(-lr * v)
  return out


def axis_groups(shape, block_axes, block_size, offset=0):
  """Index groups of a leaf from its block axes, written from the definition (no BlockSpec).

  For every index of the other (batch) axes, the entries along ``block_axes`` (flattened in the
  given order, first slowest) form a row, cut into consecutive groups of ``block_size``. Indices
  are positions in the leaf's row-major flattening, plus ``offset``.
  """
  idx = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) + offset
  batch = [a for a in range(len(shape)) if a not in block_axes]
  moved = np.transpose(idx, batch + list(block_axes))
  rows = moved.reshape(-1, int(np.prod([shape[a] for a in block_axes], dtype=np.int64)))
  return [row[i:i + block_size] for row in rows for i in range(0, len(row), block_size)]
