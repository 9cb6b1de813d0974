"""A small multilayer perceptron classifier (for scikit-learn's 8x8 digits)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn


class MLP(nn.Module):
  """``x -> [Dense -> ReLU] * len(hidden_sizes) -> Dense(num_classes)`` (logits).

  Attributes:
    hidden_sizes: widths of the hidden layers.
    num_classes: outputs of the head.
  """

  hidden_sizes: Sequence[int]
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits ``[B, num_classes]`` of flat inputs ``x`` ``[B, D]``."""
    del train
    for i, width in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.num_classes, name="head")(x)
