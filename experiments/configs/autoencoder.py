r"""Deep autoencoders on FACES, CURVES and MNIST (the paper's Section VI.B and Figure 3).

Launch (the paper's setting; choose the data set and optimizer)::

  python -m experiments.autoencoder --config=experiments/configs/autoencoder.py:paper \
      --config.dataset=faces --config.optimizer=mbag --config.seed=0 \
      --workdir=runs/autoencoder/paper/faces/mbag/seed_0 --data_dir=~/data

Architectures (Hinton & Salakhutdinov 2006; ``experiments/models/autoencoder.py``),
picked by ``config.dataset`` unless ``config.model.encoder_widths`` is set:
MNIST 784-1000-500-250-30, CURVES 784-400-200-100-50-25-6, FACES
625-2000-1000-500-30, each with the mirrored decoder; logistic units except the
linear code layer; Martens' (2010) sparse initialisation. Loss: binary
cross-entropy summed over the pixels and averaged over the batch, as the paper
says for both data sets (Martens 2010 used squared error for FACES; set nothing
to get the paper's choice). The per-pixel mean is logged too (``bce_per_pixel``).

Presets:
- ``paper``: batch 512, lambda = 0.1, T_sqr = 50, beta = 0.9, T_NS = 7;
  T1 = 5, T2 = 50 for KFAC and Shampoo (Section VI.B); 100 epochs at a constant
  learning rate (the paper gives neither; chosen here).
- ``short``: 10 epochs, otherwise as ``paper``: minutes per optimizer on one GPU.
- ``smoke``: MNIST's first 512 / 256 images, a 784-32-8 autoencoder, 2 epochs of
  batch 64, T1 = 2, T2 = T_sqr = 4, fused blocks: seconds on a CPU.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

# NOT tuned on FACES / CURVES / MNIST. Rule: Adam at 1e-3, times each optimizer's best
# learning rate relative to Adam's in the digits autoencoder sweep
# (digits.AUTOENCODER_LEARNING_RATES, rounded to the 1-3-10 grid). Override with
# --config.learning_rate.
LEARNING_RATES = dict(adam=1e-3, adagrad=1e-2, kfac=3e-4, shampoo=1e-3, adablock=3e-3,
                      mbag=1e-3, mbag_n=1e-2, mbag_ema=3e-4)


def paper() -> ml_collections.ConfigDict:
  c = common.base_config(task="autoencoder", dataset="faces", preset="paper",
                         learning_rates=LEARNING_RATES)
  c.model.encoder_widths = ml_collections.FieldReference(None, field_type=tuple)
  c.model.kernel_init = "sparse"
  c.batch_size = 512
  c.eval_batch_size = 2000
  c.num_epochs = 100
  c.log_every_steps = 50
  c.checkpoint_every_steps = 2000
  c.optimizer_config = common.optimizer_config(lam=0.1, newton_schulz_steps=7, t1=5, t2=50)
  c.num_seeds = 5  # the paper averages 5 runs (Section VI)
  return c


def short() -> ml_collections.ConfigDict:
  c = paper()
  c.num_epochs = 10
  c.num_seeds = 3
  return c


def smoke() -> ml_collections.ConfigDict:
  c = paper()
  c.dataset = "mnist"
  c.model.encoder_widths = (32, 8)
  c.train_subset = 512
  c.test_subset = 256
  c.batch_size = 64
  c.eval_batch_size = 128
  c.num_epochs = 2
  c.log_every_steps = 4
  c.checkpoint_every_steps = 8
  c.optimizer_config = common.optimizer_config(lam=0.1, newton_schulz_steps=7, t1=2, t2=4,
                                               fuse_blocks=True)
  return c


PRESETS = {"paper": paper, "short": short, "smoke": smoke}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``preset`` (default ``paper``); see the module docstring."""
  return common.select_preset(PRESETS, preset, "paper")
