"""KFAC (Martens & Grosse, 2015) from kfac-jax behind the :class:`Optimizer` interface."""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import kfac_jax
import optax
from jax import extend as jex

from experiments.optimizers import _checks
from experiments.optimizers import base

_DATA_LOSS = "__data_loss"
_GRADIENT_STATS = "__gradient_stats"
# The kfac-jax releases this module (its patch below, the internals it reads) was checked
# against: [first, end). pyproject.toml pins the same range.
KFAC_JAX_CHECKED = ((0, 0, 8), (0, 0, 9))


def _eval_jaxpr_eqn(eqn, in_values):
  """kfac-jax 0.0.8's ``tag_graph_matcher.eval_jaxpr_eqn`` for both old and new JAX.

  kfac-jax 0.0.8 unpacks ``(subfuns, params)`` from ``Primitive.get_bind_params``,
  which newer JAX (0.10) returns as a single params dict (sub-functions, if any,
  travel inside it): without this, automatic layer registration fails with
  "ValueError: too many values to unpack" on the first curvature update.
  """
  bind_params = eqn.primitive.get_bind_params(eqn.params)
  subfuns = ()
  if isinstance(bind_params, tuple):
    subfuns, bind_params = bind_params
  with jex.source_info_util.user_context(eqn.source_info.traceback):
    output = eqn.primitive.bind(*subfuns, *in_values, **bind_params)
  return output if isinstance(output, list) else [output]


def _version_tuple(version: str) -> tuple[int, ...]:
  """``"0.0.8"`` -> ``(0, 0, 8)``; the numeric release part only (``"0.0.9rc1"`` -> ``(0, 0, 9)``)."""
  return tuple(int(n) for n in re.match(r"\d+(?:\.\d+)*", version).group().split("."))


def check_kfac_jax_version(version: str | None = None) -> None:
  """Raises RuntimeError unless kfac-jax (``version``, default the installed one) is in the checked range."""
  version = kfac_jax.__version__ if version is None else version
  first, end = KFAC_JAX_CHECKED
  if not first <= _version_tuple(version) < end:
    show = lambda v: ".".join(map(str, v))  # noqa: E731
    raise RuntimeError(
        f"the KFAC baseline (experiments/optimizers/kfac.py) patches kfac-jax internals and was "
        f"checked against kfac-jax >= {show(first)}, < {show(end)}; kfac-jax {version} is "
        f"installed. Install a checked release (pip install 'kfac-jax>={show(first)},<{show(end)}'), "
        f"or check the patch (_eval_jaxpr_eqn) against {version} and widen KFAC_JAX_CHECKED.")


def _patch_kfac_jax() -> None:
  """Applies :func:`_eval_jaxpr_eqn` to kfac-jax (idempotent); called when KFAC is built."""
  from kfac_jax._src import tag_graph_matcher  # pylint: disable=import-outside-toplevel
  tag_graph_matcher.eval_jaxpr_eqn = _eval_jaxpr_eqn


def _constant(value: Any) -> Callable[[Any], Any]:
  return lambda step: jnp.asarray(value, jnp.float32)


