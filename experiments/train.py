"""The one training loop of every task and optimizer: ``run(config, workdir, data_dir)``.

In the shape of flax's examples (``examples/imagenet/train.py``): top-level pieces that can be
tested one by one, and a loop that calls them in order.

- :func:`resolve_config`: the learning rate of the chosen optimizer, the model of the data set;
- :func:`load_data`: the data set on the device once (training set replicated, test batches
  padded and split over the devices under ``config.data_parallel``);
- :func:`epoch_batches`: the batches of one epoch: a fresh permutation of the training set
  drawn on the device (``jax.random`` from the seed and the epoch), each batch gathered and
  augmented on the device, with its step's random key;
- :func:`create_train_state`: parameters, model state (BatchNorm), optimizer state and, with
  ``config.track_bound``, Theorem 1's tracker, in one :class:`TrainState`;
- :func:`train_step`: the optimizer's jitted step (gradient included; the state is donated);
- :func:`evaluate`: the test loss and metrics in one jitted pass over padded batches;
- periodic actions (:mod:`experiments.periodic`, :mod:`experiments.bound_tracking`), due by
  step count: a record every ``log_every_steps`` and at the end of each epoch (training stats
  averaged since the last record, gradient norm, learning rate, step time, examples per second,
  the optimizer's own scalars as ``opt/...``, the test metrics at the end of every
  ``eval_every_epochs``-th epoch, Theorem 1's terms as ``bound/...``) to ``metrics.jsonl`` and
  TensorBoard; a checkpoint every ``checkpoint_every_steps``, at the end and on SIGINT / SIGTERM
  (then :class:`Interrupted`); :class:`NonFiniteError` when the loss or gradient norm of a step
  is not finite (checked at every record and before every checkpoint, naming the first bad step).

The newest checkpoint of ``workdir`` is restored first if there is one: the run continues
where it stopped (same data order, same random numbers, curves without a gap or a duplicated
step). The step time excludes the first step after (re)starting (it includes compilation:
logged once as ``compile_time``), evaluation and checkpointing.

With ``config.data_parallel`` the same loop runs under a data mesh over all devices
(``experiments.parallel``): params, model state and data replicated, each training and test
batch split over the devices, gradients averaged by the jitted step (the loss is a mean over
the global batch), MBAG's statistics sharded over the devices. With several JAX processes
(``jax.distributed``, ``--num_processes`` of ``experiments/cli.py``) the mesh spans every
process's devices; each process runs this loop on the same data, process 0 alone writes
``config.json``, ``metrics.jsonl`` and TensorBoard events and shows progress, all processes
save and restore the checkpoints together (orbax), and a stop signal is agreed at the log
interval (no collective per step beyond the training step's own).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pathlib
import signal
import sys
import time
from typing import Any, Callable, Iterator, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from experiments import bound_tracking
from experiments import checkpoints
from experiments import errors
from experiments import metrics as metrics_lib
from experiments import parallel
from experiments import periodic
from experiments import resume
from experiments import rundir
from experiments import tasks as tasks_lib

CONFIG_FILE = "config.json"
RESUMABLE_CHANGES = resume.RESUMABLE_CHANGES
_POSITIVE_INTS = ("batch_size", "eval_batch_size", "num_epochs", "eval_every_epochs",
                  "log_every_steps", "checkpoint_every_steps", "keep_checkpoints")


class NonFiniteError(errors.RunError):
  """The loss or the gradient norm of a training step is NaN or infinite."""


class Interrupted(errors.RunError):
  """SIGINT or SIGTERM arrived; a checkpoint of the last finished step was saved.

  Attributes:
    signum: the signal number.
    step: the step of the saved checkpoint.
  """

  def __init__(self, message: str, signum: int, step: int):
    super().__init__(message)
    self.signum = signum
    self.step = step


class TrainState(NamedTuple):
  """Everything a checkpoint holds besides the loop counters."""

  params: Any
  model_state: Any
  opt_state: Any
  tracker: Any  # theory.TrackerState when config.track_bound, else ()


class RunResult(NamedTuple):
  """What :func:`run` returns.

  Attributes:
    params: the final parameters.
    model_state: the final model state (BatchNorm statistics, or {}).
    summary: the latest value of every metric logged, with ``step`` and ``epoch``.
    workdir: the run directory.
  """

  params: Any
  model_state: Any
  summary: dict[str, Any]
  workdir: pathlib.Path


# ----------------------------------------------------------------------------- config


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A validated copy of ``config`` with ``learning_rate`` and the task's model fields filled in.

  Raises:
    ValueError: a missing or invalid field, named with its value.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  # Fields added after runs were written: a config without them has the neutral value.
  for field, neutral in _NEUTRAL_FIELDS.items():
    if field not in config:
      config[field] = neutral
  for field in ("task", "dataset", "optimizer", "seed", "learning_rates", "optimizer_config",
                "lr_decay_epochs", "lr_decay_factor", "train_subset", "test_subset",
                "track_bound", "weight_decay", "data_parallel", *_POSITIVE_INTS):
    if field not in config:
      raise ValueError(f"config has no field {field!r} (see experiments/configs/common.py)")
  for field in _POSITIVE_INTS:
    value = config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"config.{field} must be an integer >= 1, got {value!r}")
  for field in ("train_subset", "test_subset", "seed", "warmup_steps", "eval_every_steps"):
    value = config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      raise ValueError(f"config.{field} must be an integer >= 0, got {value!r}")
  if config.eval_every_steps % config.log_every_steps:
    raise ValueError(f"config.eval_every_steps={config.eval_every_steps} must be a multiple of "
                     f"config.log_every_steps={config.log_every_steps} (evaluations are "
                     f"added to the records)")
  from experiments import optimizers  # pylint: disable=import-outside-toplevel
  if config.optimizer not in optimizers.OPTIMIZERS:
    raise errors.ConfigError(f"config.optimizer={config.optimizer!r} is not a known optimizer; "
                             f"known: {', '.join(sorted(optimizers.OPTIMIZERS))}")
  if config.learning_rate is None:
    if config.optimizer not in config.learning_rates:
      raise ValueError(f"config.learning_rates has no entry for optimizer {config.optimizer!r}; "
                       f"set --config.learning_rate")
    config.learning_rate = float(config.learning_rates[config.optimizer])
  if (not isinstance(config.learning_rate, (int, float)) or not config.learning_rate > 0
      or not math.isfinite(config.learning_rate)):
    raise ValueError(f"config.learning_rate must be a finite number > 0, got "
                     f"{config.learning_rate!r}")
  _check_schedule(config)
  if not isinstance(config.track_bound, bool):
    raise ValueError(f"config.track_bound must be true or false, got {config.track_bound!r}")
  parallel.check_config(config)
  tasks_lib.get_task(config.task).resolve_config(config)
  return config


def _step_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """``lr * factor^k`` after the k-th epoch of ``config.lr_decay_epochs`` (boundaries in steps)."""
  del total_steps
  boundaries = {}
  for epoch in config.lr_decay_epochs:
    step = int(epoch) * steps_per_epoch
    boundaries[step] = boundaries.get(step, 1.0) * float(config.lr_decay_factor)
  return optax.piecewise_constant_schedule(float(config.learning_rate), boundaries)


def _warmup_cosine_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  r"""Linear warm-up, then cosine decay (``optax.warmup_cosine_decay_schedule``).

  With ``eta = config.learning_rate``, ``W = config.warmup_steps``, ``T = total_steps`` and
  ``f = config.lr_final_fraction``, the rate of the update counted ``k`` (0 for the first
  step, ``T - 1`` for the last) is ``eta * k / W`` for ``k < W`` (from 0), then
  :math:`\eta f + \eta (1 - f) (1 + \cos(\pi (k - W) / (T - 1 - W))) / 2`, which is
  ``eta`` at ``k = W`` and ``eta * f`` at the last step.

  Raises:
    ValueError: ``W >= T - 1`` (no step left to decay over).
  """
  del steps_per_epoch
  warmup = int(config.warmup_steps)
  if warmup >= total_steps - 1:
    raise errors.ConfigError(
        f"config.warmup_steps={warmup} leaves no step to decay over: the run has {total_steps} "
        f"steps (num_epochs x steps per epoch); warmup_steps must be < {total_steps - 1}")
  lr = float(config.learning_rate)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=total_steps - 1,
      end_value=lr * float(config.lr_final_fraction))


# config.lr_schedule -> (config, steps_per_epoch, total_steps) -> optax schedule (step -> rate).
LR_SCHEDULES: dict[str, Callable[[Any, int, int], optax.Schedule]] = {
    "step": _step_schedule,
    "warmup_cosine": _warmup_cosine_schedule,
}
# The fields each schedule reads besides learning_rate; the others must keep the neutral value
# of configs/common.py:base_config, so that no setting is silently ignored.
_SCHEDULE_FIELDS = {"step": ("lr_decay_epochs", "lr_decay_factor"),
                    "warmup_cosine": ("warmup_steps", "lr_final_fraction")}
_NEUTRAL_FIELDS = {"lr_schedule": "step", "warmup_steps": 0, "lr_final_fraction": 0.0,
                   "eval_every_steps": 0}
_NEUTRAL_SCHEDULE_VALUES = {"lr_decay_epochs": (), "warmup_steps": 0, "lr_final_fraction": 0.0}


def _check_schedule(config) -> None:
  """Raises ValueError naming the field when the schedule fields are invalid or unused."""
  if config.lr_schedule not in LR_SCHEDULES:
    raise ValueError(f"config.lr_schedule={config.lr_schedule!r} is not a known schedule; "
                     f"known: {sorted(LR_SCHEDULES)}")
  decay = tuple(config.lr_decay_epochs)
  if any(not isinstance(e, int) or e < 1 for e in decay) or list(decay) != sorted(decay):
    raise ValueError(f"config.lr_decay_epochs must be increasing integers >= 1, got {decay!r}")
  if (not isinstance(config.lr_decay_factor, (int, float)) or not config.lr_decay_factor > 0
      or not math.isfinite(config.lr_decay_factor)):
    raise ValueError(f"config.lr_decay_factor must be a finite number > 0, got "
                     f"{config.lr_decay_factor!r}")
  fraction = config.lr_final_fraction
  if (not isinstance(fraction, (int, float)) or isinstance(fraction, bool)
      or not 0 <= fraction <= 1):
    raise ValueError(f"config.lr_final_fraction must be a number in [0, 1], got {fraction!r}")
  used = _SCHEDULE_FIELDS[config.lr_schedule]
  for field, neutral in _NEUTRAL_SCHEDULE_VALUES.items():
    value = tuple(config[field]) if field == "lr_decay_epochs" else config[field]
    if field not in used and value != neutral:
      users = [name for name, fields in _SCHEDULE_FIELDS.items() if field in fields]
      raise ValueError(f"config.{field}={value!r} is not used by config.lr_schedule="
                       f"{config.lr_schedule!r} (only by {users}); leave it at {neutral!r}")


def learning_rate_schedule(config, steps_per_epoch: int,
                           total_steps: int | None = None) -> optax.Schedule:
  """The schedule ``LR_SCHEDULES[config.lr_schedule]`` of a run of ``total_steps`` steps
  (default ``config.num_epochs * steps_per_epoch``); ``schedule(k)`` is the rate of the
  ``k + 1``-th step."""
  if total_steps is None:
    total_steps = int(config.num_epochs) * steps_per_epoch
  return LR_SCHEDULES[config.get("lr_schedule", "step")](config, steps_per_epoch, total_steps)


def describe_hardware() -> str:
  """E.g. ``1 x NVIDIA H200 (gpu)`` or ``1 x cpu (cpu, 2 cores)``."""
  devices = jax.devices()
  kind = devices[0].device_kind
  text = f"{len(devices)} x {kind} ({devices[0].platform}"
  if devices[0].platform == "cpu":
    text += f", {os.cpu_count()} cores"
  if jax.process_count() > 1:
    text += f", {jax.process_count()} processes"
  return text + ")"


def _write_json(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
  os.replace(tmp, path)


# ----------------------------------------------------------------------------- data


class Data(NamedTuple):
  """The data set of a run, on the device.

  Attributes:
    dataset: the host data set (``experiments.data``), after ``train_subset`` / ``test_subset``.
    x_train, y_train: the training set (replicated under a mesh).
    test: ``(xs, ys, masks)``, ``[num_batches, batch, ...]``, the last batch zero-padded
      (``masks`` 0 there), split along the batch axis under a mesh.
    steps_per_epoch: ``len(x_train) // batch_size`` (the remainder is not used in an epoch).
  """

  dataset: Any
  x_train: jax.Array
  y_train: jax.Array
  test: tuple[jax.Array, jax.Array, jax.Array]
  steps_per_epoch: int


def _subset(dataset, config):
  n_train = config.train_subset or len(dataset.x_train)
  n_test = config.test_subset or len(dataset.x_test)
  return dataset._replace(x_train=dataset.x_train[:n_train], y_train=dataset.y_train[:n_train],
                          x_test=dataset.x_test[:n_test], y_test=dataset.y_test[:n_test])


def _eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int, multiple_of: int = 1):
  """``x, y, mask`` reshaped to ``[num_batches, batch, ...]``, the last batch zero-padded.

  The batch is ``min(batch_size, len(x))`` rounded up to a multiple of ``multiple_of``.
  """
  n = len(x)
  batch_size = -(-min(batch_size, n) // multiple_of) * multiple_of
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])

  def shape(a):
    a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
    return a.reshape(num_batches, batch_size, *a.shape[1:])

  return shape(x), shape(y), mask.reshape(num_batches, batch_size)


def load_data(config, data_dir, task: tasks_lib.Task, mesh) -> Data:
  """Loads ``config.dataset`` (``experiments.data.load_dataset``) and puts it on the device.

  Raises:
    ValueError: the data set does not fit the task, or has fewer examples than one batch.
  """
  from experiments import data as data_lib  # pylint: disable=import-outside-toplevel
  from experiments.data import common as data_common  # pylint: disable=import-outside-toplevel
  if config.dataset.removesuffix(data_lib.VALIDATION_SUFFIX) not in data_lib.DATASETS:
    data_lib.load_dataset(config.dataset, None)  # raises the ValueError naming the known ones
  if data_dir is not None and not pathlib.Path(data_dir).is_dir():
    raise errors.ConfigError(f"--data_dir={data_dir}: no such directory")
  try:
    dataset = data_lib.load_dataset(config.dataset, None if data_dir is None else str(data_dir))
  except (data_common.DatasetNotFoundError, data_common.ChecksumError):
    raise
  except (ValueError, OSError, EOFError) as e:
    # A file that does not read as its format says (truncated, corrupted): a data error.
    raise errors.DataError(f"data set {config.dataset!r}: {errors.short(e, 400)}") from None
  dataset = _subset(dataset, config)
  task.check_dataset(dataset)
  n_train = len(dataset.x_train)
  steps_per_epoch = n_train // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"config.batch_size={config.batch_size} is larger than the {n_train} training "
                     f"examples of {dataset.name!r}")
  x_train, y_train = parallel.put_replicated((dataset.x_train, dataset.y_train), mesh)
  test = _eval_batches(dataset.x_test, dataset.y_test, config.eval_batch_size,
                       parallel.num_shards(mesh))
  return Data(dataset, x_train, y_train, parallel.put_split(test, mesh, axis=1), steps_per_epoch)


class Keys(NamedTuple):
  """The run's random keys, split from ``config.seed``."""

  init: jax.Array
  shuffle: jax.Array
  augment: jax.Array
  step: jax.Array


