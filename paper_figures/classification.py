"""Table I and Figure 2: image classification (ResNet-56 / CIFAR-10), with a digits fallback.

When no CIFAR-10 run exists, classification runs on scikit-learn's digits or on
MNIST-1D (tasks ``digits_mlp``, ``signal_cnn``) are drawn instead, in files and titles that name the data set and
preset and say that they are not CIFAR-10.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

from paper_figures import plots
from paper_figures import report
from paper_figures import runs as runs_lib
from paper_figures import series
from paper_figures import style
from paper_figures import table

FIGURE2_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
CIFAR_DATASETS = ("cifar10", "cifar-10", "cifar")
EXPECTED_OPTIMIZERS = tuple(table.PAPER_TABLE_I)


def is_cifar(run: runs_lib.Run) -> bool:
  """A ResNet-56 / CIFAR-10 run."""
  return run.task == "cifar" or run.dataset.lower() in CIFAR_DATASETS


STAND_IN_TASKS = ("digits_mlp", "signal_cnn")


def is_digits_classification(run: runs_lib.Run) -> bool:
  """A classification run on a stand-in for CIFAR-10: scikit-learn's digits or MNIST-1D."""
  return run.task in STAND_IN_TASKS or (run.dataset == "digits" and run.task != "autoencoder")


def by_preset(runs: Sequence[runs_lib.Run]) -> dict[str, list[runs_lib.Run]]:
  """Runs grouped by (data set, preset) name "dataset_preset", in sorted order."""
  groups: dict[str, list[runs_lib.Run]] = {}
  for run in runs:
    groups.setdefault(f"{run.dataset}_{run.preset}", []).append(run)
  return dict(sorted(groups.items()))


def describe_setting(runs: Sequence[runs_lib.Run]) -> str:
  """"ResNet-56 / CIFAR-10, preset short, hardware: 1x H200" for a group of runs."""
  run = runs[0]
  model = style.TASK_MODELS.get(run.task, run.task)
  hardware = sorted({r.hardware for r in runs})
  return (f"{model} / {style.dataset_name(run.dataset)}, preset {run.preset}, "
          f"hardware: {'; '.join(hardware)}")


def _seed_summary(by_optimizer: dict[str, list[runs_lib.Run]]) -> list[str]:
  lines = []
  for optimizer, runs in by_optimizer.items():
    seeds = ", ".join(str(r.seed) for r in runs)
    lines.append(f"{optimizer}: {len(runs)} run(s), seeds {seeds}")
  return lines


def _setting_notes(runs: Sequence[runs_lib.Run]) -> list[str]:
  notes = []
  if len({r.hardware for r in runs}) > 1:
    notes.append("runs come from different hardware: wall-clock curves are not comparable")
  return notes + plots.time_notes(runs, for_summary=True)


def _missing(by_optimizer, expected: Sequence[str]) -> list[str]:
  return [f"no runs for {o}" for o in expected if o not in by_optimizer]


NO_CIFAR = "no CIFAR-10 runs (task 'cifar', python -m experiments.cifar)"


def build_table1(runs: Sequence[runs_lib.Run], out_dir: pathlib.Path) -> list[report.Product]:
  """Writes ``table1.md`` and ``table1.tex`` (one table per preset of the CIFAR-10 runs).

  Without CIFAR-10 runs, writes ``table_digits.md``/``.tex`` from digits runs instead
  (without the paper's column, titled as not CIFAR-10; the product says Table I is missing,
  as Figure 2's stand-in does).
  """
  cifar = [r for r in runs if is_cifar(r)]
  digits = [r for r in runs if is_digits_classification(r)]
  if cifar:
    return [_write_tables(
        cifar, out_dir, "table1", "Table I", paper=table.PAPER_TABLE_I,
        caption="Test accuracy (%) for {setting}; paper: ResNet-56 / CIFAR-10, 200 epochs, 5 runs")]
  if not digits:
    return [report.Product(title="Table I", missing=[f"{NO_CIFAR}: Table I not written"])]
  product = _write_tables(
      digits, out_dir, "table_digits", "Table I stand-in (digits, NOT CIFAR-10)",
      paper=None, caption="Final test accuracy (%) for {setting}: a stand-in, not CIFAR-10 "
      "and not comparable with the paper's Table I")
  product.missing.insert(0, f"{NO_CIFAR}: this stand-in instead of Table I")
  return [product]


def _write_tables(runs, out_dir, stem, title, *, paper, caption) -> report.Product:
  product = report.Product(title=title)
  markdown, latex = [], []
  for _, group in by_preset(runs).items():
    rows, notes = table.table_rows(group, paper)
    text = caption.format(setting=describe_setting(group))
    markdown.append(table.to_markdown(rows, text, with_paper=paper is not None))
    latex.append(table.to_latex(rows, text, with_paper=paper is not None))
    by_optimizer = plots.group_by_optimizer(group)
    product.used.append(describe_setting(group))
    product.used.extend(_seed_summary(by_optimizer))
    if paper:
      product.missing.extend(f"{m} ({group[0].preset})"
                             for m in _missing(by_optimizer, EXPECTED_OPTIMIZERS))
    product.notes.extend(notes)
  out_dir.mkdir(parents=True, exist_ok=True)
  for suffix, blocks in ((".md", markdown), (".tex", latex)):
    path = out_dir / f"{stem}{suffix}"
    path.write_text("\n".join(blocks), encoding="utf-8")
    product.files.append(path)
  return product


