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
  * spread over seeds is the sample standard deviation (ddof=1).
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
  """

  x: np.ndarray
  wall: np.ndarray
  y: np.ndarray


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
                 "compiles one per kind of step) stay in the curves")
  for run, clock in clocks:
    if clock.restarts:
      notes.append(f"{run.path / runs_lib.METRICS_FILE}: wall_time goes back at line(s) "
                   f"{', '.join(map(str, clock.restarts))} (resumed run?); "
                   "continued from the previous value")
  return notes


def _points(run: runs_lib.Run, metric: str, x_key: str):
  wall = wall_clock(run).seconds
  scale = metric_scale(run, metric)
  for record, t in zip(run.records, wall):
    value = record.get(metric)
    if runs_lib._is_number(value):
      yield float(record[x_key]), float(t), float(value) * scale


def epoch_curve(run: runs_lib.Run, metric: str) -> Curve | None:
  """``metric`` against epochs; values logged several times in one epoch are averaged.

  The wall time of an epoch is that of its last record. Returns None when the
  run never logged ``metric``.
  """
  groups: dict[float, list[tuple[float, float]]] = {}
  for epoch, t, value in _points(run, metric, "epoch"):
    groups.setdefault(epoch, []).append((t, value))
  if not groups:
    return None
  x = np.array(sorted(groups))
  wall = np.array([max(t for t, _ in groups[e]) for e in x])
  y = np.array([np.mean([v for _, v in groups[e]]) for e in x])
  return Curve(x=x, wall=wall, y=y)


def step_curve(run: runs_lib.Run, metric: str) -> Curve | None:
  """``metric`` against steps (iterations); a step logged twice keeps its later value.

  Returns None when the run never logged ``metric``.
  """
  by_step: dict[float, tuple[float, float]] = {}
  for step, t, value in _points(run, metric, "step"):
    by_step[step] = (t, value)
  if not by_step:
    return None
  x = np.array(sorted(by_step))
  return Curve(x=x, wall=np.array([by_step[s][0] for s in x]),
               y=np.array([by_step[s][1] for s in x]))


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
