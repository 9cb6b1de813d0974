"""The optimizer interface of the training loop and the one wrapper every optax optimizer shares."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple

import jax
import optax

Params = Any
ModelState = Any
OptState = Any
Batch = Any
# loss_fn(params, model_state, rng, batch) -> (loss, (new_model_state, aux)); aux: dict of scalars.
LossFn = Callable[[Params, ModelState, jax.Array, Batch], tuple[jax.Array, tuple[ModelState, dict]]]
# Stats every step reports besides loss_fn's aux; "objective_grad_norm" only with weight decay.
RESERVED_STATS = ("loss", "grad_norm", "objective_grad_norm")
# opt_state -> {name: [] array}: the optimizer's own scalars (pure, jit-able; names without prefix).
MetricsFn = Callable[[OptState], dict[str, jax.Array]]


def no_metrics(opt_state: OptState) -> dict[str, jax.Array]:
  """The metrics of an optimizer that reports none (Adam, AdaGrad, ...)."""
  del opt_state
  return {}


class Optimizer(NamedTuple):
  """A training step, how to start it, and what the optimizer reports about itself.

  Attributes:
    init: ``init(params, model_state, rng, batch) -> opt_state``.
    step: ``step(params, model_state, opt_state, rng, batch) -> (params, model_state,
      opt_state, stats)``: the whole jitted training step (gradient included). The
      buffers of ``params``, ``model_state`` and ``opt_state`` are donated: do not
      use the arrays passed in after the call. ``stats`` is a dict of scalars with
      "loss" (the value of ``loss_fn``), "grad_norm" (global L2 norm of its
      gradient, before weight decay), with weight decay "objective_grad_norm" (the norm
      of the gradient plus ``weight_decay * params``: what the preconditioner receives),
      and the ``aux`` metrics of ``loss_fn``.
    name: the registry name of the optimizer.
    metrics: ``metrics(opt_state) -> {name: scalar}``, the optimizer's own health and
      hyperparameter scalars read from its state (MBAG: its ``diagnostics``; KFAC: damping,
      momentum, update norm; Adam: none). Pure and jit-able; the training loop logs them
      as ``opt/<name>``.
  """

  init: Callable[[Params, ModelState, jax.Array, Batch], OptState]
  step: Callable[..., tuple[Params, ModelState, OptState, dict[str, jax.Array]]]
  name: str
  metrics: MetricsFn = no_metrics


def check_aux(aux: Mapping[str, Any]) -> None:
  """Raises ValueError if ``loss_fn``'s aux is not a dict or shadows a reserved stat."""
  if not isinstance(aux, Mapping):
    raise ValueError(f"loss_fn must return (loss, (model_state, aux)) with aux a dict, got {type(aux)}")
  clash = sorted(set(aux) & set(RESERVED_STATS))
  if clash:
    raise ValueError(f"loss_fn's aux metrics {clash} clash with the stats the optimizer reports "
                     f"{RESERVED_STATS}; rename them")


def gradient_stats(grads: Params, params: Params, weight_decay: float) -> dict[str, jax.Array]:
  """The stats every step reports about its gradient (the one place to add another).

  Args:
    grads: the gradient of the loss (without weight decay).
    params: the parameters it was taken at.
    weight_decay: the run's weight decay.

  Returns:
    ``grad_norm`` (of ``grads``) and, with weight decay, ``objective_grad_norm`` (of
    ``grads + weight_decay * params``, the gradient the preconditioner receives).
  """
  stats = {"grad_norm": optax.tree.norm(grads)}
  if weight_decay:
    stats["objective_grad_norm"] = optax.tree.norm(
        jax.tree.map(lambda g, p: g + weight_decay * p, grads, params))
  return stats


def with_weight_decay(tx: optax.GradientTransformation,
                      weight_decay: float) -> optax.GradientTransformation:
  """``tx`` after ``optax.add_decayed_weights(weight_decay)`` (``tx`` itself when it is 0)."""
  return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx


def optax_optimizer(tx: optax.GradientTransformation, loss_fn: LossFn, name: str, *,
                    weight_decay: float = 0.0, metrics: MetricsFn = no_metrics) -> Optimizer:
  """Wraps an optax GradientTransformation into an :class:`Optimizer` with one jitted step.

  The step computes ``loss, grads = value_and_grad(loss_fn)``, the global
  gradient norm, ``with_weight_decay(tx, weight_decay).update(grads, opt_state, params)``
  and the new params, all inside one ``jax.jit`` with params, model_state and opt_state
  donated. With ``weight_decay`` the stats also hold ``objective_grad_norm``.

  Args:
    tx: the optimizer (without weight decay).
    loss_fn: ``(params, model_state, rng, batch) -> (loss, (model_state, aux))``.
    name: the registry name.
    weight_decay: added to the gradient before ``tx`` (``optax.add_decayed_weights``).
    metrics: ``tx``'s own scalars from the optimizer state (see :class:`Optimizer`).
  """
  tx = with_weight_decay(tx, weight_decay)

  def init(params, model_state, rng, batch):
    del model_state, rng, batch
    return tx.init(params)

  def step(params, model_state, opt_state, rng, batch):
    (loss, (model_state, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, model_state, rng, batch)
    check_aux(aux)
    stats = {"loss": loss, **gradient_stats(grads, params, weight_decay), **aux}
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, model_state, opt_state, stats

  return Optimizer(init=init, step=jax.jit(step, donate_argnums=(0, 1, 2)), name=name,
                   metrics=metrics)



def hyperparameters(config: Any, name: str) -> dict[str, Any]:
  """``config.optimizer_config.<name>`` as a plain dict ({} when absent)."""
  section = _get(config, "optimizer_config")
  sub = _get(section, name) if section is not None else None
  if sub is None:
    return {}
  if hasattr(sub, "to_dict"):
    return dict(sub.to_dict())
  if isinstance(sub, Mapping):
    return dict(sub)
  raise ValueError(f"config.optimizer_config.{name} must be a ConfigDict or a dict, got {type(sub)}")


def call_with_hyperparameters(fn: Callable[..., Any], hparams: Mapping[str, Any], section: str, /,
                              **fixed: Any) -> Any:
  """``fn(**fixed, **hparams)``; unknown hyperparameter names raise ValueError listing the valid ones."""
  params = inspect.signature(fn).parameters
  accepted = sorted(k for k, p in params.items()
                    if k not in fixed and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
  unknown = sorted(set(hparams) - set(accepted))
  if unknown:
    raise ValueError(f"config.optimizer_config.{section}: unknown hyperparameter(s) {unknown}; "
                     f"{section} accepts {accepted}")
  return fn(**fixed, **hparams)


def _get(obj: Any, key: str) -> Any:
  if obj is None:
    return None
  if isinstance(obj, Mapping) or hasattr(obj, "get"):
    return obj.get(key, None)
  return getattr(obj, key, None)
