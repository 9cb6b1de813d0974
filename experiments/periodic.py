"""The training loop's periodic actions, each small and driven by the step counter.

``step`` is the number of optimizer steps done (1 after the first step). Every action says
when it is due (:meth:`due`) and does one thing:

- :class:`StepTimer`: step time and examples per second between records, the first step
  after (re)starting (compilation) reported once as ``compile_time``, pauses excluded;
- :class:`Evaluate`: the test metrics, at the end of every ``eval_every_epochs``-th epoch,
  every ``eval_every_steps`` steps (when > 0) and at the end of the run;
- :class:`LogMetrics`: one record (``metrics.jsonl`` and TensorBoard) every
  ``log_every_steps`` and at the end of each epoch: training stats averaged since the last
  record, learning rate, timing, the optimizer's own scalars (``opt/...``) and what other
  actions add (test metrics, Theorem 1's terms);
- :class:`Checkpoint`: every ``checkpoint_every_steps``, at the end and when stopped (the
  metric files flushed first);
- :class:`StopOnSignal`: records SIGINT / SIGTERM; with several processes they agree on it
  at the log interval (one collective per record, none per step).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from experiments import parallel


def first_nonfinite(pending: Sequence[Mapping[str, Any]], first_step: int):
  """``(step, names, stats)`` of the first step in ``pending`` whose loss or gradient norm is
  not finite (``pending[i]`` is step ``first_step + i``), or None."""
  for i, s in enumerate(pending):
    bad = [k for k in ("loss", "grad_norm") if not math.isfinite(float(s[k]))]
    if bad:
      return first_step + i, bad, s
  return None


class StepTimer:
  """Seconds per step between records, without compilation, evaluation and checkpointing."""

  def __init__(self):
    self._start = time.time()
    self._steps = 0
    self._compiled = False
    self._compile_time = None

  def step_done(self, stats: Any) -> None:
    """Counts a step; the first one after (re)starting compiles and is timed on its own."""
    if self._compiled:
      self._steps += 1
      return
    jax.block_until_ready(stats)
    self._compiled, self._compile_time = True, time.time() - self._start
    self._start = time.time()

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside is not step time (checkpointing)."""
    start = time.time()
    try:
      yield
    finally:
      self._start += time.time() - start

  def lap(self, batch_size: int) -> dict[str, float]:
    """``step_time``, ``examples_per_sec`` (and once ``compile_time``) since the last lap; restarts."""
    elapsed = time.time() - self._start
    out = {}
    if self._steps:
      out["step_time"] = elapsed / self._steps
      out["examples_per_sec"] = batch_size * self._steps / elapsed
    if self._compile_time is not None:
      out["compile_time"] = self._compile_time
    self._steps, self._compile_time = 0, None
    return out

  def restart(self) -> None:
    """Starts the next interval now (after a record and its evaluation)."""
    self._start = time.time()


