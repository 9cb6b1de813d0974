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
RESERVED_STATS = ("loss", "grad_norm")


class Optimizer(NamedTuple):
  """A training step and how to start it.

  Attributes:
    init: ``init(params, model_state, rng, batch) -> opt_state``.
    step: ``step(params, model_state, opt_state, rng, batch) -> (params, model_state,
      opt_state, stats)``: the whole jitted training step (gradient included). The
      buffers of ``params``, ``model_state`` and ``opt_state`` are donated: do not
      use the arrays passed in after the call. ``stats`` is a dict of scalars with
      "loss" (the value of ``loss_fn``), "grad_norm" (global L2 norm of its
      gradient, before weight decay) and the ``aux`` metrics of ``loss_fn``.
    name: the registry name of the optimizer.
  """

  init: Callable[[Params, ModelState, jax.Array, Batch], OptState]
  step: Callable[..., tuple[Params, ModelState, OptState, dict[str, jax.Array]]]
  name: str


def check_aux(aux: Mapping[str, Any]) -> None:
  """Raises ValueError if ``loss_fn``'s aux is not a dict or shadows a reserved stat."""
  if not isinstance(aux, Mapping):
    raise ValueError(f"loss_fn must return (loss, (model_state, aux)) with aux a dict, got {type(aux)}")
  clash = sorted(set(aux) & set(RESERVED_STATS))
  if clash:
    raise ValueError(f"loss_fn's aux metrics {clash} clash with the stats the optimizer reports "
                     f"{RESERVED_STATS}; rename them")


def optax_optimizer(tx: optax.GradientTransformation, loss_fn: LossFn, name: str) -> Optimizer:
  """Wraps an optax GradientTransformation into an :class:`Optimizer` with one jitted step.

  The step computes ``loss, grads = value_and_grad(loss_fn)``, the global
  gradient norm, ``tx.update(grads, opt_state, params)`` and the new params, all
  inside one ``jax.jit`` with params, model_state and opt_state donated.
  """

  def init(params, model_state, rng, batch):
    del model_state, rng, batch
    return tx.init(params)

  def step(params, model_state, opt_state, rng, batch):
    (loss, (model_state, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, model_state, rng, batch)
    check_aux(aux)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    stats = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
    return params, model_state, opt_state, stats

  return Optimizer(init=init, step=jax.jit(step, donate_argnums=(0, 1, 2)), name=name)


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
