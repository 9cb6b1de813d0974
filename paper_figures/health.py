"""MBAG's numerical health over training: ``opt/root_error`` and ``opt/min_denominator``.

The training loop logs the optimizer's own scalars as ``opt/<name>`` (for MBAG its
``diagnostics``). This figure draws two of them against steps for the MBAG runs (``mbag``,
``mbag_ema``, ``mbag_n``), one row per task and data set, one figure per preset:

- ``root_error``: ``max_blocks ||I - Y X||_F`` of the last root, about the worst relative error
  of the root over eigen-directions; about 1 or more means some direction has not converged
  (the paper's 5 Newton-Schulz steps, see ``docs/numerics.md``). MBAG-N has no roots.
- ``min_denominator``: the smallest Sherman-Morrison denominator ``1 + g^T H g`` of the last
  step; below 1 would mean H lost definiteness.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

from matplotlib import pyplot as plt

from paper_figures import plots
from paper_figures import report
from paper_figures import runs as runs_lib
from paper_figures import series
from paper_figures import style

OPTIMIZERS = ("mbag", "mbag_ema", "mbag_n")
# metric -> (axis label, reference line and what crossing it means)
METRICS = {
    "opt/root_error": ("root error, max over blocks", 1.0, "~1: a direction not converged"),
    "opt/min_denominator": ("smallest 1 + g^T H g", 1.0, "< 1: H not positive definite"),
}
MIN_SPAN = 0.01  # the y axis shows at least the reference +- 1 %


def _logged(run: runs_lib.Run) -> bool:
  return any(metric in record for record in run.records for metric in METRICS)


def plot_health(runs: Sequence[runs_lib.Run], title: str):
  """One row per (task, data set), one column per metric, against steps."""
  rows = sorted({(r.task, r.dataset) for r in runs})
  fig, axes = plt.subplots(len(rows), len(METRICS), figsize=(3.2 * len(METRICS) + 0.6,
                                                              2.5 * len(rows) + 0.9),
                           layout="constrained", squeeze=False)
  for i, (task, dataset) in enumerate(rows):
    by_optimizer = plots.group_by_optimizer([r for r in runs if (r.task, r.dataset) == (task, dataset)])
    for j, (metric, (label, reference, meaning)) in enumerate(METRICS.items()):
      ax = axes[i, j]
      plots.draw_metric(ax, by_optimizer, series.step_curve, metric, "x")
      ax.axhline(reference, color="0.5", linewidth=0.8, linestyle=":", label=meaning)
      # Values within 1e-6 of the reference would otherwise be drawn as "+1" and an offset
      # ("1e-6+1"): keep plain tick labels and at least +-1 % around the reference in view.
      low, high = ax.get_ylim()
      ax.set_ylim(min(low, reference * (1 - MIN_SPAN)), max(high, reference * (1 + MIN_SPAN)))
      ax.ticklabel_format(axis="y", useOffset=False)
      ax.set_xlabel("iteration")
      ax.set_ylabel(label)
      ax.set_title(f"{task} / {style.dataset_name(dataset)}")
  fig.suptitle(title)
  plots.figure_legend(fig, axes, last=[meaning for _, _, meaning in METRICS.values()])
  return fig


def build_health_figure(runs: Sequence[runs_lib.Run], out_dir: pathlib.Path) -> list[report.Product]:
  """Writes ``mbag_health_<preset>.png/.pdf`` for each preset of the MBAG runs that logged ``opt/``."""
  mbag_runs = [r for r in runs if r.optimizer in OPTIMIZERS]
  logged = [r for r in mbag_runs if _logged(r)]
  if not logged:
    reason = ("no MBAG runs" if not mbag_runs else
              f"{len(mbag_runs)} MBAG run(s), none logged {' or '.join(METRICS)} (written by "
              f"the training loop since it logs the optimizer's own metrics)")
    return [report.Product(title="MBAG numerical health", missing=[reason])]
  products = []
  for preset, group, hardware in runs_lib.group_by_preset(logged):
    product = report.Product(title=f"MBAG numerical health (preset {preset})")
    with style.context():
      fig = plot_health(group, f"MBAG root error and Sherman-Morrison denominator, preset "
                               f"{preset}, hardware: {hardware}")
      product.files = style.save(fig, out_dir, f"mbag_health_{preset}")
    for (task, dataset) in sorted({(r.task, r.dataset) for r in group}):
      by_optimizer = plots.group_by_optimizer(
          [r for r in group if (r.task, r.dataset) == (task, dataset)])
      product.used.append(f"{task} / {style.dataset_name(dataset)}: " + "; ".join(
          f"{o} seeds {', '.join(str(r.seed) for r in rs)}" for o, rs in by_optimizer.items()))
    skipped = [r for r in mbag_runs if r.preset == preset and not _logged(r)]
    if skipped:
      product.notes.append(f"{len(skipped)} MBAG run(s) of this preset logged no opt/ metrics "
                           f"(written before the loop logged them) and are left out")
    products.append(product)
  return products