class Evaluate:
  """The test metrics at the end of every ``every_epochs``-th epoch, every ``every_steps`` steps
  (0: never by steps) and at the last step."""

  def __init__(self, evaluate_fn: Callable[..., Mapping[str, Any]], test_batches, *,
               steps_per_epoch: int, every_epochs: int, total_steps: int, every_steps: int = 0):
    self._evaluate = evaluate_fn
    self._batches = test_batches
    self._steps_per_epoch = steps_per_epoch
    self._every_epochs = every_epochs
    self._every_steps = every_steps
    self._total_steps = total_steps

  def due(self, step: int) -> bool:
    if self._every_steps and step % self._every_steps == 0:
      return True
    if step % self._steps_per_epoch:
      return False
    return (step // self._steps_per_epoch) % self._every_epochs == 0 or step == self._total_steps

  def __call__(self, params, model_state) -> dict[str, float]:
    return {k: float(v) for k, v in self._evaluate(params, model_state, *self._batches).items()}


class LogMetrics:
  """Writes one record every ``every_steps`` and at each epoch's end.

  Args:
    writer: the run's :class:`experiments.metrics.MetricWriter`.
    schedule: the learning rate schedule (the record's ``learning_rate`` is the one of its
      last step).
    optimizer_metrics: ``opt_state -> {name: scalar}`` (``Optimizer.metrics``), logged as
      ``opt/<name>``.
    every_steps, steps_per_epoch: when records are due.
  """

  OPTIMIZER_PREFIX = "opt/"
  # Stats logged under their own name; the others (loss, the task's metrics) get "train_".
  UNPREFIXED = ("grad_norm", "objective_grad_norm")

  def __init__(self, writer, schedule, optimizer_metrics, *, every_steps: int,
               steps_per_epoch: int):
    self._writer = writer
    self._schedule = schedule
    self._optimizer_metrics = jax.jit(optimizer_metrics)
    self._every_steps = every_steps
    self._steps_per_epoch = steps_per_epoch

  def due(self, step: int) -> bool:
    return step % self._every_steps == 0 or step % self._steps_per_epoch == 0

  def record(self, step: int, pending: Sequence[Mapping[str, Any]], opt_state,
             timing: Mapping[str, float]) -> dict[str, Any]:
    """The record of the steps in ``pending`` (host values), ending at ``step``."""
    means = {k: float(np.mean([float(s[k]) for s in pending])) for k in pending[0]}
    record = {(k if k in self.UNPREFIXED else f"train_{k}"): v for k, v in means.items()}
    record["learning_rate"] = float(self._schedule(step - 1))
    record.update(timing)
    opt = jax.device_get(self._optimizer_metrics(opt_state))
    record.update({f"{self.OPTIMIZER_PREFIX}{k}": _number(v) for k, v in opt.items()})
    return record

  def write(self, step: int, epoch: int, wall_time: float, record: Mapping[str, Any]) -> dict:
    return self._writer.write(step, epoch, wall_time, record)


def _number(value) -> int | float:
  value = np.asarray(value)
  return int(value) if np.issubdtype(value.dtype, np.integer) else float(value)


class Checkpoint:
  """Saves the state every ``every_steps``, at the last step, and when asked (a stop signal).

  The metric writer is flushed first (``metrics.jsonl`` and TensorBoard on disk up to the
  checkpoint's step): a checkpoint is only saved when every record before it was written,
  and a writer error leaves the previous checkpoint as the last one.
  """

  def __init__(self, checkpointer, writer, *, every_steps: int, total_steps: int):
    self._checkpointer = checkpointer
    self._writer = writer
    self._every_steps = every_steps
    self._total_steps = total_steps

  def due(self, step: int) -> bool:
    return step % self._every_steps == 0 or step == self._total_steps

  def __call__(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
    self._writer.flush()
    self._checkpointer.save(step, state, dict(meta))


class StopOnSignal(contextlib.AbstractContextManager):
  """Records SIGINT / SIGTERM so the loop can checkpoint and stop between steps.

  A second SIGINT falls through to Python's default (KeyboardInterrupt at once). Handlers are
  only installed in the main thread (signal handlers cannot be set elsewhere).

  Alone, the loop stops at the step after the signal. With several processes a signal may
  reach one process, or each at another step: they agree by a collective
  (``max_over_processes``) at every record (:meth:`agreed` with ``at_log=True``), so all stop
  after the same step, and no step waits for the others.

  Args:
    num_processes: how many JAX processes run the loop (``jax.process_count()``).
    max_over_processes: ``value -> the largest value of every process`` (a collective).
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, num_processes: int | None = None,
               max_over_processes: Callable[[int], int] = parallel.max_over_processes):
    self.signum = None
    self._num_processes = jax.process_count() if num_processes is None else num_processes
    self._max_over_processes = max_over_processes
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

  def agreed(self, at_log: bool) -> int | None:
    """The signal every process stops for after this step, or None to go on."""
    if self._num_processes == 1:
      return self.signum
    if not at_log:
      return None
    return self._max_over_processes(self.signum or 0) or None