def make_keys(seed: int) -> Keys:
  return Keys(*jax.random.split(jax.random.PRNGKey(seed), 4))


@functools.partial(jax.jit, static_argnums=(1,))
def _permutation(key, num_examples: int, epoch):
  return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


@functools.partial(jax.jit, static_argnames=("task", "batch_size", "mesh"))
def _get_batch(x, y, perm, index, step, augment_key, step_key, *, task, batch_size, mesh):
  idx = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
  xb, yb = jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)
  inputs = task.train_inputs(jax.random.fold_in(augment_key, step), xb)
  batch = parallel.split_batch({"inputs": inputs, "targets": task.targets(xb, yb)}, mesh)
  return batch, jax.random.fold_in(step_key, step)


def epoch_batches(data: Data, keys: Keys, epoch: int, start_step: int = 0, *,
                  task: tasks_lib.Task, batch_size: int, mesh=None
                  ) -> Iterator[tuple[int, Any, jax.Array]]:
  """``(step, batch, rng)`` for the steps of ``epoch`` (0-based) from ``start_step`` on.

  ``step`` counts the steps done before this batch; ``batch`` is ``{"inputs", "targets"}``
  (augmented), ``rng`` the step's key. Every batch depends only on the seed and its step.
  """
  spe = data.steps_per_epoch
  perm = _permutation(keys.shuffle, len(data.dataset.x_train), epoch)
  for step in range(max(start_step, epoch * spe), (epoch + 1) * spe):
    batch, rng = _get_batch(data.x_train, data.y_train, perm, np.int32(step % spe),
                            np.int32(step), keys.augment, keys.step, task=task,
                            batch_size=batch_size, mesh=mesh)
    yield step, batch, rng