def panel_labels(runs: Sequence[runs_lib.Run]) -> dict[str, str]:
  """The y label of each panel of Figure 2, the losses in the units of the runs' task."""
  task, dataset = runs[0].task, runs[0].dataset
  return {"train_loss": style.loss_label(task, dataset, "training"),
          "train_accuracy": "training accuracy (%)",
          "test_loss": style.loss_label(task, dataset, "test"),
          "test_accuracy": "test accuracy (%)"}


def figure2_notes(runs: Sequence[runs_lib.Run]) -> list[str]:
  """What the curves are, and what in their times is not what it seems (written under Figure 2)."""
  tests = {r.config.get("num_test") for r in runs}
  test_set = (f"the {tests.pop()} test examples" if len(tests) == 1 and None not in tests
              else "the test set")
  return [f"Mean over seeds, ±1 std shaded. Training loss and accuracy: mean over each epoch's "
          f"training batches; test: {test_set}, at the end of each evaluated epoch.",
          *plots.time_notes(runs)]


def plot_figure2(runs: Sequence[runs_lib.Run], title: str):
  """Training/test loss and accuracy against epochs (top) and time (bottom).

  The bottom row's time is the time spent in training steps when every run logged
  ``step_time`` (else wall-clock time), on a log scale when the optimizers' total times
  differ by ``plots.LOG_TIME_RATIO`` or more (:func:`plots.time_axis`).

  Returns:
    (figure, missing) with ``missing`` naming optimizer/metric pairs never logged.
  """
  by_optimizer = plots.group_by_optimizer(runs)
  time_axis = plots.time_axis(runs)
  labels = panel_labels(runs)
  fig, panels, axes = plots.figure_with_notes(2, len(FIGURE2_METRICS), (11, 5.6),
                                              figure2_notes(runs))
  missing = []
  for col, metric in enumerate(FIGURE2_METRICS):
    for row, (x_axis, scale) in enumerate((("x", 1.0), (time_axis.attr, time_axis.divisor))):
      ax = axes[row, col]
      absent = plots.draw_metric(ax, by_optimizer, series.epoch_curve, metric, x_axis, scale)
      if row == 0:
        ax.set_xlabel("epoch")
        missing.extend(f"{o}: {metric} not logged" for o in absent)
      else:
        plots.apply_time_axis(ax, time_axis)
      ax.set_ylabel(labels[metric])
  fig.suptitle(title)
  plots.figure_legend(panels, axes)
  return fig, missing


def build_figure2(runs: Sequence[runs_lib.Run], out_dir: pathlib.Path) -> list[report.Product]:
  """Writes ``figure2_<dataset>_<preset>.png/.pdf`` per preset of CIFAR-10 runs (or digits runs)."""
  cifar = [r for r in runs if is_cifar(r)]
  digits = [r for r in runs if is_digits_classification(r)]
  if not cifar and not digits:
    return [report.Product(title="Figure 2", missing=[
        "no CIFAR-10 runs (task 'cifar') and no digits classification runs"])]
  products = []
  chosen = cifar or digits
  for key, group in by_preset(chosen).items():
    setting = describe_setting(group)
    if cifar:
      product = report.Product(title=f"Figure 2 ({style.dataset_name(group[0].dataset)}, "
                               f"preset {group[0].preset})")
      fig_title = f"Figure 2: {setting}"
    else:
      product = report.Product(title=f"Figure 2 stand-in ({style.dataset_name(group[0].dataset)}, "
                               f"preset {group[0].preset}; NOT CIFAR-10)")
      fig_title = f"{setting} (smoke test, NOT CIFAR-10)"
      product.missing.append(f"{NO_CIFAR}: drawn from stand-in classification runs instead")
    with style.context():
      fig, missing_metrics = plot_figure2(group, fig_title)
      product.files = style.save(fig, out_dir, f"figure2_{key}")
    by_optimizer = plots.group_by_optimizer(group)
    product.used = [setting] + _seed_summary(by_optimizer)
    product.missing.extend(_missing(by_optimizer, EXPECTED_OPTIMIZERS) + missing_metrics)
    product.notes = _setting_notes(group) + _fraction_notes(group)
    products.append(product)
  if cifar and digits:
    products[-1].notes.append(f"{len(digits)} digits classification run(s) not drawn "
                              "(CIFAR-10 runs exist)")
  return products


def _fraction_notes(runs: Sequence[runs_lib.Run]) -> list[str]:
  fractional = [r for r in runs if series.stores_fractions(r)]
  if not fractional:
    return []
  return [f"{len(fractional)} run(s) stored accuracy as fractions (values <= 1); "
          "shown in percent"]

