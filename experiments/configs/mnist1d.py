r"""The MNIST-1D reference CNN (a real benchmark with a published accuracy; offline, CPU minutes).

Data: MNIST-1D (Greydanus & Kobak; ``experiments/data/mnist1d.py``), 4000 train / 1000
test signals of length 40, rebuilt by the ``mnist1d`` package exactly as published.
Model: the authors' ``ConvBase`` (``experiments/models/signal_cnn.py``, 5,210 parameters).
Published: 94 % test accuracy with Adam (lr 1e-2, batch 100; README of
github.com/greydanus/mnist1d and arXiv:2011.14439), 92.3 % after 6000 steps in the
authors' notebook. Launch::

  python -m experiments.cifar --config=experiments/configs/mnist1d.py:reference \
      --config.optimizer=adam --config.seed=0 --workdir=runs/mnist1d/reference/adam/seed_0

(any entry point runs any config: one training loop).

Presets:
- ``reference``: the authors' protocol -- batch 100, constant learning rate, 6000 steps
  (150 epochs of 40 steps); lambda = 0.01, T_sqr = 50, T_NS = 5, T1 = 5, T2 = 50, tau = 32
  (the paper's classification settings).
- ``ablation``: as ``reference`` with 60 epochs (2400 steps), the budget of
  ``python -m experiments.ablation``.
- ``study``: the study's main protocol (``python -m experiments.ablation``, docs/benchmarks.md
  "Protocol"): ``ablation``'s 2400 steps with a linear warm-up over the first 120 (5 %) and a
  cosine decay to 0 at the last step, the test loss evaluated every epoch (40 steps) for the
  time to a target loss.
- ``smoke``: 2 epochs on 400 / 200 signals, T1 = 2, T2 = T_sqr = 4: seconds.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

# Adam: the authors' 1e-2. The others: best of python -m experiments.ablation's tuning grid
# on the validation split (README "What matters in MBAG"); until then the digits sweep's.
LEARNING_RATES = dict(adam=1e-2, adagrad=3e-1, kfac=3e-4, shampoo=3e-3, adablock=3e-3,
                      mbag=3e-3, mbag_n=3e-4, mbag_ema=3e-4)


def reference() -> ml_collections.ConfigDict:
  c = common.base_config(task="signal_cnn", dataset="mnist1d", preset="reference",
                         learning_rates=LEARNING_RATES)
  c.model.channels = 25
  c.model.kernel_sizes = (5, 3, 3)
  c.model.stride = 2
  c.model.padding = 1
  c.batch_size = 100
  c.eval_batch_size = 1000
  c.num_epochs = 150
  c.eval_every_epochs = 5
  c.log_every_steps = 40
  c.checkpoint_every_steps = 2000
  c.optimizer_config = common.optimizer_config(lam=0.01, newton_schulz_steps=5, t1=5, t2=50)
  return c


def ablation() -> ml_collections.ConfigDict:
  c = reference()
  c.num_epochs = 60
  return c


def study() -> ml_collections.ConfigDict:
  c = ablation()
  common.warmup_cosine(c, steps=60 * 40)
  c.eval_every_epochs = 1
  return c


def smoke() -> ml_collections.ConfigDict:
  c = reference()
  c.train_subset = 400
  c.test_subset = 200
  c.num_epochs = 2
  c.eval_every_epochs = 1
  c.log_every_steps = 2
  c.checkpoint_every_steps = 4
  c.optimizer_config = common.optimizer_config(lam=0.01, newton_schulz_steps=5, t1=2, t2=4,
                                               fuse_blocks=True)
  return c


PRESETS = {"reference": reference, "ablation": ablation, "study": study, "smoke": smoke}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``preset`` (default ``reference``); see the module docstring."""
  return common.select_preset(PRESETS, preset, "reference")