# ----------------------------------------------------------------------------- state and steps


def create_train_state(model, optimizer, init_key, batch, rng, mesh=None,
                       bound: bound_tracking.TrackBound | None = None) -> TrainState:
  """Initial parameters and model state for ``batch``'s inputs, the optimizer's state, the tracker."""
  init = jax.jit(functools.partial(tasks_lib.init_model, model))
  params, model_state = parallel.put_replicated(init(init_key, batch["inputs"]), mesh)
  opt_state = optimizer.init(params, model_state, rng, batch)
  return TrainState(params, model_state, opt_state, bound.init(opt_state) if bound else ())


def train_step(optimizer, state: TrainState, batch, rng) -> tuple[TrainState, dict[str, Any]]:
  """One step of ``optimizer`` (its jitted program, gradient included): ``(state, stats)``.

  The buffers of ``state`` are donated. ``stats``: ``loss``, ``grad_norm`` and the task's
  metrics of the batch (see ``experiments.optimizers.Optimizer``).
  """
  params, model_state, opt_state, stats = optimizer.step(
      state.params, state.model_state, state.opt_state, rng, batch)
  return state._replace(params=params, model_state=model_state, opt_state=opt_state), stats


@functools.partial(jax.jit, static_argnums=(0,))
def evaluate(eval_fn, params, model_state, xs, ys, masks) -> dict[str, jax.Array]:
  """``{"test_<metric>": mean}`` over padded batches (``eval_fn`` of ``tasks.make_eval_fn``)."""
  def body(totals, batch):
    sums = eval_fn(params, model_state, *batch)
    return jax.tree.map(jnp.add, totals, sums), None
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(eval_fn, params, model_state,
                                                      xs[0], ys[0], masks[0]))
  totals, _ = jax.lax.scan(body, zeros, (xs, ys, masks))
  count = totals.pop("count")
  return {f"test_{k}": v / count for k, v in totals.items()}


