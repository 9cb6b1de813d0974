"""The one training loop of every task and optimizer: ``run(config, workdir, data_dir)``.

What a run does, in order:

1. resolves the config (the learning rate of the chosen optimizer, the model of
   the data set), loads the data set (``experiments.data.load_dataset``) and puts
   it on the device once;
2. builds the model and loss of ``config.task`` (``experiments.tasks``) and the
   jitted training step of ``config.optimizer`` (``experiments.optimizers``), with
   a piecewise-constant learning rate (x ``lr_decay_factor`` at each of
   ``lr_decay_epochs``);
3. restores the newest checkpoint of ``workdir`` if there is one (the run then
   continues where it stopped: same data order, same random numbers, curves
   without a gap or a duplicated step);
4. trains: each epoch a fresh permutation of the training set drawn on the
   device (``jax.random`` from the seed and the epoch), batches gathered and
   augmented on the device, one jitted step per batch; every
   ``log_every_steps`` and at the end of each epoch a record goes to
   ``metrics.jsonl`` and TensorBoard (training loss and metrics averaged over the
   steps since the previous record, gradient norm, learning rate, step time,
   examples per second; at the end of an epoch also the test loss and metrics,
   evaluated in one jitted pass over padded batches);
5. saves a checkpoint every ``checkpoint_every_steps``, at the end, and when it
   receives SIGINT or SIGTERM (then raises :class:`Interrupted`);
6. stops with :class:`NonFiniteError` when the loss or the gradient norm of a
   step is not finite (checked at every record, naming the first bad step).

With ``config.data_parallel`` the same loop runs under a data mesh over all devices
(``experiments.parallel``): params, model state and data replicated, each training and test
batch split over the devices, gradients averaged by the jitted step (the loss is a mean over
the global batch), MBAG's statistics sharded over the devices. With several JAX processes
(``jax.distributed``, ``--num_processes`` of ``experiments/cli.py``) the mesh spans every
process's devices; each process runs this loop on the same data, process 0 alone writes
``config.json``, ``metrics.jsonl`` and TensorBoard events and shows progress, and all processes
save and restore the checkpoints together (orbax).

The step time excludes the first step after (re)starting (it includes
compilation: logged once as ``compile_time``), evaluation and checkpointing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import signal
import sys
import threading
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from experiments import checkpoints
from experiments import metrics as metrics_lib
from experiments import parallel
from experiments import tasks as tasks_lib

CONFIG_FILE = "config.json"
# Config fields a resumed run may change (they do not change the optimisation path).
RESUMABLE_CHANGES = ("num_epochs", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                     "eval_every_epochs", "eval_batch_size", "num_seeds")
_POSITIVE_INTS = ("batch_size", "eval_batch_size", "num_epochs", "eval_every_epochs",
                  "log_every_steps", "checkpoint_every_steps", "keep_checkpoints")


class NonFiniteError(RuntimeError):
  """The loss or the gradient norm of a training step is NaN or infinite."""


class Interrupted(RuntimeError):
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
  for field in ("task", "dataset", "optimizer", "seed", "learning_rates", "optimizer_config",
                "lr_decay_epochs", "lr_decay_factor", "train_subset", "test_subset",
                "track_bound", "weight_decay", "data_parallel", *_POSITIVE_INTS):
    if field not in config:
      raise ValueError(f"config has no field {field!r} (see experiments/configs/common.py)")
  for field in _POSITIVE_INTS:
    value = config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"config.{field} must be an integer >= 1, got {value!r}")
  for field in ("train_subset", "test_subset", "seed"):
    value = config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      raise ValueError(f"config.{field} must be an integer >= 0, got {value!r}")
  if config.learning_rate is None:
    if config.optimizer not in config.learning_rates:
      raise ValueError(f"config.learning_rates has no entry for optimizer {config.optimizer!r}; "
                       f"set --config.learning_rate")
    config.learning_rate = float(config.learning_rates[config.optimizer])
  if not isinstance(config.learning_rate, (int, float)) or not config.learning_rate > 0:
    raise ValueError(f"config.learning_rate must be a number > 0, got {config.learning_rate!r}")
  decay = tuple(config.lr_decay_epochs)
  if any(not isinstance(e, int) or e < 1 for e in decay) or list(decay) != sorted(decay):
    raise ValueError(f"config.lr_decay_epochs must be increasing integers >= 1, got {decay!r}")
  if not isinstance(config.lr_decay_factor, (int, float)) or not config.lr_decay_factor > 0:
    raise ValueError(f"config.lr_decay_factor must be a number > 0, got {config.lr_decay_factor!r}")
  if not isinstance(config.track_bound, bool):
    raise ValueError(f"config.track_bound must be true or false, got {config.track_bound!r}")
  parallel.check_config(config)
  tasks_lib.get_task(config.task).resolve_config(config)
  return config


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """``lr * factor^k`` after the k-th epoch of ``config.lr_decay_epochs`` (boundaries in steps)."""
  boundaries = {}
  for epoch in config.lr_decay_epochs:
    step = int(epoch) * steps_per_epoch
    boundaries[step] = boundaries.get(step, 1.0) * float(config.lr_decay_factor)
  return optax.piecewise_constant_schedule(float(config.learning_rate), boundaries)


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


def _check_resumable(path: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  old = json.loads(path.read_text(encoding="utf-8"))
  old.setdefault("data_parallel", False)  # runs written before the field existed
  new = json.loads(config.to_json())
  changed = sorted(k for k in set(new) | set(k for k in old if k in new)
                   if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
  if changed:
    details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
    raise ValueError(f"{path}: the run in this directory has a different config ({details}). "
                     f"Resume it with the same config, or use a new --workdir.")


def _write_json(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
  os.replace(tmp, path)


# ----------------------------------------------------------------------------- data


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


# ----------------------------------------------------------------------------- theory


def _load_theory():
  try:
    import theory  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError(f"config.track_bound=True needs the theory package (theory/ at the root of "
                       f"this repository), which could not be imported: {e}") from e
  return theory


def _check_track_bound(config) -> None:
  """Raises a clear error when ``config.track_bound`` cannot be honoured."""
  if not config.track_bound:
    return
  if config.optimizer != "mbag":
    raise ValueError(f"config.track_bound=True tracks Theorem 1, which is about Algorithm 1: "
                     f"use --config.optimizer=mbag (got {config.optimizer!r})")
  _load_theory()


def _make_tracker(config, opt_state):
  """``(tracker_state, update_fn)`` for Theorem 1's terms, or ``((), None)`` when not tracking.

  ``update_fn(tracker, opt_state, stats)`` runs after every step (the theorem's sums need
  every step; it costs an ``eigvalsh`` of every block of H and of the roots).
  """
  if not config.track_bound:
    return (), None
  _check_track_bound(config)
  theory = _load_theory()
  lam = float(config.optimizer_config.mbag.initial_accumulator_value)
  # params=None: the step returns the gradient's global norm, not the gradient, so the tracker
  # keeps the theorem's sums and the norms but not the elliptical-potential sums.
  tracker = theory.init_tracker(None, opt_state, eta=float(config.learning_rate), lam=lam)

  def update(ts, opt_state, stats):
    return theory.update_tracker(ts, opt_state, stats["grad_norm"], loss=stats["loss"])

  return tracker, jax.jit(update)


# ----------------------------------------------------------------------------- signals


class _StopOnSignal(contextlib.AbstractContextManager):
  """Records SIGINT / SIGTERM so the loop can checkpoint and stop between steps.

  A second SIGINT falls through to Python's default (KeyboardInterrupt at once).
  Only installed in the main thread (signal handlers cannot be set elsewhere).
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False


