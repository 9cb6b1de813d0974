"""Fields every run has, per-optimizer hyperparameters and learning rates, preset selection.

Learning rates: ``config.learning_rate`` (None by default) is resolved by the
training loop to ``config.learning_rates[config.optimizer]`` unless set on the
command line. How the defaults were chosen is documented with each table below.
"""

from __future__ import annotations

from typing import Callable, Mapping

import ml_collections

# The optimizers of the paper (its Table I and the EMA variant), which the demo compares.
PAPER_OPTIMIZER_NAMES = ("adam", "adagrad", "kfac", "shampoo", "adablock", "mbag", "mbag_n",
                         "mbag_ema")
# Every optimizer a config gives a learning rate: the paper's and AdamW (decoupled weight decay,
# the usual baseline of language models).
OPTIMIZER_NAMES = PAPER_OPTIMIZER_NAMES + ("adamw",)
# The baselines as the paper's reference codes ran them (experiments/optimizers/*_paper.py),
# each with the modern optimizer whose learning rate it takes unless a table gives its own.
PAPER_VARIANTS = {"shampoo_paper": "shampoo", "kfac_paper": "kfac", "adablock_paper": "adablock"}
ALL_OPTIMIZER_NAMES = OPTIMIZER_NAMES + tuple(PAPER_VARIANTS)
# Optimizers whose learning rate is another's unless a config's table gives their own: the
# paper variants their modern counterpart's, AdamW Adam's (no tuning evidence here says
# otherwise; the Shakespeare benchmark's table gives its own).
LEARNING_RATE_OF = {**PAPER_VARIANTS, "adamw": "adam"}


def optimizer_config(*, lam: float, newton_schulz_steps: int, t1: int = 5, t2: int = 50,
                     block_size: int = 32, fuse_blocks: bool | None = None,
                     adamw_weight_decay: float = 1e-4) -> ml_collections.ConfigDict:
  """Hyperparameters per optimizer (keyword arguments of its constructor), the paper's where it says.

  Args:
    lam: MBAG's lambda (initial accumulator value), also used by MBAG-N and MBAG-EMA.
    newton_schulz_steps: T_NS.
    t1: statistics / curvature update interval of Shampoo and KFAC.
    t2: root / inverse interval of Shampoo and KFAC, and T_sqr of MBAG.
    block_size: tau for MBAG and AdaBlock.
    fuse_blocks: when set, passed to MBAG, MBAG-N, MBAG-EMA and AdaBlock (True: equal-size
      blocks of all layers in one array; fewer, larger operations, which compile faster;
      None: the library default, one array per layer).
    adamw_weight_decay: AdamW's decoupled weight decay (``optax.adamw``'s ``weight_decay``,
      whose default 1e-4 it is): ``theta <- theta - lr * wd * theta`` besides Adam's step, on
      the leaves of the named ``mask`` (``"matrices"``: rank >= 2 and not named ``bias`` or
      ``scale``, nanoGPT's rule; see ``experiments/optimizers/registry.py:WEIGHT_DECAY_MASKS``).
      ``config.weight_decay`` (L2 added to the gradient) applies to AdamW as to the others.

  MBAG's storage is the paper's (dense float32 blocks); ``--config.optimizer_config.mbag.storage=
  symmetric`` keeps only the upper triangles and ``...mbag.root_dtype=bfloat16`` the root in
  bfloat16 (see the library's docs/performance.md).
  """
  storage = dict(storage="dense")
  mbag = dict(block_size=block_size, initial_accumulator_value=lam, momentum=0.9,
              root_interval=t2, newton_schulz_steps=newton_schulz_steps, root_dtype="float32",
              **storage)
  fuse = {} if fuse_blocks is None else {"fuse_blocks": fuse_blocks}
  return ml_collections.ConfigDict({
      "adam": dict(b1=0.9, b2=0.999, eps=1e-8),
      "adamw": dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=adamw_weight_decay, mask="matrices"),
      "adagrad": dict(initial_accumulator_value=0.1, eps=1e-7),
      "kfac": dict(damping=1e-3, momentum=0.9, curvature_update_period=t1,
                   inverse_update_period=t2),
      "shampoo": dict(statistics_interval=t1, root_interval=t2, epsilon=1e-4, momentum=0.9),
      "adablock": dict(block_size=block_size, b1=0.9, b2=0.999, eps=1e-8, root_interval=1,
                       **fuse),
      "mbag": dict(mbag, **fuse),
      "mbag_n": dict(block_size=block_size, initial_accumulator_value=lam, momentum=0.9,
                     **storage, **fuse),
      "mbag_ema": dict(mbag, decay=0.99, **fuse),
      # Reference codes' defaults; the paper's T1 / T2 where the code has such a period.
      "shampoo_paper": dict(momentum=0.9, epsilon=1e-4, root_interval=t2),
      "kfac_paper": dict(damping=1e-3, momentum=0.9, kl_clip=1e-2, curvature_update_period=t1,
                         inverse_update_period=t2, curvature_ema=0.95),
      "adablock_paper": dict(block_size=block_size, b1=0.9, b2=0.999, delta=1e-4, eps=1e-4,
                             block_damping=1e-6, **fuse),
  })


