r"""MBAG optimizers: preconditioner + momentum (+ decoupled weight decay) + learning rate.

.. math::
  v_t = \beta v_{t-1} + p_t,\qquad \theta_t = \theta_{t-1} - \eta_t (v_t + w \theta_{t-1}),

with ``p_t`` the preconditioned gradient of :func:`mbag.scale_by_mbag` (and its siblings) and
``w`` the decoupled weight decay (0 by default: the paper's Algorithm 1, lines 11-12). With
``graft`` set, ``v_t`` is Adam's first moment instead, ``(beta m_{t-1} + (1 - beta) p_t) /
(1 - beta^t)``: grafting gives the step the diagonal method's length, and so does an average.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import optax

from mbag._src import options as options_lib
from mbag._src import transform

# The keyword arguments every alias adds to its preconditioner's.
_ALIAS_DOC = """
  Args:
    learning_rate: eta, a float or an optax schedule.
    momentum: beta in [0, 1), applied after the preconditioner: heavy ball (``v_t = beta
      v_(t-1) + p_t``, the paper's); with ``graft`` set, Adam's first moment (``m_t = beta
      m_(t-1) + (1 - beta) p_t``, debiased by ``1 - beta^t``), so that the step is as long as the
      grafted method's and its learning rate carries over.
    weight_decay: decoupled weight decay ``w`` (AdamW's): ``-eta_t w theta`` is added to the
      update, outside the momentum and the preconditioner (``update`` then needs the params).
      None (default) adds nothing.
    weight_decay_mask: which leaves decay (as ``optax.add_decayed_weights``' mask: a pytree of
      bools or a callable of the params); None: all.
    Every other argument is the preconditioner's (:func:`{pre}`), including the engineering
    options of :class:`mbag.MBAGOptions` as keywords.
"""


def _decoupled_weight_decay(weight_decay: Any, mask: Any) -> optax.GradientTransformation:
  """``optax.add_decayed_weights`` whose update refuses to run without the parameters."""
  base = optax.add_decayed_weights(weight_decay, mask)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("weight_decay needs the parameters: call update(grads, state, params)")
    return base.update(updates, state, params)

  return optax.GradientTransformation(base.init, update_fn)


def _grafted(preconditioner: dict[str, Any]) -> bool:
  return preconditioner.get("graft") is not None


def _with_momentum(preconditioner, learning_rate, momentum, weight_decay,
                   weight_decay_mask, grafted=False) -> optax.GradientTransformation:
  options_lib.check("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  if callable(weight_decay):
    raise ValueError("weight_decay must be a number >= 0 (a schedule is not supported)")
  options_lib.check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  options_lib.check_learning_rate(learning_rate)
  # v_t = momentum * v_{t-1} + p_t; update = -lr_t * (v_t + wd * theta) (Algorithm 1, lines
  # 11-12, and AdamW's decoupled decay). None (the default, also under optax.inject_hyperparams,
  # which leaves None static) adds no transformation: the paper's chain, whose update may be
  # called without params.
  decay = ([] if weight_decay is None
           else [_decoupled_weight_decay(weight_decay, weight_decay_mask)])
  # Grafted, the momentum is Adam's first moment (an average of the grafted directions,
  # debiased), so that a step is as long as the grafted method's; the paper's heavy ball sums
  # them, 1 / (1 - momentum) = 10x longer at 0.9, and Adam's learning rate would not transfer.
  average = optax.ema(decay=momentum, debias=True)
  accumulate = average if grafted else optax.trace(decay=momentum, nesterov=False)
  return optax.chain(preconditioner, accumulate, *decay, optax.scale_by_learning_rate(learning_rate))


def _alias(preconditioner: Callable[..., optax.GradientTransformation]):
  """An optimizer ``(learning_rate, *, momentum, weight_decay, weight_decay_mask, **pre)`` around
  the preconditioner constructor ``preconditioner`` (whose keywords it shares)."""
  def decorate(fn):
    pre_params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                  for p in inspect.signature(preconditioner).parameters.values()]
    own = [p for p in inspect.signature(fn).parameters.values() if p.kind != p.VAR_KEYWORD]
    own_names = {p.name for p in own}

    signature = inspect.Signature(own + [p for p in pre_params if p.name not in own_names],
                                  return_annotation=optax.GradientTransformation)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      try:
        signature.bind(*args, **kwargs)
      except TypeError as e:  # an unknown or missing argument, named with the function
        raise TypeError(f"mbag.{fn.__name__}(): {e}") from None
      return fn(*args, **kwargs)

    wrapper.__signature__ = signature
    doc = fn.__doc__ or ""
    args = _ALIAS_DOC.format(pre=f"mbag.{preconditioner.__name__}")
    cut = min((doc.find(h) for h in ("\n  Example:", "\n  References:") if h in doc),
              default=len(doc))
    wrapper.__doc__ = doc[:cut] + "\n" + args.rstrip("\n") + "\n" + doc[cut:]
    return wrapper

  return decorate


@_alias(transform.scale_by_mbag)
def mbag(learning_rate: optax.ScalarOrSchedule, *, momentum: float = 0.9,
         weight_decay: Any = None, weight_decay_mask: Any = None,
         **preconditioner: Any) -> optax.GradientTransformation:
  r"""MBAG (Algorithm 1): mini-block full-matrix AdaGrad with heavy-ball momentum.

  .. math::
    v_t = \beta v_{t-1} + H_t^{1/2} g_t,\qquad \theta_t = \theta_{t-1} - \eta_t v_t,

  with ``H_t`` and its (periodically refreshed) root as in :func:`mbag.scale_by_mbag`
  (``block_size`` tau, ``initial_accumulator_value`` lambda, ``root_interval`` T_sqr,
  ``newton_schulz_steps`` T_NS, ``root_warmup_steps``, ``dimension_numbers``, ``graft``).

  Example:
    >>> import jax, jax.numpy as jnp, optax, mbag
    >>> params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    >>> tx = mbag.mbag(1e-3, block_size=4)
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)

  References:
    Lee, "MBAG: A Scalable Mini-Block Adaptive Gradient Method for Deep Neural Networks".
  """
  return _with_momentum(transform.scale_by_mbag(**preconditioner), learning_rate, momentum,
                        weight_decay, weight_decay_mask, _grafted(preconditioner))


@_alias(transform.scale_by_mbag_ema)
def mbag_ema(learning_rate: optax.ScalarOrSchedule, *, momentum: float = 0.9,
             weight_decay: Any = None, weight_decay_mask: Any = None,
             **preconditioner: Any) -> optax.GradientTransformation:
  r"""MBAG-EMA (Algorithm 2): ``v_t = beta v_{t-1} + G_t^{-1/2} g_t`` with an EMA statistic.

  See :func:`mbag.scale_by_mbag_ema` for the statistic (``decay`` alpha).

  References:
    Lee, "MBAG", Algorithm 2.
  """
  return _with_momentum(transform.scale_by_mbag_ema(**preconditioner), learning_rate, momentum,
                        weight_decay, weight_decay_mask, _grafted(preconditioner))


@_alias(transform.scale_by_mbag_n)
def mbag_n(learning_rate: optax.ScalarOrSchedule, *, momentum: float = 0.9,
           weight_decay: Any = None, weight_decay_mask: Any = None,
           **preconditioner: Any) -> optax.GradientTransformation:
  r"""MBAG-N: ``v_t = beta v_{t-1} + H_t g_t`` (preconditioning by ``G_t^{-1}``, no root).

  References:
    Lee, "MBAG", Sections IV.B and VI.
  """
  return _with_momentum(transform.scale_by_mbag_n(**preconditioner), learning_rate, momentum,
                        weight_decay, weight_decay_mask, _grafted(preconditioner))
