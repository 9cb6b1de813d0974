r"""KFAC as in the reference code the paper ran (alecwangcq/KFAC-Pytorch), on kfac-jax.

The paper's Table I footnote names github.com/alecwangcq/KFAC-Pytorch
(``optimizers/kfac.py``, ``main.py``). What this variant takes from that code, and how:

* **KL clipping** (``kl_clip``, ``main.py`` default 1e-2): the preconditioned gradient
  ``v`` is scaled by ``nu = min(1, sqrt(kl_clip / (lr^2 <v, g>)))``; kfac-jax's
  ``norm_constraint`` is the same formula. (Difference: kfac-jax sums ``<v, g>`` over all
  parameters, the reference over its Linear / Conv2d layers only.)
* **BatchNorm not preconditioned**: the reference only knows Linear and Conv2d layers;
  BatchNorm scales and shifts get the plain SGD-momentum step. Here kfac-jax's
  ``scale_and_shift`` and ``generic`` tags get a ``ScaledIdentity`` block, i.e. the
  gradient divided by ``1 + damping`` (1.001 at the default damping), and they take part
  in the clipping above.
* **Damping in the eigenbasis**: the reference inverts ``A (x) G + damping I`` exactly in
  the factors' eigenbasis (``v / (d_g d_a^T + damping)``), not with the factored
  (pi-adjusted) Tikhonov damping; kfac-jax's ``use_exact_inverses=True`` does the same.
* **True Fisher**: the reference samples labels from the model's predictive distribution
  for its statistics; here ``estimation_mode="fisher_gradients"``.
* **Weight decay after preconditioning**: the reference adds ``weight_decay * theta`` to the
  clipped natural gradient, inside the momentum buffer, and only from step
  ``20 * TCov`` on: ``buf = mu buf + nu v + wd theta``, ``theta -= lr buf``. Here it is
  added to kfac-jax's update and velocity after its step (no ``l2_reg`` in the objective).
* Statistics: moving averages with decay ``stat_decay`` (0.95) updated every ``TCov``
  steps, inverses every ``TInv`` steps, both counted from step 0, as kfac-jax.

Not reproduced: the reference starts both factors at the identity (``0.95 I + 0.05 A``
after the first update) where kfac-jax's average starts at the first estimate; its
momentum buffer is in gradient units (a change of the learning rate applies to the whole
buffer), kfac-jax's velocity keeps the old rate's steps; its eigenvalues below 1e-10 are
set to 0.
"""

from __future__ import annotations

import dataclasses

import jax
import kfac_jax
import optax

from experiments.optimizers import _checks
from experiments.optimizers import base
from experiments.optimizers import kfac as kfac_lib

# The reference waits this many curvature periods before applying weight decay.
WEIGHT_DECAY_START_PERIODS = 20


def kfac_paper(
    loss_fn: base.LossFn,
    learning_rate: optax.ScalarOrSchedule,
    *,
    damping: float = 1e-3,
    momentum: float = 0.9,
    kl_clip: float = 1e-2,
    curvature_update_period: int = 10,
    inverse_update_period: int = 100,
    curvature_ema: float = 0.95,
    weight_decay: float = 0.0,
) -> base.Optimizer:
  r"""KFAC with the reference code's KL clipping, damping, BatchNorm and weight-decay rules.

  .. math::
    v_t = (A \otimes G + \lambda I)^{-1} g_t,\quad
    \nu_t = \min\Big(1, \sqrt{\kappa / (\eta_t^2 \langle v_t, g_t \rangle)}\Big),\\
    b_t = \mu b_{t-1} + \nu_t v_t + \omega_t \theta_{t-1},\quad \theta_t = \theta_{t-1} - \eta_t b_t,

  with ``omega_t = weight_decay`` from step ``20 * curvature_update_period`` on, 0 before.
  See the module docstring for where each rule comes from.

  Args:
    loss_fn: ``(params, model_state, rng, batch) -> (loss, (model_state, aux))``, its loss
      registered with kfac-jax.
    learning_rate: eta, a float or an optax schedule of the step.
    damping: lambda (reference default 1e-3).
    momentum: mu (reference 0.9).
    kl_clip: kappa (reference ``main.py`` 1e-2; the class default is 1e-3).
    curvature_update_period: TCov (reference 10; the paper's T1 = 5).
    inverse_update_period: TInv (reference 100; the paper's T2 = 50).
    curvature_ema: stat_decay (reference 0.95).
    weight_decay: omega, applied after preconditioning (reference ``main.py`` 3e-3).

  Returns:
    An :class:`~experiments.optimizers.base.Optimizer` named ``kfac_paper``.

  Example:
    >>> # with a task's loss (see experiments.tasks.make_loss_fn):
    >>> # opt = kfac_paper(loss_fn, 1e-3, kl_clip=1e-2); state = opt.init(params, {}, rng, batch)

  References:
    Martens & Grosse, ICML 2015; Grosse & Martens, ICML 2016;
    github.com/alecwangcq/KFAC-Pytorch (``optimizers/kfac.py``).
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_number("kl_clip", kl_clip, lambda v: v > 0, "> 0")
  _checks.check_number("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  t1 = _checks.check_int("curvature_update_period", curvature_update_period, 1)
  start = WEIGHT_DECAY_START_PERIODS * t1
  identity = kfac_jax.curvature_blocks.ScaledIdentity
  options = dict(norm_constraint=float(kl_clip), use_exact_inverses=True,
                 estimation_mode="fisher_gradients",
                 layer_tag_to_block_ctor={"scale_and_shift": identity, "generic": identity})
  decay = float(weight_decay)

  def before_step(step, params):
    # The step donates params: keep omega * theta_{t-1} before it.
    return jax.tree.map(lambda p: decay * p, params) if decay and step >= start else None

  @jax.jit
  def _apply(lr, decayed, params, velocities):
    sub = lambda a, d: a - lr * d  # noqa: E731
    return jax.tree.map(sub, params, decayed), jax.tree.map(sub, velocities, decayed)

  def after_step(step, lr, decayed, params, opt_state):
    del step
    if decayed is None:
      return params, opt_state
    params, velocities = _apply(lr, decayed, params, opt_state.velocities)
    return params, dataclasses.replace(opt_state, velocities=velocities)

  return kfac_lib.build(loss_fn, learning_rate, damping=damping, momentum=momentum,
                        curvature_update_period=t1,
                        inverse_update_period=inverse_update_period,
                        curvature_ema=curvature_ema, l2_reg=0.0, kfac_options=options,
                        before_step=before_step if decay else None,
                        after_step=after_step if decay else None, name="kfac_paper")