def base_config(*, task: str, dataset: str, preset: str,
                learning_rates: Mapping[str, float]) -> ml_collections.ConfigDict:
  """The fields of every run, with neutral values that each config file then sets."""
  missing = sorted(set(OPTIMIZER_NAMES) - set(LEARNING_RATE_OF) - set(learning_rates))
  if missing:
    raise ValueError(f"learning_rates has no entry for {missing}")
  c = ml_collections.ConfigDict()
  c.task = task
  c.dataset = dataset
  c.preset = preset
  c.optimizer = "mbag"
  c.seed = 0
  c.model = ml_collections.ConfigDict()
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_epochs = 1
  # None: learning_rates[optimizer]. Set it to override for the chosen optimizer.
  c.learning_rate = ml_collections.FieldReference(None, field_type=float)
  rates = dict(learning_rates)
  for variant, other in LEARNING_RATE_OF.items():
    rates.setdefault(variant, rates[other])
  c.learning_rates = ml_collections.ConfigDict(rates)
  # The learning-rate schedule, by name (experiments/schedules.py:LR_SCHEDULES):
  # "step": learning_rate, multiplied by lr_decay_factor at each epoch of lr_decay_epochs;
  # "warmup_cosine": linear warm-up from 0 over warmup_steps steps, then cosine decay to
  # learning_rate * lr_final_fraction at the last step.
  c.lr_schedule = "step"
  c.lr_decay_epochs = ()  # multiply the learning rate by lr_decay_factor at these epochs
  c.lr_decay_factor = 0.1
  c.warmup_steps = 0
  c.lr_final_fraction = 0.0
  c.weight_decay = 0.0  # added to the gradient (optax.add_decayed_weights; KFAC: to the objective)
  c.train_subset = 0  # > 0: keep only the first N training examples (smoke runs)
  c.test_subset = 0
  c.eval_every_epochs = 1
  c.eval_every_steps = 0  # > 0: also every this many steps (a multiple of log_every_steps)
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000  # also at the end, and when stopped by SIGINT / SIGTERM
  c.keep_checkpoints = 2
  c.track_bound = False  # log Theorem 1's terms (theory package; optimizer mbag only)
  # Split each batch over all devices (all processes' devices), params replicated, MBAG's
  # statistics sharded over the devices (experiments/parallel.py). batch_size must divide.
  c.data_parallel = False
  c.optimizer_config = optimizer_config(lam=0.01, newton_schulz_steps=5)
  # Seeds a study of this preset averages (experiments.ablation, paper_figures' tables).
  c.num_seeds = 3
  return c


def select_preset(presets: Mapping[str, Callable[[], ml_collections.ConfigDict]],
                  preset: str | None, default: str) -> ml_collections.ConfigDict:
  """``presets[preset]()``; ValueError naming the known presets otherwise."""
  name = preset or default
  if name not in presets:
    raise ValueError(f"unknown preset {name!r}; known presets: {sorted(presets)} "
                     f"(select one as --config=<file>.py:<preset>)")
  config = presets[name]()
  config.preset = name
  return config


# The study's schedule (python -m experiments.ablation, docs/benchmarks.md "Protocol").
STUDY_WARMUP_FRACTION = 0.05


def warmup_cosine(config: ml_collections.ConfigDict, *, steps: int,
                  warmup_fraction: float = STUDY_WARMUP_FRACTION,
                  final_fraction: float = 0.0) -> None:
  """Gives ``config`` the study's schedule: a linear warm-up over ``round(warmup_fraction *
  steps)`` steps, then a cosine decay to ``final_fraction`` x the rate at the last of the run's
  ``steps`` (``num_epochs`` x steps per epoch; ``lr_schedule="warmup_cosine"`` of
  ``experiments/train.py``)."""
  config.lr_schedule = "warmup_cosine"
  config.warmup_steps = int(round(warmup_fraction * steps))
  config.lr_final_fraction = float(final_fraction)
  config.lr_decay_epochs = ()