# ----------------------------------------------------------------------------- loop


def _epoch_of(step: int, steps_per_epoch: int) -> int:
  """The 1-based epoch that step ``step`` (1-based) belongs to."""
  return -(-step // steps_per_epoch)


def _check_finite(pending, step: int, config, schedule, steps_per_epoch: int, ckpt_dir) -> None:
  """Raises :class:`NonFiniteError` for the first bad step of ``pending`` (steps up to ``step``)."""
  bad = periodic.first_nonfinite(pending, step - len(pending) + 1)
  if bad is None:
    return
  bad_step, names, values = bad
  raise NonFiniteError(
      f"training stopped: {' and '.join(names)} became non-finite at step {bad_step} "
      f"(epoch {_epoch_of(bad_step, steps_per_epoch)}): loss={float(values['loss'])}, "
      f"grad_norm={float(values['grad_norm'])}, learning rate {float(schedule(bad_step - 1)):g} "
      f"(config.learning_rate={config.learning_rate:g}, optimizer {config.optimizer}). Lower the "
      f"learning rate (--config.learning_rate) or check the data; the checkpoints in {ckpt_dir} "
      f"were not updated.")


def _write_run_config(path: pathlib.Path, config, data: Data, num_params: int,
                      bound: bound_tracking.TrackBound | None) -> None:
  """``config.json``: the resolved config, the hardware, the data; with track_bound, whether
  Theorem 1 covers the run (``theorem_1``, also said in the log)."""
  _write_json(path, {
      **config.to_dict(), "hardware": describe_hardware(), "num_params": num_params,
      "steps_per_epoch": data.steps_per_epoch, "dataset_source": data.dataset.source,
      "num_train": len(data.dataset.x_train), "num_test": len(data.dataset.x_test),
      "jax_version": jax.__version__, "command": " ".join(sys.argv),
      **({"theorem_1": bound.setting} if bound else {})})
  if bound and bound.setting["covered"]:
    logging.info("track_bound: the run is in Theorem 1's setting")
  elif bound:
    logging.warning("track_bound: Theorem 1 does not cover this run (its terms are logged, but the "
                    "run is no check of the theorem): %s", "; ".join(bound.setting["differences"]))


def run(config: ml_collections.ConfigDict, workdir: os.PathLike | str,
        data_dir: os.PathLike | str | None = None) -> RunResult:
  """Trains ``config`` in ``workdir`` (resuming from its newest checkpoint); see the module docstring.

  Args:
    config: a config from ``experiments/configs`` (fields in ``configs/common.py``).
    workdir: the run directory (created, and locked while the run lives:
      ``experiments.rundir``); it receives ``config.json``, ``metrics.jsonl``,
      ``tensorboard/`` and ``checkpoints/``.
    data_dir: where the data set is looked up first (then the environment
      variable and the cache directory, see ``experiments.data``); must exist.

  Returns:
    A :class:`RunResult` with the final parameters and the latest metrics.

  Raises:
    ValueError (``errors.ConfigError`` among them): an invalid config, ``--workdir`` a file,
      ``--data_dir`` missing, or a checkpoint trained with another config.
    errors.RunError: the run cannot go on, with what to do: :class:`NonFiniteError`,
      :class:`Interrupted` (SIGINT / SIGTERM, a checkpoint was saved first), ``rundir.Locked``
      (another process on ``workdir``), ``errors.WriteError`` (a metrics, TensorBoard or
      checkpoint write failed or hung; the last checkpoint is intact), ``errors.DataError``
      (a damaged data file or ``metrics.jsonl``), no intact checkpoint.
    experiments.data.common.DatasetNotFoundError / ChecksumError: from the data loader.
  """
  config = resolve_config(config)
  workdir = rundir.prepare(workdir)
  # config.data_parallel: the whole run under a data mesh (experiments/parallel.py).
  mesh = parallel.make_mesh(config)
  # Several processes share the directory: process 0 holds its lock.
  lock = rundir.RunLock(workdir) if parallel.is_primary() else contextlib.nullcontext()
  with lock, parallel.use_mesh(mesh), periodic.StopOnSignal() as stop_signal:
    return train_and_evaluate(config, workdir, data_dir, mesh, stop_signal)


def _restore(ckpt: checkpoints.Checkpointer, state: TrainState, config, config_path, metrics_path):
  """``(step, state, meta)`` of the newest intact checkpoint, checked against the config and
  ``metrics.jsonl`` (``experiments.resume``); ``(None, state, {})`` when there is none."""
  restored = ckpt.restore_newest(state)
  if restored is None:
    return None, state, {}
  step, state, meta = restored
  where = ckpt.directory / str(step)
  resume.check_config(meta, config, where, config_path)
  resume.check_metrics(meta, metrics_lib.read_records(metrics_path), int(meta["step"]),
                       metrics_path, where)
  return step, state, meta


def train_and_evaluate(config, workdir: pathlib.Path, data_dir, mesh,
                       stop_signal: periodic.StopOnSignal) -> RunResult:
  """:func:`run` with a resolved config, a locked ``workdir``, under ``mesh`` (None: one device)."""
  from experiments import optimizers  # pylint: disable=import-outside-toplevel

  task = tasks_lib.get_task(config.task)
  bound_tracking.check_config(config)
  data = load_data(config, data_dir, task, mesh)
  steps_per_epoch = data.steps_per_epoch
  total_steps = config.num_epochs * steps_per_epoch

  ckpt = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  config_path = workdir / CONFIG_FILE

  model = task.make_model(config, data.dataset)
  loss_fn = tasks_lib.make_loss_fn(task, model)
  schedule = learning_rate_schedule(config, steps_per_epoch, total_steps)
  optimizer = optimizers.build_optimizer(config, loss_fn, schedule,
                                         dimension_numbers=task.dimension_numbers(config))
  bound = bound_tracking.TrackBound(config, schedule, loss_fn) if config.track_bound else None
  keys = make_keys(config.seed)
  batches = functools.partial(epoch_batches, data, keys, task=task, batch_size=config.batch_size,
                              mesh=mesh)
  _, first_batch, first_rng = next(batches(0))
  state = create_train_state(model, optimizer, keys.init, first_batch, first_rng, mesh, bound)
  num_params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(state.params)))

  step, wall_offset = 0, 0.0
  # Several processes: process 0 alone writes the run's files and shows progress.
  primary = parallel.is_primary()
  resume_step, state, meta = _restore(ckpt, state, config, config_path, workdir / metrics_lib.METRICS_FILE)
  if resume_step is not None:
    step, wall_offset = int(meta["step"]), float(meta["wall_time"])
    if primary:
      logging.info("Resuming %s from the checkpoint at step %d", workdir, step)
  if primary:
    try:
      _write_run_config(config_path, config, data, num_params, bound)
    except OSError as e:
      raise errors.WriteError(f"{config_path}: cannot write ({e.strerror or e})") from None
  writer = metrics_lib.MetricWriter(workdir, resume_step=None if resume_step is None else step,
                                    enabled=primary, should_stop=lambda: stop_signal.signum)
  summary = {k: v for r in metrics_lib.read_records(writer.path) for k, v in r.items()}

  start = time.time()
  timer = periodic.StepTimer()
  log = periodic.LogMetrics(writer, schedule, optimizer.metrics, every_steps=config.log_every_steps,
                            steps_per_epoch=steps_per_epoch)
  evaluation = periodic.Evaluate(functools.partial(evaluate, tasks_lib.make_eval_fn(task, model)),
                                 data.test, steps_per_epoch=steps_per_epoch,
                                 every_epochs=config.eval_every_epochs,
                                 every_steps=config.eval_every_steps, total_steps=total_steps)
  checkpoint = periodic.Checkpoint(ckpt, writer, every_steps=config.checkpoint_every_steps,
                                   total_steps=total_steps)
  check_finite = functools.partial(_check_finite, config=config, schedule=schedule,
                                   steps_per_epoch=steps_per_epoch, ckpt_dir=ckpt.directory)
  bar = tqdm.tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
                  disable=None if primary else True,
                  desc=f"{config.task}/{config.dataset}/{config.optimizer}")
  # The stats of the steps since the last record: a run stopped between records saved them
  # in its checkpoint, so the resumed run's next record averages the same steps.
  pending = list(meta.get(PENDING_KEY, []))
  failed = True
  try:
    for epoch in range(step // steps_per_epoch, config.num_epochs):
      for done, batch, rng in batches(epoch, step):
        state, stats = train_step(optimizer, state, batch, rng)
        step = done + 1
        if bound:
          state = bound(step, state, stats, batch, rng)
        pending.append(stats)
        timer.step_done(stats)
        bar.update(1)

        at_log = log.due(step)
        if at_log:
          host, pending = jax.device_get(pending), []
          record = log.record(step, host, state.opt_state, timer.lap(config.batch_size))
          evaluated = evaluation.due(step) and periodic.first_nonfinite(host, 0) is None
          if evaluated:
            record.update(evaluation(state.params, state.model_state))
          if bound:
            state, bound_scalars = bound.report(step, state)
            record.update(bound_scalars)
          summary.update(log.write(step, _epoch_of(step, steps_per_epoch),
                                   wall_offset + time.time() - start, record))
          check_finite(host, step)
          bar.set_postfix(loss=f"{record['train_loss']:.4g}",
                          **({"ex/s": f"{record['examples_per_sec']:.0f}"}
                             if "examples_per_sec" in record else {}))
          if evaluated and primary:
            logging.info("epoch %d/%d step %d: %s", _epoch_of(step, steps_per_epoch),
                         config.num_epochs, step,
                         ", ".join(f"{k}={v:.4g}" for k, v in record.items()))
          timer.restart()

        signum = stop_signal.agreed(at_log)
        if checkpoint.due(step) or signum:
          with timer.paused():
            host_pending = jax.device_get(pending)
            check_finite(host_pending, step)
            checkpoint(step, state, {
                "step": step, "wall_time": wall_offset + time.time() - start,
                "epoch": _epoch_of(step, steps_per_epoch), **resume.checkpoint_meta(config),
                resume.NUM_RECORDS_KEY: writer.num_records,
                PENDING_KEY: [{k: float(v) for k, v in s.items()} for s in host_pending]})
        if signum:
          raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint "
                            f"saved in {ckpt.directory}. Run the same command again to resume.",
                            signum, step)
    if resume_step is not None and resume_step >= total_steps and primary:
      logging.info("%s already finished (step %d of %d)", workdir, resume_step, total_steps)
    failed = False
  except errors.WriteError as e:
    last = ckpt.latest_step()
    kept = (f"the last checkpoint, {ckpt.directory / str(last)}, is intact: fix the cause and run "
            f"the same command again to resume" if last is not None else "no checkpoint was saved")
    if stop_signal.signum:
      raise Interrupted(f"stopped by {signal.Signals(stop_signal.signum).name} at step {step} "
                        f"without a new checkpoint ({e}); {kept}.", stop_signal.signum,
                        last or 0) from None
    raise errors.WriteError(f"{e}. The run stopped; {kept}.") from None
  finally:
    bar.close()
    _close(writer, quiet=failed)
    ckpt.close()
  summary.pop("wall_time", None)
  return RunResult(params=state.params, model_state=state.model_state, summary=summary,
                   workdir=workdir)


PENDING_KEY = "pending_stats"


def _close(writer: metrics_lib.MetricWriter, quiet: bool) -> None:
  """Closes ``writer``; with another error on its way (``quiet``) a close error is only logged."""
  try:
    writer.close()
  except errors.WriteError as e:
    if not quiet:
      raise
    logging.warning("%s", e)
