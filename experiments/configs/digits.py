r"""An MLP on scikit-learn's 8x8 digits (ships offline): the demo and quick comparisons.

Not a task of the paper: a classification stand-in that runs anywhere in seconds.
Launch::

  python -m experiments.cifar --config=experiments/configs/digits.py:demo \
      --config.optimizer=mbag --workdir=runs/digits/mbag/seed_0

(any entry point runs any config: they share one training loop). The digits
autoencoder is ``experiments/configs/autoencoder.py`` with ``--config.dataset=digits``
(architecture 64-32-16-8-16-32-64), or the ``demo_autoencoder`` preset below.

Presets:
- ``demo``: MLP 64-64-64-10, batch 32, 20 epochs, x0.1 at epoch 15 (``python -m examples.demo``).
- ``demo_autoencoder``: the digits autoencoder, batch 64, 20 epochs, lambda = 0.1, T_NS = 7.
- ``study``: the study's main protocol on the digits autoencoder (``python -m
  experiments.ablation``, docs/benchmarks.md "Protocol"): ``demo_autoencoder``'s 460 steps
  (20 epochs of 23) with a linear warm-up over the first 23 (5 %) and a cosine decay to 0 at
  the last step, the test loss evaluated every epoch for the time to a target loss.
- ``smoke``: 3 epochs, T1 = 2, T2 = T_sqr = 4, fused blocks.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

# Best of a sweep (python -m experiments.sweep, README "Experiments" section): seed 0, the
# learning rates 1e-4, 3e-4, ..., 0.3, 1; the score is the final test loss of the ``demo``
# preset for the classifier and the final training loss of ``demo_autoencoder``. The
# sweep's output: results/sweep/{classification,autoencoder}.json.
LEARNING_RATES = dict(adam=3e-3, adagrad=3e-1, kfac=3e-4, shampoo=3e-3, adablock=3e-3,
                      mbag=3e-3, mbag_n=3e-4, mbag_ema=3e-4)
AUTOENCODER_LEARNING_RATES = dict(adam=1e-2, adagrad=1e-1, kfac=3e-3, shampoo=1e-2,
                                  adablock=3e-2, mbag=1e-2, mbag_n=1e-1, mbag_ema=3e-3)


def demo() -> ml_collections.ConfigDict:
  c = common.base_config(task="digits_mlp", dataset="digits", preset="demo",
                         learning_rates=LEARNING_RATES)
  c.model.hidden_sizes = (64, 64)
  c.batch_size = 32
  c.eval_batch_size = 512
  c.num_epochs = 20
  c.lr_decay_epochs = (15,)
  c.log_every_steps = 20
  c.checkpoint_every_steps = 500
  c.optimizer_config = common.optimizer_config(lam=0.01, newton_schulz_steps=5, t1=5, t2=50)
  return c


def demo_autoencoder() -> ml_collections.ConfigDict:
  c = common.base_config(task="autoencoder", dataset="digits", preset="demo_autoencoder",
                         learning_rates=AUTOENCODER_LEARNING_RATES)
  c.model.encoder_widths = ml_collections.FieldReference(None, field_type=tuple)
  c.model.kernel_init = "sparse"
  c.batch_size = 64
  c.eval_batch_size = 512
  c.num_epochs = 20
  c.log_every_steps = 10
  c.checkpoint_every_steps = 500
  c.optimizer_config = common.optimizer_config(lam=0.1, newton_schulz_steps=7, t1=5, t2=50)
  return c


def study() -> ml_collections.ConfigDict:
  c = demo_autoencoder()
  common.warmup_cosine(c, steps=20 * 23)  # 1500 training images / batch 64: 23 steps an epoch
  c.eval_every_epochs = 1
  return c


def smoke() -> ml_collections.ConfigDict:
  c = demo()
  c.num_epochs = 3
  c.lr_decay_epochs = (2,)
  c.log_every_steps = 10
  c.optimizer_config = common.optimizer_config(lam=0.01, newton_schulz_steps=5, t1=2, t2=4,
                                               fuse_blocks=True)
  return c


PRESETS = {"demo": demo, "demo_autoencoder": demo_autoencoder, "study": study, "smoke": smoke}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``preset`` (default ``demo``); see the module docstring."""
  return common.select_preset(PRESETS, preset, "demo")
