"""The MNIST-1D reference CNN (Greydanus & Kobak; ``ConvBase`` of github.com/greydanus/mnist1d).

Three convolutions with ReLU over the 40 samples of a signal -- 25 channels each,
kernels 5, 3, 3, stride 2, one sample of zero padding per side (40 -> 19 -> 10 -> 5) --
and a linear head on the 125 flattened features: 5,210 parameters with 10 classes,
as the reference.

The convolutions are written as 2-D convolutions of a ``1 x L`` image with ``1 x k``
kernels (flax kernels ``(1, k, c_in, c_out)``), which compute exactly the 1-D
convolution. This keeps the kernel layout every optimizer here understands: kfac-jax
registers them as conv2d layers, MBAG and AdaBlock group each ``(c_in, c_out)`` pair's
``k`` taps, Shampoo sees a conv kernel. Weights and biases start as PyTorch's default
(uniform in +-1/sqrt(fan_in)), as the reference.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's default Conv / Linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int):
  """PyTorch's default bias init for a layer with ``fan_in`` inputs: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class SignalCNN(nn.Module):
  """``[B, L]`` signals -> logits ``[B, num_classes]``; see the module docstring.

  Attributes:
    num_classes: outputs of the head.
    channels: channels of every convolution (reference: 25).
    kernel_sizes: kernel length of each convolution (reference: 5, 3, 3).
    stride: stride of every convolution (reference: 2).
    padding: zeros added on each side of the signal before each convolution (reference: 1).
  """

  num_classes: int
  channels: int = 25
  kernel_sizes: Sequence[int] = (5, 3, 3)
  stride: int = 2
  padding: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if x.ndim != 2:
      raise ValueError(f"SignalCNN expects signals [B, L], got shape {x.shape}")
    h = x[:, None, :, None]  # [B, 1, L, 1]: a one-row image with one channel
    for i, k in enumerate(self.kernel_sizes):
      fan_in = h.shape[-1] * k
      conv = functools.partial(nn.Conv, self.channels, (1, k), strides=(1, self.stride),
                               padding=((0, 0), (self.padding, self.padding)),
                               kernel_init=torch_default_kernel,
                               bias_init=torch_default_bias(fan_in))
      h = nn.relu(conv(name=f"conv{i + 1}")(h))
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(self.num_classes, kernel_init=torch_default_kernel,
                    bias_init=torch_default_bias(h.shape[-1]), name="head")(h)
