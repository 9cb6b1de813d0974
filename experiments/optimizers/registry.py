"""The optimizer registry: name -> builder of an :class:`Optimizer` from the run's config.

Hyperparameters come from ``config.optimizer_config.<name>``; their names are
the keyword arguments of the constructor in :data:`TRANSFORMS` (or of
:func:`experiments.optimizers.kfac.kfac`), e.g. ``optimizer_config.mbag.block_size``.
``config.weight_decay`` (optional, default 0) is added to the gradient before
the preconditioner (``optax.add_decayed_weights``; for KFAC, to the objective), except
for the ``*_paper`` variants, which apply it where their reference code does
(:data:`OWN_WEIGHT_DECAY`: passed as their ``weight_decay`` argument).

The ``*_paper`` variants follow the public codes the paper's baselines came from (their
modules say what comes from where; ``configs/common.py:PAPER_VARIANTS`` pairs each with
its modern counterpart).
``config.data_parallel`` (optional, default False) gives MBAG's constructors
``shard_blocks="data"`` (see ``experiments.parallel``).

AdamW (``"adamw"``, ``optax.adamw``) has its own decoupled ``weight_decay`` in
``optimizer_config.adamw``, on the leaves of a ``mask`` given by name (:data:`WEIGHT_DECAY_MASKS`);
``config.weight_decay`` (L2 on the gradient) applies to it as to the others.

An MBAG-family optimizer can leave some leaves to AdamW: ``optimizer_config.mbag.keep_on_adamw``
names them (:data:`KEEP_ON_ADAMW`: embeddings, vectors, both), which then get ``optax.adamw`` with
``optimizer_config.adamw``'s hyperparameters at the same learning rate (``optax.multi_transform``).

Dimension numbers: a model that knows what its parameters' axes mean (a scanned stack of
layers) says so through its task (``experiments.tasks.Task.dimension_numbers``); the training
loop passes them to :func:`build_optimizer`, which gives them to every transformation taking
``dimension_numbers`` (MBAG, MBAG-N, MBAG-EMA) unless the config chooses a grouping there
(``optimizer_config.<name>.grouping`` or ``.dimension_numbers``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import optax

import mbag
from experiments import parallel
from experiments.optimizers import adablock as adablock_lib
from experiments.optimizers import base
from experiments.optimizers import kfac as kfac_lib
from experiments.optimizers import kfac_paper as kfac_paper_lib
from experiments.optimizers import shampoo as shampoo_lib
from experiments.optimizers import shampoo_paper as shampoo_paper_lib

# name -> constructor (learning_rate, **hyperparameters) -> optax.GradientTransformation.
TRANSFORMS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "adagrad": optax.adagrad,
    "shampoo": shampoo_lib.shampoo,
    "adablock": adablock_lib.adablock,
    "mbag": mbag.mbag,
    "mbag_n": mbag.mbag_n,
    "mbag_ema": mbag.mbag_ema,
    "shampoo_paper": shampoo_paper_lib.shampoo_paper,
    "adablock_paper": adablock_lib.adablock_paper,
}
# Optimizers that take config.weight_decay as their own ``weight_decay`` argument.
OWN_WEIGHT_DECAY = frozenset({"shampoo_paper", "adablock_paper", "kfac_paper"})


def _diagonal_vectors(path, shape):
  del path
  return 1 if len(shape) <= 1 else None


# Named groupings a config can select (configs are data): ``optimizer_config.mbag.grouping =
# "diagonal_vectors"`` gives every vector and scalar (biases, norm parameters) blocks of size 1
# (diagonal AdaGrad) and keeps the default grouping elsewhere.
GROUPINGS: dict[str, Callable[[Any, tuple[int, ...]], Any]] = {
    "diagonal_vectors": _diagonal_vectors,
}


def _matrices(params: Any) -> Any:
  """True for every leaf of rank >= 2 not named ``bias`` or ``scale`` (kernels, embeddings)."""
  def decayed(path, leaf):
    name = getattr(path[-1], "key", getattr(path[-1], "name", None)) if path else None
    return jax.numpy.ndim(leaf) >= 2 and name not in ("bias", "scale")
  return jax.tree_util.tree_map_with_path(decayed, params)


# Named weight-decay masks a config can select (``optimizer_config.adamw.mask = "matrices"``,
# ``optimizer_config.mbag.weight_decay_mask = "matrices"``):
# params -> pytree of bools, True where the decoupled weight decay applies.
# "matrices": nanoGPT's rule (decay the weight matrices and embeddings, not the biases and norm
# scales); by name as well as rank, so that the leaves of a layer stacked by nn.scan (a stacked
# LayerNorm scale is rank 2) are decayed exactly as the unstacked layer's. "all": every leaf.
WEIGHT_DECAY_MASKS: dict[str, Callable[[Any], Any] | None] = {
    "matrices": _matrices,
    "all": None,
}
# Named grafts of the MBAG family (``optimizer_config.mbag.graft = "adam_block"``): the methods
# by their own names (one norm per leaf) and "<method>_block" (one norm per mini-block).
GRAFTS: dict[str, Any] = {
    **{m: m for m in ("adam", "rmsprop", "adagrad")},
    **{f"{m}_block": mbag.Graft(m, granularity="block") for m in ("adam", "rmsprop", "adagrad")},
}
# Hyperparameters a config may give by name: hyperparameter -> {name: value}.
NAMED_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "graft": GRAFTS,
    "grouping": GROUPINGS,
    "mask": WEIGHT_DECAY_MASKS,  # optax.adamw's
    "weight_decay_mask": WEIGHT_DECAY_MASKS,  # the MBAG family's
}


def _leaf_name(path) -> str | None:
  return getattr(path[-1], "key", getattr(path[-1], "name", None)) if path else None


def _embeddings(path, leaf) -> bool:
  del leaf
  return _leaf_name(path) == "embedding"


def _vectors(path, leaf) -> bool:
  """Biases and norm scales (by name, so that a scanned stack's are too) and every leaf of rank
  <= 1."""
  return jax.numpy.ndim(leaf) <= 1 or _leaf_name(path) in ("bias", "scale")


# Leaves an MBAG-family optimizer can leave to AdamW (``optimizer_config.mbag.keep_on_adamw``):
# (key_path, leaf) -> bool. They get optax.adamw with ``optimizer_config.adamw``'s
# hyperparameters and the same learning rate (optax.multi_transform), the rest MBAG.
KEEP_ON_ADAMW: dict[str, Callable[[Any, Any], bool]] = {
    "embeddings": _embeddings,
    "vectors": _vectors,
    "embeddings_and_vectors": lambda path, leaf: _embeddings(path, leaf) or _vectors(path, leaf),
}


def _resolve_named(hparams: dict[str, Any], name: str) -> dict[str, Any]:
  """``hparams`` with every value given by name (:data:`NAMED_HYPERPARAMETERS`) looked up."""
  for key, table in NAMED_HYPERPARAMETERS.items():
    value = hparams.get(key)
    if isinstance(value, str):
      if value not in table:
        raise ValueError(f"config.optimizer_config.{name}.{key}={value!r} is not a known "
                         f"{key}; known: {sorted(table)}")
      hparams = dict(hparams, **{key: table[value]})
  # The MBAG family calls a grouping dimension_numbers (``grouping=`` is deprecated there).
  if "grouping" in hparams and name in TRANSFORMS and _takes_dimension_numbers(TRANSFORMS[name]):
    hparams = dict(hparams)
    hparams["dimension_numbers"] = hparams.pop("grouping")
  return hparams


def _takes_dimension_numbers(fn: Callable[..., Any]) -> bool:
  return "dimension_numbers" in inspect.signature(fn).parameters


def _weight_decay(config: Any) -> float:
  value = base._get(config, "weight_decay")  # pylint: disable=protected-access
  value = 0.0 if value is None else value
  if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
    raise ValueError(f"config.weight_decay must be a number >= 0, got {value!r}")
  return float(value)


def _mbag_metrics(opt_state: Any) -> dict[str, Any]:
  """MBAG's ``diagnostics`` (MBAG-N, which has no roots: without the root fields)."""
  state = mbag.find_mbag_state(opt_state)
  diagnostics = state.diagnostics._asdict()
  if not state.roots:
    for key in ("root_residual", "root_error", "root_steps", "num_root_fallbacks"):
      diagnostics.pop(key)
  return diagnostics


def _shampoo_metrics(opt_state: Any) -> dict[str, Any]:
  return {"num_root_fallbacks": optax.tree_utils.tree_get(opt_state, "num_root_fallbacks")}


# name -> opt_state -> {name: scalar}: what the optimizer reports about itself (absent: nothing).
STATE_METRICS: dict[str, base.MetricsFn] = {
    "mbag": _mbag_metrics,
    "mbag_n": _mbag_metrics,
    "mbag_ema": _mbag_metrics,
    "shampoo": _shampoo_metrics,
}


def _transformation(name: str, config: Any, learning_rate: optax.ScalarOrSchedule,
                    dimension_numbers: Any = None) -> optax.GradientTransformation:
  if name not in TRANSFORMS:
    raise ValueError(f"{name!r} is not an optax optimizer; known: {sorted(TRANSFORMS)}")
  # Under config.data_parallel, MBAG's statistics are sharded over the data axis.
  data_parallel = bool(base._get(config, "data_parallel"))  # pylint: disable=protected-access
  sharding = parallel.state_sharding(data_parallel, TRANSFORMS[name])
  own = {"weight_decay": _weight_decay(config)} if name in OWN_WEIGHT_DECAY else {}
  hparams = _resolve_named(base.hyperparameters(config, name), name)
  if (dimension_numbers is not None and _takes_dimension_numbers(TRANSFORMS[name])
      and hparams.get("grouping") is None and hparams.get("dimension_numbers") is None):
    own["dimension_numbers"] = dimension_numbers
  keep = hparams.pop("keep_on_adamw", None)
  tx = base.call_with_hyperparameters(TRANSFORMS[name], hparams, name,
                                      learning_rate=learning_rate, **sharding, **own)
  return tx if keep is None else _with_adamw_leaves(tx, keep, name, config, learning_rate)


def _with_adamw_leaves(tx: optax.GradientTransformation, keep: str, name: str, config: Any,
                       learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """``tx`` on every leaf but those ``KEEP_ON_ADAMW[keep]`` selects, which get AdamW."""
  if keep not in KEEP_ON_ADAMW or not _takes_dimension_numbers(TRANSFORMS[name]):
    raise ValueError(f"config.optimizer_config.{name}.keep_on_adamw={keep!r}: must be one of "
                     f"{sorted(KEEP_ON_ADAMW)}, for an optimizer of the MBAG family")
  select = KEEP_ON_ADAMW[keep]

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: "adamw" if select(path, leaf) else "main", params)

  return optax.multi_transform({"main": tx, "adamw": _transformation("adamw", config,
                                                                     learning_rate)}, labels)


def _added_weight_decay(name: str, config: Any) -> float:
  """The weight decay added to the gradient before ``name``'s transformation (0 where it has its own)."""
  return 0.0 if name in OWN_WEIGHT_DECAY else _weight_decay(config)


def make_transformation(name: str, config: Any, learning_rate: optax.ScalarOrSchedule,
                        dimension_numbers: Any = None) -> optax.GradientTransformation:
  """The optax transformation of optimizer ``name`` with the config's hyperparameters and weight
  decay (``dimension_numbers``: see the module docstring)."""
  return base.with_weight_decay(_transformation(name, config, learning_rate, dimension_numbers),
                                _added_weight_decay(name, config))


def _build_optax(name: str, config: Any, loss_fn: base.LossFn,
                 learning_rate: optax.ScalarOrSchedule, dimension_numbers: Any) -> base.Optimizer:
  return base.optax_optimizer(_transformation(name, config, learning_rate, dimension_numbers),
                              loss_fn, name, weight_decay=_added_weight_decay(name, config),
                              metrics=STATE_METRICS.get(name, base.no_metrics))


def _build_kfac(config: Any, loss_fn: base.LossFn, learning_rate: optax.ScalarOrSchedule,
                dimension_numbers: Any) -> base.Optimizer:
  del dimension_numbers  # kfac-jax finds its layers by tracing the model
  return base.call_with_hyperparameters(
      kfac_lib.kfac, base.hyperparameters(config, "kfac"), "kfac", loss_fn=loss_fn,
      learning_rate=learning_rate, weight_decay=_weight_decay(config))


def _build_kfac_paper(config: Any, loss_fn: base.LossFn, learning_rate: optax.ScalarOrSchedule,
                      dimension_numbers: Any) -> base.Optimizer:
  del dimension_numbers
  return base.call_with_hyperparameters(
      kfac_paper_lib.kfac_paper, base.hyperparameters(config, "kfac_paper"), "kfac_paper",
      loss_fn=loss_fn, learning_rate=learning_rate, weight_decay=_weight_decay(config))


# name -> builder (config, loss_fn, learning_rate, dimension_numbers) -> Optimizer.
OPTIMIZERS: dict[str, Callable[[Any, base.LossFn, optax.ScalarOrSchedule, Any],
                               base.Optimizer]] = {
    **{name: functools.partial(_build_optax, name) for name in TRANSFORMS},
    "kfac": _build_kfac,
    "kfac_paper": _build_kfac_paper,
}


def build_optimizer(config: Any, loss_fn: base.LossFn, learning_rate: optax.ScalarOrSchedule,
                    *, dimension_numbers: Any = None) -> base.Optimizer:
  """The :class:`Optimizer` named by ``config.optimizer``.

  Args:
    config: the run's ConfigDict: ``optimizer``, optional ``weight_decay`` and
      ``optimizer_config.<name>.<hyperparameter>``.
    loss_fn: ``(params, model_state, rng, batch) -> (loss, (new_model_state, aux))``.
    learning_rate: an optax schedule (step -> lr) or a float.
    dimension_numbers: what the model declares about its parameters' axes (any form
      ``mbag.mbag`` takes), given to MBAG, MBAG-N and MBAG-EMA unless the config chooses a
      grouping; None: their defaults.

  Returns:
    ``Optimizer(init, step, name)``.

  Raises:
    ValueError: unknown optimizer name (the message lists the known ones) or
      unknown / invalid hyperparameters.
  """
  name = base._get(config, "optimizer")  # pylint: disable=protected-access
  if name not in OPTIMIZERS:
    raise ValueError(f"config.optimizer={name!r} is not a known optimizer; known: {sorted(OPTIMIZERS)}")
  return OPTIMIZERS[name](config, loss_fn, learning_rate, dimension_numbers)
