"""Curves and summary numbers from metric records: per run, then across seeds.

Conventions (documented in docs/experiments.md, "Regenerating the paper's table and figures"):
  * accuracy is shown in percent; a run whose accuracy values are all <= 1 stored
    fractions and is multiplied by 100;
  * ``wall_time`` is seconds since the run started; values above
    ``ABSOLUTE_TIME_THRESHOLD`` are taken as Unix timestamps and measured from
    the run's first record (which then sits at time 0); a clock that
    goes backwards (a resumed run whose clock restarted) is continued from the
    last value before the restart; the JIT compilation a record reports as
    ``compile_time`` (the training loop logs it once per start) is subtracted from
    that record and every later one, so curves show training time, not compile time;
  * ``step_time`` of a record is the mean time of the steps since the previous record, without
    the first step after a (re)start (it compiled: the record with ``compile_time``), evaluation,
    logging and checkpoints (``experiments/periodic.py``, ``StepTimer``); summed over the
    records it is the time spent in training steps (:func:`train_clock`), the time axis of the
    figures when every run logged it;
  * spread over seeds is the sample standard deviation (ddof=1); against time, seeds are
    averaged at equal steps (:func:`seed_band_in_time`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from paper_figures import runs as runs_lib

ACCURACY_METRICS = ("train_accuracy", "test_accuracy")
# 1e8 s is over three years: no run lasts that long, every Unix timestamp since 1973 is larger.
ABSOLUTE_TIME_THRESHOLD = 1e8


class Curve(NamedTuple):
  """One metric of one run.

  Attributes:
    x: [n] float64, epochs or steps (strictly increasing).
    wall: [n] float64, seconds since the start of the run at each point.
    y: [n] float64, the metric (accuracy in percent).
    train: [n] float64, seconds spent in training steps up to each point (:func:`train_clock`),
      or None when the run did not log ``step_time``.
  """

  x: np.ndarray
  wall: np.ndarray
  y: np.ndarray
  train: np.ndarray | None = None


class Band(NamedTuple):
  """Mean and spread of a metric over seeds on a common grid.

  Attributes:
    x: [m] float64 grid (the union of the seeds' points).
    mean: [m] mean over the seeds that reach x.
    std: [m] sample standard deviation over those seeds (NaN where fewer than 2).
    count: [m] int, how many seeds reach x.
  """

  x: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  count: np.ndarray


class FinalAccuracy(NamedTuple):
  """Test accuracy of a run at its last logged evaluation.

  Attributes:
    percent: the accuracy in percent.
    epoch: the epoch of that evaluation, as logged.
    stored_fraction: whether the run stored accuracy as a fraction (converted).
  """

  percent: float
  epoch: float
  stored_fraction: bool


def _finite_values(run: runs_lib.Run, metric: str) -> list[float]:
  return [float(r[metric]) for r in run.records
          if runs_lib._is_number(r.get(metric)) and math.isfinite(r[metric])]


def stores_fractions(run: runs_lib.Run) -> bool:
  """Whether the run's accuracies are fractions: every finite accuracy value is <= 1."""
  values = [v for m in ACCURACY_METRICS for v in _finite_values(run, m)]
  return bool(values) and max(values) <= 1.0


def metric_scale(run: runs_lib.Run, metric: str) -> float:
  """Factor that brings ``metric`` to the unit shown (100 for fractional accuracy, else 1)."""
  return 100.0 if metric in ACCURACY_METRICS and stores_fractions(run) else 1.0


class WallClock(NamedTuple):
  """Wall-clock times of one run's records and what was done to them.

  Attributes:
    seconds: [len(run.records)] float64, seconds since the start of the run.
    unix_time: the file held Unix timestamps (now measured from the first record).
    restarts: 1-based record numbers where the clock went backwards (continued from before).
    compile_seconds: total ``compile_time`` subtracted (0 when the records report none).
  """

  seconds: np.ndarray
  unix_time: bool
  restarts: tuple[int, ...]
  compile_seconds: float = 0.0


def wall_clock(run: runs_lib.Run) -> WallClock:
  """Seconds since the start of the run for each record (see the module docstring)."""
  raw = np.array([float(r["wall_time"]) for r in run.records])
  unix_time = bool(raw.size) and raw.min() > ABSOLUTE_TIME_THRESHOLD
  if unix_time:
    raw = raw - raw[0]
  out = raw.copy()
  offset = 0.0
  restarts = []
  for i in range(1, len(raw)):
    if raw[i] + offset < out[i - 1]:
      offset = out[i - 1] - raw[i]
      restarts.append(i + 1)
    out[i] = raw[i] + offset
  compile_seconds = np.cumsum([float(r["compile_time"]) if runs_lib._is_number(r.get("compile_time"))
                               else 0.0 for r in run.records])
  if compile_seconds.size:
    # Never below the previous record: compilation is excluded, not time reversed.
    out = np.maximum.accumulate(np.maximum(out - compile_seconds, 0.0))
  return WallClock(seconds=out, unix_time=unix_time, restarts=tuple(restarts),
                   compile_seconds=float(compile_seconds[-1]) if compile_seconds.size else 0.0)


def train_clock(run: runs_lib.Run) -> np.ndarray | None:
  """Seconds spent in training steps up to each record, from the logged ``step_time``.

  ``T_k = sum_{j <= k} step_time_j * n_j``, ``n_j = step_j - step_{j-1}`` less 1 for a record
  with ``compile_time`` (the compiling step is not in ``step_time``; after a resume, the steps
  between the record before it and the checkpoint are counted at the resumed interval's rate). Evaluation, logging,
  checkpoints and the first step's compilation are not in it; compilation the loop did not
  see (a second program compiled at a later step) is: :func:`slow_start` finds it.

  Returns:
    [len(run.records)] float64, or None when a record that timed steps has no ``step_time``
    (runs written by another loop): the figures then use :func:`wall_clock`.
  """
  total, previous, out = 0.0, 0, []
  for record in run.records:
    step = int(record["step"])
    timed = max(step - previous - (1 if runs_lib._is_number(record.get("compile_time")) else 0), 0)
    previous = max(previous, step)
    step_time = record.get("step_time")
    if timed:
      if not runs_lib._is_number(step_time) or not math.isfinite(step_time):
        return None
      total += float(step_time) * timed
    out.append(total)
  return np.array(out, dtype=np.float64) if out else None


class SlowStart(NamedTuple):
  """A first timed interval after a (re)start much slower than the run's usual step.

  Attributes:
    first_step, last_step: the steps of the interval (the step after the compiling one, the
      record's step).
    seconds: the interval's time in training steps.
    ratio: its ``step_time`` over the median ``step_time`` of the run's records.
  """

  first_step: int
  last_step: int
  seconds: float
  ratio: float


# A first interval this many times slower than the median step compiled something.
SLOW_START_RATIO = 10.0
# What was measured to cause a slow start (JAX_LOG_COMPILES=1 on the digits autoencoder):
# kfac-jax's step takes "update the curvature now" as a static argument, so its steps with a
# curvature update (every T1, step 1 among them) and without are two programs; the second
# compiles at step 2, after the compilation the loop logs.
_KFAC_JAX_SECOND_PROGRAM = ("kfac-jax compiles a second step program, for its steps without a "
                            "curvature update, at step 2")
SLOW_START_CAUSES = {"kfac": _KFAC_JAX_SECOND_PROGRAM}


def slow_start(run: runs_lib.Run) -> SlowStart | None:
  """The first timed interval after the start if its ``step_time`` is over ``SLOW_START_RATIO``
  times the run's median ``step_time`` (compilation the loop did not log), else None."""
  times = [(i, float(r["step_time"])) for i, r in enumerate(run.records)
           if runs_lib._is_number(r.get("step_time")) and math.isfinite(r["step_time"])]
  if len(times) < 3:
    return None
  median = float(np.median([t for _, t in times]))
  index, first = times[0]
  if median <= 0 or first <= SLOW_START_RATIO * median:
    return None
  record = run.records[index]
  previous = int(run.records[index - 1]["step"]) if index else 0
  compiled = 1 if runs_lib._is_number(record.get("compile_time")) else 0
  timed = int(record["step"]) - previous - compiled
  return SlowStart(first_step=previous + 1 + compiled, last_step=int(record["step"]),
                   seconds=first * timed, ratio=first / median)


def slow_start_notes(runs: Sequence[runs_lib.Run], style_name) -> list[str]:
  """One line per optimizer whose runs start slowly: which steps, how long, and why if known.

  Args:
    runs: the runs of one figure.
    style_name: ``optimizer -> display name``.
  """
  by_optimizer: dict[str, list[SlowStart]] = {}
  for run in runs:
    slow = slow_start(run)
    if slow is not None:
      by_optimizer.setdefault(run.optimizer, []).append(slow)
  notes = []
  for optimizer, slows in by_optimizer.items():
    seconds = [s.seconds for s in slows]
    steps = {(s.first_step, s.last_step) for s in slows}
    where = (f"steps {slows[0].first_step}-{slows[0].last_step}" if len(steps) == 1
             else "its first logged steps")
    took = (f"{min(seconds):.2g}-{max(seconds):.2g} s" if len(seconds) > 1 and
            f"{min(seconds):.2g}" != f"{max(seconds):.2g}" else f"{seconds[0]:.2g} s")
    cause = SLOW_START_CAUSES.get(optimizer, "likely a compilation after step 1, which the "
                                             "training loop does not log")
    notes.append(f"{style_name(optimizer)} starts late: its {where} took {took}, "
                 f"{min(s.ratio for s in slows):.0f}x its usual step time ({cause}); that time "
                 f"is kept ({len(slows)} of {sum(r.optimizer == optimizer for r in runs)} runs).")
  return notes


def wall_clock_notes(runs: Sequence[runs_lib.Run]) -> list[str]:
  """Summary lines about wall-clock corrections made to ``runs`` (empty when none)."""
  clocks = [(run, wall_clock(run)) for run in runs]
  notes = []
  unix = sum(c.unix_time for _, c in clocks)
  if unix:
    notes.append(f"{unix} of {len(runs)} run(s) logged wall_time as Unix time; "
                 "measured from each run's first record")
  compiled = [c.compile_seconds for _, c in clocks if c.compile_seconds > 0]
  if compiled:
    notes.append(f"wall-clock axes exclude JIT compilation ({len(compiled)} of {len(runs)} run(s) "
                 f"logged compile_time, {min(compiled):.3g}-{max(compiled):.3g} s each); that is "
                 "the first step's compilation after each start: programs compiled later (kfac-jax "
                 "compiles a second step program at step 2) stay in the curves")
  for run, clock in clocks:
    if clock.restarts:
      notes.append(f"{run.path / runs_lib.METRICS_FILE}: wall_time goes back at line(s) "
                   f"{', '.join(map(str, clock.restarts))} (resumed run?); "
                   "continued from the previous value")
  return notes


def _points(run: runs_lib.Run, metric: str, x_key: str):
  """(x, wall time, training time or NaN, value) of each record that logged ``metric``."""
  wall = wall_clock(run).seconds
  train = train_clock(run)
  train = np.full(len(run.records), np.nan) if train is None else train
  scale = metric_scale(run, metric)
  for record, t, s in zip(run.records, wall, train):
    value = record.get(metric)
    if runs_lib._is_number(value):
      yield float(record[x_key]), float(t), float(s), float(value) * scale


def _train_or_none(values: np.ndarray) -> np.ndarray | None:
  return None if np.isnan(values).any() else values


def epoch_curve(run: runs_lib.Run, metric: str) -> Curve | None:
  """``metric`` against epochs; values logged several times in one epoch are averaged.

  The wall time of an epoch is that of its last record. Returns None when the
  run never logged ``metric``.
  """
  groups: dict[float, list[tuple[float, float, float]]] = {}
  for epoch, t, s, value in _points(run, metric, "epoch"):
    groups.setdefault(epoch, []).append((t, s, value))
  if not groups:
    return None
  x = np.array(sorted(groups))
  wall = np.array([max(t for t, _, _ in groups[e]) for e in x])
  train = np.array([max(s for _, s, _ in groups[e]) for e in x])
  y = np.array([np.mean([v for _, _, v in groups[e]]) for e in x])
  return Curve(x=x, wall=wall, y=y, train=_train_or_none(train))


def step_curve(run: runs_lib.Run, metric: str) -> Curve | None:
  """``metric`` against steps (iterations); a step logged twice keeps its later value.

  Returns None when the run never logged ``metric``.
  """
  by_step: dict[float, tuple[float, float, float]] = {}
  for step, t, s, value in _points(run, metric, "step"):
    by_step[step] = (t, s, value)
  if not by_step:
    return None
  x = np.array(sorted(by_step))
  return Curve(x=x, wall=np.array([by_step[s][0] for s in x]),
               y=np.array([by_step[s][2] for s in x]),
               train=_train_or_none(np.array([by_step[s][1] for s in x])))


def final_test_accuracy(run: runs_lib.Run) -> FinalAccuracy | None:
  """Test accuracy at the run's last logged evaluation (the record with the largest step).

  Returns None when the run logged no test accuracy.
  """
  evaluated = [r for r in run.records if runs_lib._is_number(r.get("test_accuracy"))]
  if not evaluated:
    return None
  last = max(enumerate(evaluated), key=lambda ir: (ir[1]["step"], ir[0]))[1]
  fraction = stores_fractions(run)
  return FinalAccuracy(percent=float(last["test_accuracy"]) * (100.0 if fraction else 1.0),
                       epoch=float(last["epoch"]), stored_fraction=fraction)


def divergence_step(run: runs_lib.Run) -> int | None:
  """The first step whose training loss was logged non-finite (the run diverged there), or None."""
  bad = [int(r["step"]) for r in run.records
         if "train_loss" in r and not math.isfinite(float(r["train_loss"]))]
  return min(bad) if bad else None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation ``sqrt(sum (v - mean)^2 / (n - 1))``; std is NaN for n < 2."""
  values = np.asarray(values, dtype=np.float64)
  if values.size == 0:
    return math.nan, math.nan
  std = float(values.std(ddof=1)) if values.size > 1 else math.nan
  return float(values.mean()), std


def seed_band(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> Band:
  """Mean and spread over seeds of curves (x_s, y_s) sampled at different x.

  Each seed is linearly interpolated onto the union of all x, only inside its own
  range [min x_s, max x_s]; the mean at a point is over the seeds that reach it.

  Args:
    curves: per seed, (x, y) with x increasing.

  Returns:
    A :class:`Band`.
  """
  grid = np.unique(np.concatenate([np.asarray(x, dtype=np.float64) for x, _ in curves]))
  values = np.full((len(curves), grid.size), np.nan)
  for i, (x, y) in enumerate(curves):
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    x, y = x[order], np.asarray(y, dtype=np.float64)[order]
    inside = (grid >= x[0]) & (grid <= x[-1])
    values[i, inside] = np.interp(grid[inside], x, y)
  reached = np.stack([(grid >= np.min(x)) & (grid <= np.max(x)) for x, _ in curves])
  count = reached.sum(axis=0)
  # A diverged seed holds NaN inside its range; it still counts, so the mean is NaN there.
  mean = np.where(reached, values, 0.0).sum(axis=0) / count
  deviation = np.where(reached, values - mean, 0.0)
  with np.errstate(invalid="ignore", divide="ignore"):
    std = np.where(count > 1, np.sqrt((deviation ** 2).sum(axis=0) / (count - 1)), np.nan)
  return Band(x=grid, mean=mean, std=std, count=count)


def seed_band_in_time(curves: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Band:
  """Mean and spread over seeds against time, the seeds lined up at equal steps (or epochs).

  The band is :func:`seed_band` over x (steps or epochs), and each of its points is placed at
  the mean time at which the seeds that reach it got there. A band over the union of the
  seeds' *times* instead would jump up wherever a seed that started later (a slower
  compilation) enters the mean with its first, high loss: a saw-tooth that no seed has.

  Args:
    curves: per seed, (x, time, y) with x and time increasing.

  Returns:
    A :class:`Band` whose ``x`` is the mean time (kept non-decreasing where seeds of different
    lengths leave the mean).
  """
  band = seed_band([(x, y) for x, _, y in curves])
  times = seed_band([(x, t) for x, t, _ in curves])
  return band._replace(x=np.maximum.accumulate(times.mean))
