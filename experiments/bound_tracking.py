"""Theorem 1 as one of the training loop's periodic actions (``config.track_bound``).

After every step, :class:`TrackBound` adds the step to ``theory``'s tracker (the theorem's sums
need every step): gamma_t with the step size the schedule applied at that step, and G from the
norm of the gradient that MBAG's statistics accumulated, i.e. with weight decay when the run
has it (``objective_grad_norm``). At every record it reports the tracker's terms
(``bound/...``, ``ns/...``), an estimate of L, and whether the run is in the theorem's setting.

L is the smoothness constant of the objective the run minimises (the loss plus
``weight_decay/2 |theta|^2``): at every record, :data:`HESSIAN_POWER_ITERATIONS` power
iterations on Hessian-vector products of that objective on the last training batch; the
running maximum (``bound/L_estimate``) is an estimate from below.

:func:`theorem_setting` says whether the run is in the theorem's setting: Algorithm 1 with
momentum 0, the root recomputed at every step and exact (``root_method="eigh"`` or Newton-Schulz
to a ``newton_schulz_tolerance``), and a constant step size. The loop writes it into
``config.json`` (``theorem_1``), the log and every record (``bound/theorem_setting``, 1 or 0): a
run outside it (the paper's practical settings) has its terms measured, but the theorem does
not cover it and its records are no check of it. The theorem's left side (full-batch gradient
norms) is not measured during training; ``python -m theory.verify`` checks both sides.

Cost: one ``eigvalsh`` of every block of H and of the roots per step (about two exact root
computations), and the power iterations at every record.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import optax

import mbag

# Power iterations per record for the estimate of L (each a Hessian-vector product, about two
# gradients): the estimate is from below whatever the count; its running maximum over the
# records improves it.
HESSIAN_POWER_ITERATIONS = 10


def _load_theory():
  try:
    import theory  # pylint: disable=import-outside-toplevel
    from theory import problems  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError(f"config.track_bound=True needs the theory package (theory/ at the root of "
                       f"this repository), which could not be imported: {e}") from e
  return theory, problems


def check_config(config) -> None:
  """Raises a clear error when ``config.track_bound`` cannot be honoured."""
  if not config.track_bound:
    return
  if config.optimizer != "mbag":
    raise ValueError(f"config.track_bound=True tracks Theorem 1, which is about Algorithm 1: "
                     f"use --config.optimizer=mbag (got {config.optimizer!r})")
  _load_theory()


def theorem_setting(config) -> dict[str, Any]:
  """``{"covered": bool, "differences": [...]}``: whether Theorem 1 covers this MBAG run.

  The theorem is about Algorithm 1 with a fixed step size and the exact current root
  ``H_t^{1/2}``; its bound has no momentum term. Each difference is named with its value.
  """
  defaults = {k: p.default for k, p in inspect.signature(mbag.mbag).parameters.items()}
  hyper = dict(defaults, **config.optimizer_config.mbag.to_dict())
  differences = []
  if hyper["momentum"] != 0:
    differences.append(f"momentum {hyper['momentum']} (the theorem: 0)")
  if hyper["root_interval"] != 1:
    differences.append(f"root recomputed every {hyper['root_interval']} steps "
                       f"(the theorem: every step)")
  if hyper["root_method"] != "eigh" and hyper["newton_schulz_tolerance"] is None:
    differences.append(f"{hyper['newton_schulz_steps']} Newton-Schulz steps, not converged in "
                       f"general (the theorem: the exact root; set newton_schulz_tolerance or "
                       f"root_method='eigh')")
  # a decay at epoch e applies from step e * steps_per_epoch on: within the run when e < num_epochs
  decays = [e for e in config.lr_decay_epochs if e < config.num_epochs and config.lr_decay_factor != 1]
  if decays:
    differences.append(f"step size x{config.lr_decay_factor:g} at epochs {list(decays)} "
                       f"(the theorem: constant)")
  return {"covered": not differences, "differences": differences}


@functools.partial(jax.jit, static_argnames=("schedule",))
def _update(tracker, opt_state, grad_norm, loss, step, *, schedule):
  theory, _ = _load_theory()
  # step optimizer steps are done: the last one applied schedule(step - 1), as optax counts.
  return theory.update_tracker(tracker, opt_state, grad_norm, loss=loss, eta=schedule(step - 1))


@functools.partial(jax.jit, static_argnames=("loss_fn", "weight_decay"))
def _add_hessian_norm(tracker, params, model_state, rng, batch, key, *, loss_fn, weight_decay):
  _, problems = _load_theory()

  def objective(p):
    loss = loss_fn(p, model_state, rng, batch)[0]
    return loss + 0.5 * weight_decay * optax.tree.norm(p, squared=True)

  estimate = problems.hessian_norm_estimate(objective, params, key, HESSIAN_POWER_ITERATIONS)
  return tracker.replace(max_hessian_norm=jax.numpy.maximum(tracker.max_hessian_norm, estimate))


class TrackBound:
  """Theorem 1's terms: updated after every step, reported with every record.

  Args:
    config: the resolved run config (``optimizer_config.mbag``, ``weight_decay``, ``seed``).
    schedule: the run's learning-rate schedule (``step -> eta``).
    loss_fn: the optimizers' ``loss_fn(params, model_state, rng, batch)``.
  """

  def __init__(self, config, schedule: optax.Schedule, loss_fn: Callable[..., Any]):
    check_config(config)
    self.setting = theorem_setting(config)
    self._lam = float(config.optimizer_config.mbag.initial_accumulator_value)
    self._weight_decay = float(config.weight_decay)
    self._schedule = schedule
    self._loss_fn = loss_fn
    self._key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x7B0)
    self._scalars = None
    self._last = None

  def init(self, opt_state):
    """The tracker at t = 0 (gamma_0 with the schedule's first step size)."""
    theory, _ = _load_theory()
    # params=None: the step reports the gradient's global norm, not the gradient, so the tracker
    # keeps the theorem's sums and the norms but not the elliptical-potential sums.
    return theory.init_tracker(None, opt_state, eta=float(self._schedule(0)), lam=self._lam)

  def __call__(self, step: int, state, stats, batch, rng):
    """Adds step ``step`` (its stats, and the state it returned); returns the new train state."""
    grad_norm = stats.get("objective_grad_norm", stats["grad_norm"])
    tracker, self._scalars = _update(state.tracker, state.opt_state, grad_norm, stats["loss"],
                                     step, schedule=self._schedule)
    self._last = (batch, rng)
    return state._replace(tracker=tracker)

  def report(self, step: int, state):
    """``(state, scalars)`` at a record: L estimated at ``state.params``, the terms so far."""
    batch, rng = self._last
    tracker = _add_hessian_norm(state.tracker, state.params, state.model_state, rng, batch,
                                jax.random.fold_in(self._key, step), loss_fn=self._loss_fn,
                                weight_decay=self._weight_decay)
    scalars = {k: float(v) for k, v in jax.device_get(self._scalars).items()}
    scalars["bound/L_estimate"] = float(tracker.max_hessian_norm)
    scalars["bound/eta_max"] = float(tracker.eta)
    scalars["bound/theorem_setting"] = float(self.setting["covered"])
    return state._replace(tracker=tracker), scalars