def kfac(
    loss_fn: base.LossFn,
    learning_rate: optax.ScalarOrSchedule,
    *,
    damping: float = 1e-3,
    momentum: float = 0.9,
    curvature_update_period: int = 5,
    inverse_update_period: int = 50,
    curvature_ema: float = 0.95,
    l2_reg: float = 0.0,
    weight_decay: float = 0.0,
    use_automatic_registration: bool = True,
) -> base.Optimizer:
  r"""KFAC with a fixed learning rate schedule, momentum and damping (``kfac_jax.Optimizer``).

  .. math::
    \Delta_t = -\eta_t (\hat F_t + (\lambda + \gamma) I)^{-1} \nabla h(\theta_t) + \mu \Delta_{t-1},
    \quad \theta_{t+1} = \theta_t + \Delta_t,

  with the Kronecker-factored curvature ``F`` of the layers kfac-jax finds in
  ``loss_fn`` (dense, conv, and scale-and-shift for BatchNorm), its factors
  updated every ``curvature_update_period`` steps (T1; EMA ``curvature_ema``)
  and inverted every ``inverse_update_period`` steps (T2; power -1), both counted
  from step 0. Weight decay ``gamma = l2_reg or weight_decay`` is added to the
  objective as ``gamma/2 ||theta||^2`` (its gradient ``gamma theta``, as
  ``optax.add_decayed_weights``) and to the damping of the inverses, as kfac-jax asks.
  ``loss_fn`` must register its loss (``kfac_jax.register_*_loss``).

  The returned ``step`` feeds kfac-jax the step number as a Python int kept by
  this wrapper, so no step waits for the device; an ``opt_state`` it has not
  produced itself (a restored checkpoint) costs one device read of its counter.

  Args:
    loss_fn: ``(params, model_state, rng, batch) -> (loss, (model_state, aux))``.
    learning_rate: eta, a float or an optax schedule of the step.
    damping: lambda, constant.
    momentum: mu, constant.
    curvature_update_period: T1.
    inverse_update_period: T2 (>= T1, kfac-jax requires it).
    curvature_ema: decay of the curvature factors' moving average.
    l2_reg: kfac-jax's name for the weight decay coefficient.
    weight_decay: the run's weight decay; must agree with ``l2_reg`` if both are set.
    use_automatic_registration: let kfac-jax find the layers by graph matching
      (False: ``loss_fn`` registers them with ``kfac_jax.register_dense`` etc.).

  Returns:
    An :class:`~experiments.optimizers.base.Optimizer`.

  References:
    Martens & Grosse, "Optimizing Neural Networks with Kronecker-factored
    Approximate Curvature", ICML 2015; Grosse & Martens, "A Kronecker-factored
    approximate Fisher matrix for convolution layers", ICML 2016.
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_number("l2_reg", l2_reg, lambda v: v >= 0, ">= 0")
  _checks.check_number("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  if l2_reg and weight_decay and float(l2_reg) != float(weight_decay):
    raise ValueError(f"kfac l2_reg ({l2_reg}) and weight_decay ({weight_decay}) disagree; set one")
  return build(loss_fn, learning_rate, damping=damping, momentum=momentum,
               curvature_update_period=curvature_update_period,
               inverse_update_period=inverse_update_period, curvature_ema=curvature_ema,
               l2_reg=float(l2_reg or weight_decay),
               use_automatic_registration=use_automatic_registration, name="kfac")


# after_step(step, learning_rate, carry, params, opt_state) -> (params, opt_state), where
# ``carry`` is what ``before_step`` computed from the parameters before the step (donated to it).
AfterStep = Callable[[int, Any, Any, Any, Any], tuple[Any, Any]]


def build(loss_fn: base.LossFn, learning_rate: optax.ScalarOrSchedule, *, damping: float,
          momentum: float, curvature_update_period: int, inverse_update_period: int,
          curvature_ema: float, l2_reg: float, use_automatic_registration: bool = True,
          kfac_options: dict[str, Any] | None = None,
          before_step: Callable[[int, Any], Any] | None = None,
          after_step: AfterStep | None = None, name: str = "kfac") -> base.Optimizer:
  """A ``kfac_jax.Optimizer`` with constant damping and momentum behind :class:`base.Optimizer`.

  What :func:`kfac` and the reference-code variant (``kfac_paper``) share.

  Args:
    loss_fn, learning_rate, damping, momentum, curvature_update_period,
    inverse_update_period, curvature_ema, use_automatic_registration: see :func:`kfac`.
    l2_reg: ``gamma``, added to the objective as ``gamma/2 ||theta||^2`` and to the damping.
    kfac_options: further keyword arguments of ``kfac_jax.Optimizer`` (e.g. ``norm_constraint``).
    before_step: ``(step, params) -> carry`` called before each step (the params are
      donated to the step afterwards: compute what is needed from them here).
    after_step: ``(step, learning_rate_value, carry, params, opt_state) -> (params, opt_state)``
      applied to the step's result.
    name: the registry name.
  """
  check_kfac_jax_version()
  _patch_kfac_jax()
  _checks.check_number("damping", damping, lambda v: v > 0, "> 0")
  _checks.check_number("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  _checks.check_number("curvature_ema", curvature_ema, lambda v: 0 <= v < 1, "in [0, 1)")
  t1 = _checks.check_int("curvature_update_period", curvature_update_period, 1)
  t2 = _checks.check_int("inverse_update_period", inverse_update_period, 1)
  if t1 > t2:
    raise ValueError(f"curvature_update_period ({t1}) must be <= inverse_update_period ({t2})")
  decay = float(l2_reg)
  schedule = learning_rate if callable(learning_rate) else _constant(learning_rate)

  def objective(params, model_state, rng, batch):
    loss, (model_state, aux) = loss_fn(params, model_state, rng, batch)
    base.check_aux(aux)
    aux = dict(aux, **{_DATA_LOSS: loss})
    if decay:
      loss = loss + 0.5 * decay * optax.tree.norm(params, squared=True)
    return loss, (model_state, aux)

  grad_objective = jax.value_and_grad(objective, has_aux=True)

  def value_and_grad(params, model_state, rng, batch):
    (loss, (model_state, aux)), grads = grad_objective(params, model_state, rng, batch)
    data_grads = grads if not decay else jax.tree_util.tree_map(
        lambda g, p: g - decay * p, grads, params)
    aux = dict(aux, **{_GRADIENT_STATS: base.gradient_stats(data_grads, params, decay)})
    return (loss, (model_state, aux)), grads

  def value_for_estimator(params, model_state, rng, batch):
    return objective(params, model_state, rng, batch)

  schedules = {"damping": _constant(damping), "momentum": _constant(momentum)}
  options = dict(
      value_and_grad_func=value_and_grad,
      l2_reg=decay,
      value_func_has_aux=True,
      value_func_has_state=True,
      value_func_has_rng=True,
      value_func_for_estimator=value_for_estimator,
      use_adaptive_learning_rate=False,
      learning_rate_schedule=schedule,
      use_adaptive_momentum=False,
      momentum_schedule=schedules["momentum"],
      use_adaptive_damping=False,
      damping_schedule=schedules["damping"],
      curvature_ema=curvature_ema,
      curvature_update_period=t1,
      inverse_update_period=t2,
      num_burnin_steps=0,
      use_automatic_registration=use_automatic_registration,
      multi_device=False,
  )
  options.update(kfac_options or {})
  optimizer = kfac_jax.Optimizer(**options)
  # The step counter that ``opt_state`` holds, known without reading the device:
  # (the counter array of the last state this wrapper returned, its value).
  known = {"counter": None, "value": 0, "initialized": False}

  def init(params, model_state, rng, batch):
    state = optimizer.init(params, rng, batch, model_state)
    known.update(counter=state.step_counter, value=0, initialized=True)
    return state

  def step(params, model_state, opt_state, rng, batch):
    if not known["initialized"]:  # a restored state: kfac-jax finds the layers in init only
      init(params, model_state, rng, batch)
    if opt_state.step_counter is known["counter"]:
      step_int = known["value"]
    else:
      step_int = int(opt_state.step_counter)
    carry = None if before_step is None else before_step(step_int, params)
    params, opt_state, model_state, kstats = optimizer.step(
        params, opt_state, rng, batch=batch, func_state=model_state, global_step_int=step_int)
    if after_step is not None:
      params, opt_state = after_step(step_int, schedule(step_int), carry, params, opt_state)
    known["counter"], known["value"] = opt_state.step_counter, step_int + 1
    aux = dict(kstats["aux"])
    stats = {"loss": aux.pop(_DATA_LOSS), **aux.pop(_GRADIENT_STATS), **aux}
    return params, model_state, opt_state, stats

  def metrics(opt_state):
    """Damping and momentum of the step that made ``opt_state``, and that step's length."""
    last = jnp.maximum(opt_state.step_counter - 1, 0)
    return {"damping": schedules["damping"](last), "momentum": schedules["momentum"](last),
            "update_norm": optax.tree.norm(opt_state.velocities)}

  return base.Optimizer(init=init, step=step, name=name, metrics=metrics)
