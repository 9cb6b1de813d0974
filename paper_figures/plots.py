"""Drawing helpers shared by the figures: mean line and shaded spread over seeds per optimizer."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from paper_figures import runs as runs_lib
from paper_figures import series
from paper_figures import style

# (divisor, unit) by the longest time on the axis.
_TIME_UNITS = ((2 * 3600.0, 3600.0, "h"), (120.0, 60.0, "min"), (0.0, 1.0, "s"))


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


def draw_band(ax, band: series.Band, optimizer_style: style.OptimizerStyle,
              x_scale: float = 1.0) -> None:
  """Mean line and, where at least two seeds reach it, a mean +- std shading."""
  x = band.x / x_scale
  ax.plot(x, band.mean, color=optimizer_style.color, linestyle=optimizer_style.linestyle,
          label=optimizer_style.name, marker="o" if x.size == 1 else None, markersize=3)
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
    x_axis: "x" (epochs or steps) or "wall" (seconds since start).
    x_scale: divisor of the x values (time unit).

  Returns:
    The optimizers that had runs but never logged ``metric``.
  """
  absent = []
  values = []
  for optimizer, runs in by_optimizer.items():
    curves = [c for c in (curve_fn(run, metric) for run in runs) if c is not None]
    if not curves:
      absent.append(optimizer)
      continue
    band = series.seed_band([(getattr(c, x_axis), c.y) for c in curves])
    draw_band(ax, band, style.optimizer_style(optimizer, block_size_of(runs)), x_scale)
    values.append(band.mean[np.isfinite(band.mean)])
  finite = np.concatenate(values) if values else np.zeros(0)
  if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
    ax.set_yscale("log")
  if not values:
    ax.text(0.5, 0.5, f"{metric} not logged", transform=ax.transAxes, ha="center",
            va="center", color="0.4")
  return absent


def max_wall_time(runs: Sequence[runs_lib.Run]) -> float:
  """The longest wall-clock time (s) of any run."""
  return max((float(series.wall_clock(r).seconds.max()) for r in runs), default=0.0)


def wall_time_label(runs: Sequence[runs_lib.Run], unit: str) -> str:
  """Axis label of the wall-clock axes; says when logged compilation time was taken out."""
  excluded = any(series.wall_clock(r).compile_seconds > 0 for r in runs)
  return f"wall-clock time{', compilation excluded' if excluded else ''} ({unit})"


def figure_legend(fig, axes) -> None:
  """One legend for the whole figure below the panels, from the first axes that has each label."""
  handles = {}
  for ax in np.ravel(axes):
    for handle, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, handle)
  if handles:
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=min(len(handles), 8), frameon=False)
