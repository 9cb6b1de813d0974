"""Drawing helpers shared by the figures: mean line and shaded spread over seeds per optimizer."""

from __future__ import annotations

import math
import textwrap
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
from matplotlib import pyplot as plt

from paper_figures import runs as runs_lib
from paper_figures import series
from paper_figures import style

# (divisor, unit) by the longest time on the axis.
_TIME_UNITS = ((2 * 3600.0, 3600.0, "h"), (120.0, 60.0, "min"), (0.0, 1.0, "s"))
# A time axis is logarithmic when the slowest optimizer takes this many times as long as the
# fastest: on a linear axis the fast ones would share its first few percent.
LOG_TIME_RATIO = 5.0
# Legend entries per row: about this many inches per entry plus 0.05 in per character (7 pt).
_LEGEND_ENTRY_INCHES, _LEGEND_CHAR_INCHES = 0.5, 0.05
# What the time in training steps leaves out (written under the figures that draw it).
TRAIN_TIME_NOTE = ("Time in training steps: the logged step_time summed over the steps; evaluation, "
                   "logging, checkpoints and the first step's compilation are left out.")


def time_unit(max_seconds: float) -> tuple[float, str]:
  """(divisor, unit name) so that wall-clock axes show s, min or h."""
  for threshold, divisor, unit in _TIME_UNITS:
    if max_seconds >= threshold:
      return divisor, unit
  return 1.0, "s"


def group_by_optimizer(runs: Sequence[runs_lib.Run]) -> dict[str, list[runs_lib.Run]]:
  """Runs per optimizer, optimizers in the paper's order, runs in seed order."""
  groups: dict[str, list[runs_lib.Run]] = {}
  for run in sorted(runs, key=lambda r: (style.optimizer_sort_key(r.optimizer), r.seed)):
    groups.setdefault(run.optimizer, []).append(run)
  return groups


def block_size_of(runs: Sequence[runs_lib.Run]) -> int | None:
  """The tau shared by all runs, None when absent or not shared."""
  sizes = {r.block_size() for r in runs}
  return sizes.pop() if len(sizes) == 1 else None


class TimeAxis(NamedTuple):
  """The time axis of a figure's lower row.

  Attributes:
    attr: the :class:`series.Curve` field drawn: "train" (time in training steps, from the
      logged ``step_time``) when every run has it, else "wall" (wall-clock time).
    divisor: seconds per ``unit``.
    unit: "s", "min" or "h".
    log: a logarithmic axis (the optimizers' total times differ by ``LOG_TIME_RATIO`` or more).
    label: the axis label.
  """

  attr: str
  divisor: float
  unit: str
  log: bool
  label: str


def _run_seconds(run: runs_lib.Run, attr: str) -> float:
  clock = series.train_clock(run) if attr == "train" else series.wall_clock(run).seconds
  return float(clock[-1]) if clock is not None and clock.size else 0.0


def time_axis(runs: Sequence[runs_lib.Run]) -> TimeAxis:
  """The time axis for ``runs``: what it measures, its unit and whether it is logarithmic."""
  attr = "train" if runs and all(series.train_clock(r) is not None for r in runs) else "wall"
  totals: dict[str, list[float]] = {}
  for run in runs:
    totals.setdefault(run.optimizer, []).append(_run_seconds(run, attr))
  means = [float(np.mean(t)) for t in totals.values()]
  divisor, unit = time_unit(max(means, default=0.0))
  log = bool(means) and min(means) > 0 and max(means) >= LOG_TIME_RATIO * min(means)
  scale = ", log scale" if log else ""
  if attr == "train":
    label = f"time in training steps ({unit}{scale})"
  else:
    label = wall_time_label(runs, unit, log)
  return TimeAxis(attr=attr, divisor=divisor, unit=unit, log=log, label=label)


def time_notes(runs: Sequence[runs_lib.Run], *, for_summary: bool = False) -> list[str]:
  """What the time axis of ``runs`` measures and what in it is not what it seems.

  Args:
    runs: the runs of one figure.
    for_summary: also the wall-clock corrections made to each run (``figures.md``; too
      long for the foot of a figure).
  """
  notes = [TRAIN_TIME_NOTE] if time_axis(runs).attr == "train" else []
  if for_summary and not notes:
    notes += series.wall_clock_notes(runs)
  return notes + series.slow_start_notes(runs, lambda o: style.optimizer_style(o).name)


def apply_time_axis(ax, axis: TimeAxis) -> None:
  """Sets the label and, for a logarithmic axis, the scale of a time axis."""
  ax.set_xlabel(axis.label)
  if axis.log:
    ax.set_xscale("log")


def draw_band(ax, band: series.Band, optimizer_style: style.OptimizerStyle,
              x_scale: float = 1.0, marker_offset: float = 0.0) -> None:
  """Mean line and, where at least two seeds reach it, a mean +- std shading.

  The optimizer's marker is drawn every 0.2 of the axes diagonal, starting at
  ``marker_offset`` (different per optimizer, so that markers of close curves do not sit on
  each other); a single point is drawn as its marker (a circle when it has none).
  """
  x = band.x / x_scale
  marker = optimizer_style.marker or ("o" if x.size == 1 else None)
  ax.plot(x, band.mean, color=optimizer_style.color, linestyle=optimizer_style.linestyle,
          label=optimizer_style.name, marker=marker, markersize=3.5,
          markevery=None if x.size == 1 else (marker_offset, 0.2))
  spread = band.count > 1
  if spread.any():
    ax.fill_between(x, band.mean - band.std, band.mean + band.std, where=spread,
                    color=optimizer_style.color, alpha=0.18, linewidth=0)


