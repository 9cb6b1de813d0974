"""Construction-time checks of optimizer hyperparameters (raise ValueError naming the argument)."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import jax
import numpy as np


def _concrete(value: Any) -> bool:
  return isinstance(value, (numbers.Number, np.ndarray, np.generic)) or (
      isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer))


def check_number(name: str, value: Any, ok: Callable[[float], bool], expected: str) -> None:
  """Raises ValueError if a concrete scalar ``value`` is not finite or fails ``ok``.

  Traced values (under ``optax.inject_hyperparams``) are not checked.
  """
  if not _concrete(value):
    if value is None or isinstance(value, (str, bytes, bool)):
      raise ValueError(f"{name} must be {expected}, got {value!r}")
    return
  v = np.asarray(value)
  if v.ndim != 0 or not np.isfinite(v) or not ok(float(v)):
    raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_int(name: str, value: Any, minimum: int) -> int:
  """Returns ``value`` as an int; raises ValueError if it is not an integer >= ``minimum``."""
  ok = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)
  ok = ok or (isinstance(value, float) and value.is_integer())
  if not ok or int(value) < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_learning_rate(learning_rate: Any) -> None:
  if not callable(learning_rate):
    check_number("learning_rate", learning_rate, lambda v: v >= 0, "a number >= 0 or a schedule")
