"""Figure 3: autoencoder training loss against iterations and wall-clock time, one column per data set."""

from __future__ import annotations

import pathlib
from typing import Sequence

from matplotlib import pyplot as plt

from paper_figures import plots
from paper_figures import report
from paper_figures import runs as runs_lib
from paper_figures import series
from paper_figures import style

TASK = "autoencoder"
# FACES and CURVES are the paper's; MNIST and digits are drawn when present.
PAPER_DATASETS = ("faces", "curves")
DATASET_ORDER = ("faces", "curves", "mnist", "mnist5k", "digits")
# The paper leaves AdaBlock out of Figure 3 (too slow); mbag_ema is not in the paper.
EXPECTED_OPTIMIZERS = ("adagrad", "adam", "kfac", "shampoo", "mbag", "mbag_n")


def _dataset_key(dataset: str) -> tuple[int, str]:
  order = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
  return order, dataset


def plot_figure3(runs: Sequence[runs_lib.Run], title: str):
  """Training loss per data set (columns) against iterations (top) and wall-clock time (bottom).

  Returns:
    (figure, missing): ``missing`` names optimizers whose runs never logged train_loss.
  """
  datasets = sorted({r.dataset for r in runs}, key=_dataset_key)
  divisor, unit = plots.time_unit(plots.max_wall_time(runs))
  fig, axes = plt.subplots(2, len(datasets), figsize=(2.9 * len(datasets) + 0.6, 5.0),
                           layout="constrained", squeeze=False)
  missing = []
  for col, dataset in enumerate(datasets):
    by_optimizer = plots.group_by_optimizer([r for r in runs if r.dataset == dataset])
    for row, (x_axis, x_label, scale) in enumerate(
        (("x", "iteration", 1.0), ("wall", plots.wall_time_label(runs, unit), divisor))):
      ax = axes[row, col]
      absent = plots.draw_metric(ax, by_optimizer, series.step_curve, "train_loss", x_axis, scale)
      ax.set_xlabel(x_label)
      ax.set_ylabel("training loss")
      if row == 0:
        ax.set_title(style.dataset_name(dataset))
        missing.extend(f"{dataset}/{o}: train_loss not logged" for o in absent)
  fig.suptitle(title)
  plots.figure_legend(fig, axes)
  return fig, missing


def build_figure3(runs: Sequence[runs_lib.Run], out_dir: pathlib.Path) -> list[report.Product]:
  """Writes ``figure3_<preset>.png/.pdf`` for each preset of the autoencoder runs."""
  runs = [r for r in runs if r.task == TASK]
  if not runs:
    return [report.Product(title="Figure 3", missing=[
        f"no autoencoder runs (task '{TASK}'): none of {', '.join(PAPER_DATASETS)}"])]
  products = []
  for preset, group, hardware in runs_lib.group_by_preset(runs):
    product = report.Product(title=f"Figure 3 (autoencoders, preset {preset})")
    with style.context():
      fig, missing_metrics = plot_figure3(
          group, f"Figure 3: deep autoencoders, preset {preset}, hardware: {hardware}")
      product.files = style.save(fig, out_dir, f"figure3_{preset}")
    datasets = sorted({r.dataset for r in group}, key=_dataset_key)
    for dataset in datasets:
      by_optimizer = plots.group_by_optimizer([r for r in group if r.dataset == dataset])
      product.used.append(f"{style.dataset_name(dataset)}: " + "; ".join(
          f"{o} seeds {', '.join(str(r.seed) for r in rs)}" for o, rs in by_optimizer.items()))
      product.missing.extend(f"{dataset}: no runs for {o}" for o in EXPECTED_OPTIMIZERS
                             if o not in by_optimizer)
    product.missing.extend(f"no runs on {d}" for d in PAPER_DATASETS if d not in datasets)
    product.missing.extend(missing_metrics)
    if len({r.hardware for r in group}) > 1:
      product.notes.append("runs come from different hardware: wall-clock curves are not comparable")
    product.notes.extend(series.wall_clock_notes(group))
    products.append(product)
  return products
