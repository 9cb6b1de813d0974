r"""ResNet on CIFAR-10 (the paper's Section VI.A, Table I and Figure 2).

Launch (the paper's setting, one optimizer and seed per run)::

  python -m experiments.cifar --config=experiments/configs/cifar.py:paper \
      --config.optimizer=mbag --config.seed=0 \
      --workdir=runs/cifar/paper/mbag/seed_0 --data_dir=~/data

Presets:
- ``paper``: ResNet-56, batch 128, 200 epochs, learning rate x0.1 at epochs 100
  and 150; tau = 32, lambda = 0.01, beta = 0.9, T_sqr = 50, T_NS = 5; T1 = 5,
  T2 = 50 for KFAC and Shampoo (Section VI.A).
- ``short``: ResNet-20, 5 epochs (x0.1 at epoch 3), otherwise as ``paper``:
  minutes per optimizer on one GPU.
- ``smoke``: ResNet-8 on the first 256 / 128 images, 2 epochs of batch 32, with
  T1 = 2 and T2 = T_sqr = 4 so every periodic update runs, and fused blocks
  (``fuse_blocks=True``: compiles about 2x faster): seconds on a CPU.

Not in the paper, chosen here: weight decay 1e-4 (He et al. 2016's CIFAR
setting, added to the gradient), the learning rates (see
``experiments/configs/common.py`` and the README: not tuned on CIFAR-10).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

# Base learning rate of each optimizer (before the step decay); NOT tuned on CIFAR-10.
# Rule: Adam's usual 1e-3 for ResNets on CIFAR-10, times each optimizer's best learning
# rate relative to Adam's in the digits classification sweep (digits.LEARNING_RATES,
# rounded to the 1-3-10 grid). Override with --config.learning_rate.
LEARNING_RATES = dict(adam=1e-3, adagrad=1e-1, kfac=1e-4, shampoo=1e-3, adablock=1e-3,
                      mbag=1e-3, mbag_n=1e-4, mbag_ema=1e-4)


def paper() -> ml_collections.ConfigDict:
  c = common.base_config(task="cifar", dataset="cifar10", preset="paper",
                         learning_rates=LEARNING_RATES)
  c.model.depth = 56
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_epochs = 200
  c.lr_decay_epochs = (100, 150)
  c.lr_decay_factor = 0.1
  c.weight_decay = 1e-4
  c.log_every_steps = 50
  c.checkpoint_every_steps = 2000
  c.optimizer_config = common.optimizer_config(lam=0.01, newton_schulz_steps=5, t1=5, t2=50)
  c.num_seeds = 5  # the paper averages 5 runs (Section VI)
  return c


def short() -> ml_collections.ConfigDict:
  c = paper()
  c.model.depth = 20
  c.num_epochs = 5
  c.lr_decay_epochs = (3,)
  c.checkpoint_every_steps = 1000
  c.num_seeds = 3
  return c


def smoke() -> ml_collections.ConfigDict:
  c = paper()
  c.model.depth = 8
  c.train_subset = 256
  c.test_subset = 128
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_epochs = 2
  c.lr_decay_epochs = (1,)
  c.log_every_steps = 4
  c.checkpoint_every_steps = 8
  c.optimizer_config = common.optimizer_config(lam=0.01, newton_schulz_steps=5, t1=2, t2=4,
                                               fuse_blocks=True)
  return c


PRESETS = {"paper": paper, "short": short, "smoke": smoke}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``preset`` (default ``paper``); see the module docstring."""
  return common.select_preset(PRESETS, preset, "paper")