# ----------------------------------------------------------------------------- loop


def _host_means(pending: list[dict]) -> dict[str, float]:
  keys = pending[0].keys()
  return {k: float(np.mean([float(s[k]) for s in pending])) for k in keys}


def _first_nonfinite(pending: list[dict], first_step: int):
  for i, s in enumerate(pending):
    bad = [k for k in ("loss", "grad_norm") if not math.isfinite(float(s[k]))]
    if bad:
      return first_step + i, bad, s
  return None


def run(config: ml_collections.ConfigDict, workdir: os.PathLike | str,
        data_dir: os.PathLike | str | None = None) -> RunResult:
  """Trains ``config`` in ``workdir`` (resuming from its newest checkpoint); see the module docstring.

  Args:
    config: a config from ``experiments/configs`` (fields in ``configs/common.py``).
    workdir: the run directory (created); it receives ``config.json``,
      ``metrics.jsonl``, ``tensorboard/`` and ``checkpoints/``.
    data_dir: where the data set is looked up first (then the environment
      variable and the cache directory, see ``experiments.data``).

  Returns:
    A :class:`RunResult` with the final parameters and the latest metrics.

  Raises:
    NonFiniteError: the loss or gradient norm stopped being finite.
    Interrupted: SIGINT / SIGTERM (a checkpoint was saved first).
    ValueError: an invalid config, or a workdir holding a run with another config.
    experiments.data.common.DatasetNotFoundError / ChecksumError: from the data loader.
  """
  config = resolve_config(config)
  # config.data_parallel: the whole run under a data mesh (experiments/parallel.py).
  mesh = parallel.make_mesh(config)
  with parallel.use_mesh(mesh):
    return _run(config, workdir, data_dir, mesh)