def draw_metric(ax, by_optimizer: Mapping[str, Sequence[runs_lib.Run]],
                curve_fn: Callable[[runs_lib.Run, str], series.Curve | None], metric: str,
                x_axis: str, x_scale: float = 1.0) -> list[str]:
  """Draws ``metric`` of every optimizer on ``ax``.

  Args:
    ax: matplotlib axes.
    by_optimizer: runs per optimizer (one per seed).
    curve_fn: :func:`series.epoch_curve` or :func:`series.step_curve`.
    metric: the metric name in the records.
    x_axis: "x" (epochs or steps), "train" (time in training steps) or "wall" (seconds since
      start); against time the seeds are averaged at equal steps
      (:func:`series.seed_band_in_time`).
    x_scale: divisor of the x values (time unit).

  Returns:
    The optimizers that had runs but never logged ``metric``.
  """
  absent = []
  values = []
  for i, (optimizer, runs) in enumerate(by_optimizer.items()):
    curves = [c for c in (curve_fn(run, metric) for run in runs) if c is not None]
    if not curves:
      absent.append(optimizer)
      continue
    if x_axis == "x":
      band = series.seed_band([(c.x, c.y) for c in curves])
    else:
      band = series.seed_band_in_time([(c.x, getattr(c, x_axis), c.y) for c in curves])
    draw_band(ax, band, style.optimizer_style(optimizer, block_size_of(runs)), x_scale,
              marker_offset=0.2 * ((0.37 * i) % 1.0))
    values.append(band.mean[np.isfinite(band.mean)])
  finite = np.concatenate(values) if values else np.zeros(0)
  if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
    ax.set_yscale("log")
  if not values:
    ax.text(0.5, 0.5, f"{metric} not logged", transform=ax.transAxes, ha="center",
            va="center", color="0.4")
  return absent


def wall_time_label(runs: Sequence[runs_lib.Run], unit: str, log: bool = False) -> str:
  """Axis label of the wall-clock axes; says when logged compilation time was taken out."""
  excluded = any(series.wall_clock(r).compile_seconds > 0 for r in runs)
  return (f"wall-clock time{', compilation excluded' if excluded else ''} "
          f"({unit}{', log scale' if log else ''})")


def legend_columns(labels: Sequence[str], width_inches: float) -> int:
  """Legend columns: as many entries as fit side by side in ``width_inches``, then spread so
  that the rows are equally long (8 entries that fit 7 a row: 2 rows of 4)."""
  if not labels:
    return 1
  entry = _LEGEND_ENTRY_INCHES + _LEGEND_CHAR_INCHES * max(len(label) for label in labels)
  fit = max(1, min(len(labels), int(width_inches // entry)))
  rows = math.ceil(len(labels) / fit)
  return math.ceil(len(labels) / rows)


def figure_legend(fig, axes, last: Sequence[str] = ()) -> None:
  """One legend for the whole figure (or subfigure) below the panels, from the first axes that
  has each label, the labels in ``last`` (reference lines) after the optimizers; as many
  columns as fit the figure's width."""
  handles = {}
  for ax in np.ravel(axes):
    for handle, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, handle)
  handles = dict(sorted(handles.items(), key=lambda item: item[0] in last))  # stable
  if handles:
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=legend_columns(list(handles), fig.bbox.width / fig.dpi),
               frameon=False)


# The notes at the foot of a figure: font size (pt), line spacing, characters per inch of width.
_NOTE_POINTS, _NOTE_SPACING, _NOTE_CHARS_PER_INCH = 6.5, 1.3, 17


def figure_with_notes(nrows: int, ncols: int, figsize: tuple[float, float],
                      notes: Sequence[str]):
  """A figure of ``nrows`` x ``ncols`` panels with ``notes`` written at its foot.

  The panels (and the legend that :func:`figure_legend` puts under them) live in a subfigure;
  the notes, wrapped to the figure's width, in a second one below it, as tall as their lines,
  so the constrained layout never draws one over the other.

  Args:
    nrows, ncols: the panels.
    figsize: (width, height) of the panels' part, in inches.
    notes: sentences the reader needs to read the figure (what is averaged, what a time
      includes); none: no foot.

  Returns:
    (figure, panels subfigure, [nrows, ncols] axes).
  """
  width, height = figsize
  text = "\n".join(textwrap.fill(note, max(40, int(width * _NOTE_CHARS_PER_INCH)))
                   for note in notes)
  foot = ((text.count("\n") + 1) * _NOTE_POINTS * _NOTE_SPACING / 72 + 0.1) if notes else 0.0
  fig = plt.figure(figsize=(width, height + foot), layout="constrained")
  panels = fig
  if notes:
    panels, bottom = fig.subfigures(2, 1, height_ratios=[height, foot])
    bottom.text(0.01, 1.0, text, ha="left", va="top", fontsize=_NOTE_POINTS, color="0.25",
                linespacing=_NOTE_SPACING)
  return fig, panels, panels.subplots(nrows, ncols, squeeze=False)
