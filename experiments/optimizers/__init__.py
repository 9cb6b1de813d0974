"""Optimizers of the paper's experiments behind one interface, in one registry.

``build_optimizer(config, loss_fn, learning_rate)`` returns ``Optimizer(init, step, name, metrics)``
for ``config.optimizer`` in :data:`OPTIMIZERS`: adam, adagrad (optax), mbag,
mbag_n, mbag_ema (the mbag package), shampoo, adablock (here, as optax
transformations) and kfac (kfac-jax), and the baselines as the paper's reference codes
ran them: shampoo_paper, adablock_paper, kfac_paper. The optax constructors are
``shampoo.shampoo`` and ``adablock.adablock`` in the submodules of those names.
"""

from experiments.optimizers import adablock
from experiments.optimizers import kfac
from experiments.optimizers import kfac_paper
from experiments.optimizers import shampoo
from experiments.optimizers import shampoo_paper
from experiments.optimizers.adablock import ScaleByAdaBlockState
from experiments.optimizers.adablock import adablock_block_spec
from experiments.optimizers.adablock import scale_by_adablock
from experiments.optimizers.base import LossFn
from experiments.optimizers.base import MetricsFn
from experiments.optimizers.base import Optimizer
from experiments.optimizers.base import optax_optimizer
from experiments.optimizers.registry import OPTIMIZERS
from experiments.optimizers.registry import STATE_METRICS
from experiments.optimizers.registry import TRANSFORMS
from experiments.optimizers.registry import build_optimizer
from experiments.optimizers.registry import make_transformation
from experiments.optimizers.shampoo import ScaleByShampooState
from experiments.optimizers.shampoo import scale_by_shampoo

__all__ = (
    "LossFn",
    "MetricsFn",
    "OPTIMIZERS",
    "Optimizer",
    "STATE_METRICS",
    "ScaleByAdaBlockState",
    "ScaleByShampooState",
    "TRANSFORMS",
    "adablock",
    "adablock_block_spec",
    "build_optimizer",
    "kfac",
    "kfac_paper",
    "make_transformation",
    "optax_optimizer",
    "scale_by_adablock",
    "scale_by_shampoo",
    "shampoo",
    "shampoo_paper",
)