def _run(config, workdir, data_dir, mesh) -> RunResult:
  """:func:`run` with a resolved config, under ``mesh`` (None: one device)."""
  from experiments import data as data_lib  # pylint: disable=import-outside-toplevel
  from experiments import optimizers  # pylint: disable=import-outside-toplevel

  task = tasks_lib.get_task(config.task)
  _check_track_bound(config)
  dataset = _subset(data_lib.load_dataset(config.dataset, None if data_dir is None else str(data_dir)),
                    config)
  task.check_dataset(dataset)
  n_train = len(dataset.x_train)
  steps_per_epoch = n_train // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"config.batch_size={config.batch_size} is larger than the {n_train} training "
                     f"examples of {dataset.name!r}")
  total_steps = config.num_epochs * steps_per_epoch

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ckpt = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  resume_step = ckpt.latest_step()
  config_path = workdir / CONFIG_FILE
  if resume_step is not None and config_path.exists():
    _check_resumable(config_path, config)

  model = task.make_model(config, dataset)
  schedule = learning_rate_schedule(config, steps_per_epoch)
  optimizer = optimizers.build_optimizer(config, tasks_lib.make_loss_fn(task, model), schedule)

  root = jax.random.PRNGKey(config.seed)
  init_key, shuffle_key, augment_key, step_key = jax.random.split(root, 4)
  # Data parallel: the training set replicated, test batches and training batches split.
  x_train, y_train = parallel.put_replicated((dataset.x_train, dataset.y_train), mesh)
  test_batches = _eval_batches(dataset.x_test, dataset.y_test, config.eval_batch_size,
                               parallel.num_shards(mesh))
  test_x, test_y, test_mask = parallel.put_split(test_batches, mesh, axis=1)
  batch_size = config.batch_size

  @jax.jit
  def permutation(epoch):
    return jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n_train)

  @jax.jit
  def get_batch(x, y, perm, index, step):
    idx = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
    xb, yb = jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)
    inputs = task.train_inputs(jax.random.fold_in(augment_key, step), xb)
    batch = parallel.split_batch({"inputs": inputs, "targets": task.targets(xb, yb)}, mesh)
    return batch, jax.random.fold_in(step_key, step)

  eval_batch = tasks_lib.make_eval_fn(task, model)

  @jax.jit
  def evaluate(params, model_state, xs, ys, masks):
    def body(totals, batch):
      sums = eval_batch(params, model_state, *batch)
      return jax.tree.map(jnp.add, totals, sums), None
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(eval_batch, params, model_state,
                                                         xs[0], ys[0], masks[0]))
    totals, _ = jax.lax.scan(body, zeros, (xs, ys, masks))
    count = totals.pop("count")
    return {f"test_{k}": v / count for k, v in totals.items()}

  def batch_at(step, perm):
    return get_batch(x_train, y_train, perm, np.int32(step % steps_per_epoch), np.int32(step))

  first_batch, first_rng = batch_at(0, permutation(0))
  params, model_state = parallel.put_replicated(jax.jit(
      lambda k, x: tasks_lib.init_model(model, k, x))(init_key, first_batch["inputs"]), mesh)
  num_params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
  opt_state = optimizer.init(params, model_state, first_rng, first_batch)
  tracker, update_tracker = _make_tracker(config, opt_state)
  state = TrainState(params, model_state, opt_state, tracker)

  step, wall_offset = 0, 0.0
  # Several processes: process 0 alone writes the run's files and shows progress.
  primary = parallel.is_primary()
  if resume_step is not None:
    state, meta = ckpt.restore(resume_step, state)
    step, wall_offset = int(meta["step"]), float(meta["wall_time"])
    if primary:
      logging.info("Resuming %s from the checkpoint at step %d", workdir, step)
  if primary:
    _write_json(config_path, {
        **config.to_dict(), "hardware": describe_hardware(), "num_params": num_params,
        "steps_per_epoch": steps_per_epoch, "dataset_source": dataset.source,
        "num_train": n_train, "num_test": len(dataset.x_test), "jax_version": jax.__version__,
        "command": " ".join(sys.argv)})
  writer = metrics_lib.MetricWriter(workdir, resume_step=None if resume_step is None else step,
                                    enabled=primary)
  summary = {r_k: r_v for r in metrics_lib.read_records(writer.path) for r_k, r_v in r.items()}

  start = time.time()
  wall = lambda: wall_offset + time.time() - start  # noqa: E731
  epoch_of = lambda s: -(-s // steps_per_epoch)  # noqa: E731  (1-based epoch of step s)
  params, model_state, opt_state, tracker = state

  def save(at_step):
    ckpt.save(at_step, TrainState(params, model_state, opt_state, tracker),
              {"step": at_step, "wall_time": wall(), "epoch": epoch_of(at_step)})

  pending, tracker_scalars = [], None
  timed_steps, interval_start, compiled, compile_time = 0, time.time(), False, None

  def raise_if_nonfinite(host, last_step):
    bad = _first_nonfinite(host, last_step - len(host) + 1)
    if bad is None:
      return
    bad_step, names, values = bad
    raise NonFiniteError(
        f"training stopped: {' and '.join(names)} became non-finite at step {bad_step} "
        f"(epoch {epoch_of(bad_step)}): loss={float(values['loss'])}, "
        f"grad_norm={float(values['grad_norm'])}, learning rate "
        f"{float(schedule(bad_step - 1)):g} (config.learning_rate={config.learning_rate:g}, "
        f"optimizer {config.optimizer}). Lower the learning rate (--config.learning_rate) or "
        f"check the data; the checkpoints in {ckpt.directory} were not updated.")

  def log(host, evaluate_now):
    """Writes the record of the steps in ``host`` (then raises if one was not finite)."""
    elapsed = time.time() - interval_start
    record = {(k if k == "grad_norm" else f"train_{k}"): v for k, v in _host_means(host).items()}
    record["learning_rate"] = float(schedule(step - 1))
    if timed_steps:
      record["step_time"] = elapsed / timed_steps
      record["examples_per_sec"] = batch_size * timed_steps / elapsed
    if compile_time is not None:
      record["compile_time"] = compile_time
    healthy = _first_nonfinite(host, step) is None
    if evaluate_now and healthy:
      record.update({k: float(v) for k, v in
                     evaluate(params, model_state, test_x, test_y, test_mask).items()})
    if tracker_scalars is not None:
      record.update({k: float(v) for k, v in jax.device_get(tracker_scalars).items()})
    summary.update(writer.write(step, epoch_of(step), wall(), record))
    raise_if_nonfinite(host, step)
    postfix = {"loss": f"{record['train_loss']:.4g}"}
    if "examples_per_sec" in record:
      postfix["ex/s"] = f"{record['examples_per_sec']:.0f}"
    bar.set_postfix(postfix)
    if evaluate_now and primary:
      logging.info("epoch %d/%d step %d: %s", epoch_of(step), config.num_epochs, step,
                   ", ".join(f"{k}={v:.4g}" for k, v in record.items()))

  bar = tqdm.tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
                  disable=None if primary else True,
                  desc=f"{config.task}/{config.dataset}/{config.optimizer}")
  try:
    with _StopOnSignal() as stopper:
      while step < total_steps:
        epoch_index = step // steps_per_epoch
        perm = permutation(epoch_index)
        while step < (epoch_index + 1) * steps_per_epoch:
          batch, rng = batch_at(step, perm)
          params, model_state, opt_state, stats = optimizer.step(
              params, model_state, opt_state, rng, batch)
          if update_tracker is not None:
            tracker, tracker_scalars = update_tracker(tracker, opt_state, stats)
          pending.append(stats)
          step += 1
          bar.update(1)
          if not compiled:
            # The first step after (re)starting compiles: keep it out of step_time.
            jax.block_until_ready(stats)
            compiled, compile_time = True, time.time() - interval_start
            interval_start = time.time()
          else:
            timed_steps += 1
          end_of_epoch = step % steps_per_epoch == 0
          if step % config.log_every_steps == 0 or end_of_epoch:
            epoch_done = end_of_epoch and (epoch_of(step) % config.eval_every_epochs == 0
                                           or step == total_steps)
            log(jax.device_get(pending), epoch_done)
            pending, timed_steps, compile_time = [], 0, None
            interval_start = time.time()
          # A signal may reach one process, or each at another step: all stop at the same one
          # (with one process this is stopper.signum).
          signum = parallel.max_over_processes(stopper.signum or 0) or None
          if step % config.checkpoint_every_steps == 0 or step == total_steps or signum:
            saving_start = time.time()
            raise_if_nonfinite(jax.device_get(pending), step)
            save(step)
            interval_start += time.time() - saving_start  # saving is not step time
          if signum:
            name = signal.Signals(signum).name
            raise Interrupted(f"stopped by {name} at step {step}; checkpoint saved in "
                              f"{ckpt.directory}. Run the same command again to resume.",
                              signum, step)
    if resume_step is not None and resume_step >= total_steps and primary:
      logging.info("%s already finished (step %d of %d)", workdir, resume_step, total_steps)
  finally:
    bar.close()
    writer.close()
    ckpt.close()
  summary.pop("wall_time", None)
  return RunResult(params=params, model_state=model_state, summary=summary, workdir=workdir)
