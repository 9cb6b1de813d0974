"""MBAG in a plain JAX training loop: an MLP on scikit-learn's digits (ships offline), against Adam.

  python -m examples.quickstart [--steps 300]

Prints the test accuracy and final training loss of each optimizer and MBAG's diagnostics.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import mbag


def init_mlp(key, sizes):
  params = {}
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, sub = jax.random.split(key)
    params[f"dense{i}"] = {"kernel": jax.random.normal(sub, (m, n)) / np.sqrt(m), "bias": jnp.zeros(n)}
  return params


def apply_mlp(params, x):
  n = len(params)
  for i in range(n):
    x = x @ params[f"dense{i}"]["kernel"] + params[f"dense{i}"]["bias"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def loss_fn(params, x, y):
  logits = apply_mlp(params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train(tx, data, steps, batch, seed=0):
  x_tr, y_tr, x_te, y_te = data
  params = init_mlp(jax.random.PRNGKey(seed), [64, 64, 10])
  state = tx.init(params)

  @jax.jit
  def step(params, state, key):
    idx = jax.random.choice(key, x_tr.shape[0], (batch,), replace=False)
    loss, g = jax.value_and_grad(loss_fn)(params, x_tr[idx], y_tr[idx])
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state, loss

  key = jax.random.PRNGKey(seed + 1)
  for _ in range(steps):
    key, sub = jax.random.split(key)
    params, state, loss = step(params, state, sub)
  acc = float(jnp.mean(jnp.argmax(apply_mlp(params, x_te), -1) == y_te))
  return float(loss_fn(params, x_tr, y_tr)), acc, state


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch", type=int, default=64)
  args = parser.parse_args()
  digits = load_digits()
  x = jnp.asarray(digits.data / 16.0, jnp.float32)
  y = jnp.asarray(digits.target, jnp.int32)
  data = (x[:1500], y[:1500], x[1500:], y[1500:])
  optimizers = {
      "adam": optax.adam(3e-3),
      "mbag (paper defaults)": mbag.mbag(3e-3, block_size=16),
      "mbag (root warm-up, NS tol 1e-3)": mbag.mbag(3e-3, block_size=16, root_warmup_steps=50,
                                                    newton_schulz_tolerance=1e-3),
      "mbag_ema": mbag.mbag_ema(1e-3, block_size=16),
      "mbag_n": mbag.mbag_n(0.2, block_size=16),
  }
  print(f"{'optimizer':<34}{'train loss':>12}{'test acc':>10}")
  for name, tx in optimizers.items():
    loss, acc, state = train(tx, data, args.steps, args.batch)
    print(f"{name:<34}{loss:>12.4f}{acc:>10.3f}")
    if name.startswith("mbag ("):
      d = mbag.find_mbag_state(state).diagnostics
      print(f"{'':<4}root_error={float(d.root_error):.3g} root_residual={float(d.root_residual):.2e} "
            f"root_steps={int(d.root_steps)} min_denominator={float(d.min_denominator):.3g}")


if __name__ == "__main__":
  main()
