"""Learning-rate schedules as data: ``config.lr_schedule`` names one of :data:`LR_SCHEDULES`.

- ``"step"`` (the default): ``learning_rate``, multiplied by ``lr_decay_factor`` at each epoch
  of ``lr_decay_epochs`` (piecewise constant);
- ``"warmup_cosine"``: linear warm-up from 0 over ``warmup_steps`` steps, then cosine decay to
  ``learning_rate * lr_final_fraction`` at the last step (``optax.warmup_cosine_decay_schedule``).

A field the chosen schedule does not read must keep its neutral value (:func:`check_config`),
so that no setting is silently ignored. A schedule maps the number of steps done before an
update (0 for the first) to that update's rate.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import optax

from experiments import errors


def _step_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """``lr * factor^k`` after the k-th epoch of ``config.lr_decay_epochs`` (boundaries in steps)."""
  del total_steps
  boundaries = {}
  for epoch in config.lr_decay_epochs:
    step = int(epoch) * steps_per_epoch
    boundaries[step] = boundaries.get(step, 1.0) * float(config.lr_decay_factor)
  return optax.piecewise_constant_schedule(float(config.learning_rate), boundaries)


def _warmup_cosine_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  r"""Linear warm-up, then cosine decay (``optax.warmup_cosine_decay_schedule``).

  With ``eta = config.learning_rate``, ``W = config.warmup_steps``, ``T = total_steps`` and
  ``f = config.lr_final_fraction``, the rate of the update counted ``k`` (0 for the first
  step, ``T - 1`` for the last) is ``eta * k / W`` for ``k < W`` (from 0), then
  :math:`\eta f + \eta (1 - f) (1 + \cos(\pi (k - W) / (T - 1 - W))) / 2`, which is
  ``eta`` at ``k = W`` and ``eta * f`` at the last step.

  Raises:
    ValueError: ``W >= T - 1`` (no step left to decay over).
  """
  del steps_per_epoch
  warmup = int(config.warmup_steps)
  if warmup >= total_steps - 1:
    raise errors.ConfigError(
        f"config.warmup_steps={warmup} leaves no step to decay over: the run has {total_steps} "
        f"steps (num_epochs x steps per epoch); warmup_steps must be < {total_steps - 1}")
  lr = float(config.learning_rate)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=total_steps - 1,
      end_value=lr * float(config.lr_final_fraction))


# config.lr_schedule -> (config, steps_per_epoch, total_steps) -> optax schedule (step -> rate).
LR_SCHEDULES: dict[str, Callable[[Any, int, int], optax.Schedule]] = {
    "step": _step_schedule,
    "warmup_cosine": _warmup_cosine_schedule,
}
# The fields each schedule reads besides learning_rate; the others must keep the neutral value
# of configs/common.py:base_config, so that no setting is silently ignored.
_SCHEDULE_FIELDS = {"step": ("lr_decay_epochs", "lr_decay_factor"),
                    "warmup_cosine": ("warmup_steps", "lr_final_fraction")}
_NEUTRAL_SCHEDULE_VALUES = {"lr_decay_epochs": (), "warmup_steps": 0, "lr_final_fraction": 0.0}


def check_config(config) -> None:
  """Raises ValueError naming the field when the schedule fields are invalid or unused."""
  if config.lr_schedule not in LR_SCHEDULES:
    raise ValueError(f"config.lr_schedule={config.lr_schedule!r} is not a known schedule; "
                     f"known: {sorted(LR_SCHEDULES)}")
  decay = tuple(config.lr_decay_epochs)
  if any(not isinstance(e, int) or e < 1 for e in decay) or list(decay) != sorted(decay):
    raise ValueError(f"config.lr_decay_epochs must be increasing integers >= 1, got {decay!r}")
  if (not isinstance(config.lr_decay_factor, (int, float)) or not config.lr_decay_factor > 0
      or not math.isfinite(config.lr_decay_factor)):
    raise ValueError(f"config.lr_decay_factor must be a finite number > 0, got "
                     f"{config.lr_decay_factor!r}")
  fraction = config.lr_final_fraction
  if (not isinstance(fraction, (int, float)) or isinstance(fraction, bool)
      or not 0 <= fraction <= 1):
    raise ValueError(f"config.lr_final_fraction must be a number in [0, 1], got {fraction!r}")
  used = _SCHEDULE_FIELDS[config.lr_schedule]
  for field, neutral in _NEUTRAL_SCHEDULE_VALUES.items():
    value = tuple(config[field]) if field == "lr_decay_epochs" else config[field]
    if field not in used and value != neutral:
      users = [name for name, fields in _SCHEDULE_FIELDS.items() if field in fields]
      raise ValueError(f"config.{field}={value!r} is not used by config.lr_schedule="
                       f"{config.lr_schedule!r} (only by {users}); leave it at {neutral!r}")


def learning_rate_schedule(config, steps_per_epoch: int,
                           total_steps: int | None = None) -> optax.Schedule:
  """The schedule ``LR_SCHEDULES[config.lr_schedule]`` of a run of ``total_steps`` steps
  (default ``config.num_epochs * steps_per_epoch``); ``schedule(k)`` is the rate of the
  ``k + 1``-th step."""
  if total_steps is None:
    total_steps = int(config.num_epochs) * steps_per_epoch
  return LR_SCHEDULES[config.get("lr_schedule", "step")](config, steps_per_epoch, total_steps)
