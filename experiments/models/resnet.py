"""ResNet for CIFAR-10 (He et al. 2016, Section 4.2) with option-A shortcuts.

Depth ``6 n + 2``: a 3x3 conv with 16 filters, three stages of ``n`` basic blocks
with 16, 32 and 64 filters (the first block of stages 2 and 3 halves the spatial
size with stride 2), global average pooling and a dense layer. Option A: where a
block changes the shape, the shortcut subsamples by 2 and pads the new channels
with zeros, so shortcuts carry no parameters. ResNet-56 (``n = 9``) has 853,018
parameters with a 10-way head.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

STAGE_WIDTHS = (16, 32, 64)
# PyTorch's kaiming_normal_ (fan_in, gain sqrt(2), untruncated), as in the reference
# CIFAR ResNet implementations (e.g. akamaster/pytorch_resnet_cifar10).
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def blocks_per_stage(depth: int) -> int:
  """``n`` for a CIFAR ResNet of ``depth = 6 n + 2`` layers; ValueError otherwise."""
  if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
    raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
                     f"got {depth!r}")
  return (depth - 2) // 6


def option_a_shortcut(x: jnp.ndarray, features: int, stride: int) -> jnp.ndarray:
  """Identity, or stride-``stride`` subsampling plus zero channels up to ``features`` (option A)."""
  if stride > 1:
    x = x[:, ::stride, ::stride, :]
  extra = features - x.shape[-1]
  if extra < 0:
    raise ValueError(f"option-A shortcut cannot reduce channels ({x.shape[-1]} -> {features})")
  if extra:
    # Split the new channels on both sides, as the reference implementation does.
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
  return x


class BasicBlock(nn.Module):
  """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the option-A shortcut, then ReLU."""

  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, self.features, (3, 3), padding=1, use_bias=False,
                             kernel_init=he_normal)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5)
    y = conv(strides=self.stride)(x)
    y = nn.relu(norm()(y))
    y = conv(strides=1)(y)
    y = norm()(y)
    return nn.relu(y + option_a_shortcut(x, self.features, self.stride))


class CifarResNet(nn.Module):
  """The CIFAR ResNet of He et al. (2016): ``depth = 6 n + 2`` (ResNet-56: ``depth=56``).

  Attributes:
    depth: total number of weighted layers, ``6 n + 2``.
    num_classes: outputs of the dense head.
  """

  depth: int = 56
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits ``[B, num_classes]`` of images ``x`` ``[B, H, W, 3]`` (float, normalised)."""
    n = blocks_per_stage(self.depth)
    x = nn.Conv(STAGE_WIDTHS[0], (3, 3), padding=1, use_bias=False, kernel_init=he_normal)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
    for stage, features in enumerate(STAGE_WIDTHS):
      for block in range(n):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(features, stride, name=f"stage{stage + 1}_block{block + 1}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=he_normal)(x)
