"""The character language model (task ``char_lm``): evaluation loss curves and a final table.

Per data set and preset, one figure: the evaluation loss in nats per token against steps (left)
and against time (right: time in training steps when every run logs it, else wall-clock), the
mean over seeds per optimizer with the spread shaded;
and one table: the final evaluation loss (nats per token) and bits per character, mean and
sample standard deviation over seeds. On ``<name>-val`` runs the evaluation set is the
validation split and everything is labelled "validation"; otherwise "test". The numbers are the
runs' logged ``test_loss`` / ``test_bits_per_char`` of their last evaluation, nothing else.
"""

from __future__ import annotations

import math
import pathlib
from typing import Sequence

from matplotlib import pyplot as plt

from paper_figures import plots
from paper_figures import report
from paper_figures import runs as runs_lib
from paper_figures import series
from paper_figures import style
from paper_figures import table

TASK = "char_lm"
LOSS, BITS = "test_loss", "test_bits_per_char"
VALIDATION_SUFFIX = "-val"


def split_name(dataset: str) -> str:
  """``validation`` for a ``<name>-val`` data set, else ``test``."""
  return "validation" if dataset.endswith(VALIDATION_SUFFIX) else "test"


def final_values(run: runs_lib.Run) -> tuple[float, float, int] | None:
  """``(loss, bits per character, step)`` of the run's last evaluation, None without one."""
  evaluated = [r for r in run.records if runs_lib._is_number(r.get(LOSS))]  # pylint: disable=protected-access
  if not evaluated:
    return None
  last = max(enumerate(evaluated), key=lambda ir: (ir[1]["step"], ir[0]))[1]
  bits = last.get(BITS)
  bits = float(bits) if runs_lib._is_number(bits) else float(last[LOSS]) / math.log(2)  # pylint: disable=protected-access
  return float(last[LOSS]), bits, int(last["step"])


def table_markdown(runs: Sequence[runs_lib.Run], caption: str) -> str:
  """One row per optimizer: final loss and bits per character (mean ± std), seeds, steps."""
  split = split_name(runs[0].dataset)
  lines = [caption, "",
           f"| Optimizer | final {split} loss (nats/token) | bits/char | seeds | step |",
           "|---|---|---|---|---|"]
  for optimizer, group in plots.group_by_optimizer(runs).items():
    finals = [(r.seed, final_values(r)) for r in group]
    done = [(seed, f) for seed, f in finals if f is not None]
    name = style.optimizer_style(optimizer).name
    if not done:
      lines.append(f"| {name} | no evaluation logged | | {', '.join(str(s) for s, _ in finals)} | |")
      continue
    loss = table.format_mean_std(*series.mean_std([f[0] for _, f in done]))
    bits = table.format_mean_std(*series.mean_std([f[1] for _, f in done]))
    steps = sorted({f[2] for _, f in done})
    lines.append(f"| {name} | {loss} | {bits} | {', '.join(str(s) for s, _ in done)} | "
                 f"{', '.join(map(str, steps))} |")
  return "\n".join(lines) + "\n"


def plot_loss(runs: Sequence[runs_lib.Run], title: str):
  """Evaluation loss against steps (left) and time (right: :func:`plots.time_axis`).

  Returns:
    (figure, missing): ``missing`` names optimizers whose runs never logged an evaluation.
  """
  by_optimizer = plots.group_by_optimizer(runs)
  time_axis = plots.time_axis(runs)
  fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.4), layout="constrained", squeeze=False)
  label = f"{split_name(runs[0].dataset)} loss (nats/token)"
  absent = []
  for col, (x_axis, scale) in enumerate((("x", 1.0), (time_axis.attr, time_axis.divisor))):
    ax = axes[0, col]
    absent = plots.draw_metric(ax, by_optimizer, series.step_curve, LOSS, x_axis, scale)
    if col == 0:
      ax.set_xlabel("iteration")
    else:
      plots.apply_time_axis(ax, time_axis)
    ax.set_ylabel(label)
  fig.suptitle(title)
  plots.figure_legend(fig, axes)
  return fig, [f"{o}: {LOSS} not logged" for o in absent]


def _groups(runs: Sequence[runs_lib.Run]) -> dict[str, list[runs_lib.Run]]:
  groups: dict[str, list[runs_lib.Run]] = {}
  for run in runs:
    groups.setdefault(f"{run.dataset}_{run.preset}", []).append(run)
  return dict(sorted(groups.items()))


def build_language_model(runs: Sequence[runs_lib.Run],
                         out_dir: pathlib.Path) -> list[report.Product]:
  """Writes ``lm_<dataset>_<preset>.png/.pdf`` and ``lm_<dataset>_<preset>.md`` per group."""
  runs = [r for r in runs if r.task == TASK]
  if not runs:
    return [report.Product(title="Language model", missing=[
        f"no runs of task '{TASK}' (experiments/configs/shakespeare.py)"])]
  products = []
  for key, group in _groups(runs).items():
    first = group[0]
    hardware = "; ".join(sorted({r.hardware for r in group}))
    setting = (f"{style.TASK_MODELS.get(TASK, TASK)} / {style.dataset_name(first.dataset)}, "
               f"preset {first.preset}, hardware: {hardware}")
    product = report.Product(title=f"Language model ({first.dataset}, preset {first.preset})")
    with style.context():
      fig, missing = plot_loss(group, setting)
      product.files = style.save(fig, out_dir, f"lm_{key}")
    caption = (f"Final {split_name(first.dataset)} loss and bits per character, mean ± sample "
               f"std over seeds: {setting}")
    path = out_dir / f"lm_{key}.md"
    path.write_text(table_markdown(group, caption), encoding="utf-8")
    product.files.append(path)
    by_optimizer = plots.group_by_optimizer(group)
    product.used = [setting] + [f"{o}: seeds {', '.join(str(r.seed) for r in rs)}"
                                for o, rs in by_optimizer.items()]
    product.missing = missing
    if len({r.hardware for r in group}) > 1:
      product.notes.append("runs come from different hardware: wall-clock curves are not "
                           "comparable")
    product.notes.extend(series.wall_clock_notes(group))
    products.append(product)
  return products
