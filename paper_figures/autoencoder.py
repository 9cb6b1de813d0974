"""Figure 3: autoencoder training loss against iterations and wall-clock time, one column per data set."""

from __future__ import annotations

import pathlib
from typing import Sequence

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
  """Training loss per data set against iterations and time.

  One column per data set, iterations on top and time below (the paper's layout); a single
  data set is drawn as one row (iterations | time) so the figure is as wide as its legend.
  The time is that of :func:`plots.time_axis` (training steps, log scale when the optimizers'
  speeds differ).

  Returns:
    (figure, missing): ``missing`` names optimizers whose runs never logged train_loss.
  """
  datasets = sorted({r.dataset for r in runs}, key=_dataset_key)
  time_axis = plots.time_axis(runs)
  notes = ["Mean over seeds, ±1 std shaded; training loss: mean over the batches since the "
           "previous record (one every log_every_steps)."]
  notes += plots.time_notes(runs)
  if len(datasets) == 1:
    fig, panels, grid = plots.figure_with_notes(1, 2, (7.6, 3.6), notes)
    axes = grid.reshape(2, 1)  # [iterations, time] x [data set]
  else:
    fig, panels, axes = plots.figure_with_notes(
        2, len(datasets), (3.3 * len(datasets) + 0.6, 5.6), notes)
  missing = []
  for col, dataset in enumerate(datasets):
    by_optimizer = plots.group_by_optimizer([r for r in runs if r.dataset == dataset])
    for row, (x_axis, scale) in enumerate((("x", 1.0), (time_axis.attr, time_axis.divisor))):
      ax = axes[row, col]
      absent = plots.draw_metric(ax, by_optimizer, series.step_curve, "train_loss", x_axis, scale)
      if row == 0:
        ax.set_xlabel("iteration")
        missing.extend(f"{dataset}/{o}: train_loss not logged" for o in absent)
      else:
        plots.apply_time_axis(ax, time_axis)
      ax.set_ylabel(style.loss_label(TASK, dataset, "training"))
      if row == 0:
        ax.set_title(style.dataset_name(dataset))
  fig.suptitle(title)
  plots.figure_legend(panels, axes)
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
    product.notes.extend(plots.time_notes(group, for_summary=True))
    products.append(product)
  return products
