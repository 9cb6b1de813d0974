"""Deep autoencoders of Hinton & Salakhutdinov (2006), as trained by Martens (2010) and the paper.

The encoder maps ``D -> w_1 -> ... -> w_k`` (logistic units, the code layer ``w_k``
linear), the decoder mirrors it ``w_k -> w_{k-1} -> ... -> w_1 -> D`` (logistic
units) and returns logits of the ``D`` pixels, which the loss turns into
Bernoulli means (binary cross-entropy on logits).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Encoder widths (hidden layers, then the code) of the papers' architectures, by data set.
ARCHITECTURES: dict[str, tuple[int, ...]] = {
    "mnist": (1000, 500, 250, 30),      # 784-1000-500-250-30
    "curves": (400, 200, 100, 50, 25, 6),  # 784-400-200-100-50-25-6
    "faces": (2000, 1000, 500, 30),     # 625-2000-1000-500-30
    "digits": (32, 16, 8),              # 64-32-16-8: a small one for smoke runs and the demo
}


def sparse_init(num_nonzero: int = 15) -> Callable:
  """Martens' (2010) sparse initialisation of a dense kernel ``[fan_in, fan_out]``.

  Each unit (column) gets ``min(num_nonzero, fan_in)`` incoming weights drawn
  from N(0, 1) at random rows; all its other incoming weights are 0.
  """

  def init(key, shape, dtype=jnp.float32):
    if len(shape) != 2:
      raise ValueError(f"sparse_init expects a dense kernel [fan_in, fan_out], got shape {shape}")
    k_rows, k_vals = jax.random.split(key)
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(k_rows, shape), axis=0), axis=0)
    mask = ranks < min(num_nonzero, shape[0])
    return jnp.where(mask, jax.random.normal(k_vals, shape, dtype), 0).astype(dtype)

  return init


KERNEL_INITS: dict[str, Callable] = {
    "sparse": sparse_init(15),
    "glorot": nn.initializers.glorot_uniform(),
}


class DeepAutoencoder(nn.Module):
  """``D -> encoder_widths -> mirror -> D``; logistic units except the linear code layer.

  Attributes:
    encoder_widths: widths of the encoder's layers, the last one being the code.
    output_dim: D, the number of pixels (logits returned).
    kernel_init: a key of :data:`KERNEL_INITS` ("sparse": Martens 2010; biases are 0).
  """

  encoder_widths: Sequence[int]
  output_dim: int
  kernel_init: str = "sparse"

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits ``[B, output_dim]`` of the reconstruction of ``x`` ``[B, D]``."""
    del train
    if self.kernel_init not in KERNEL_INITS:
      raise ValueError(f"kernel_init={self.kernel_init!r} is not one of {sorted(KERNEL_INITS)}")
    widths = tuple(self.encoder_widths)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
      raise ValueError(f"encoder_widths must be positive integers, got {self.encoder_widths!r}")
    dense = lambda n, name: nn.Dense(n, kernel_init=KERNEL_INITS[self.kernel_init], name=name)  # noqa: E731
    for i, w in enumerate(widths[:-1]):
      x = nn.sigmoid(dense(w, f"encoder_{i}")(x))
    x = dense(widths[-1], "code")(x)  # linear code layer
    for i, w in enumerate(reversed(widths[:-1])):
      x = nn.sigmoid(dense(w, f"decoder_{i}")(x))
    return dense(self.output_dim, "output")(x)
