"""Table I: final test accuracy, mean +- std over seeds per optimizer, beside the paper's numbers."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import tabulate

from paper_figures import runs as runs_lib
from paper_figures import series
from paper_figures import style

# Table I of the paper (ResNet-56 on CIFAR-10, 200 epochs, 5 runs): test accuracy (%), mean and std.
PAPER_TABLE_I = {
    "adagrad": (83.40, 0.415),
    "adam": (89.93, 0.361),
    "kfac": (90.64, 0.145),
    "shampoo": (83.67, 0.156),
    "adablock": (89.38, 0.169),
    "mbag": (90.17, 0.112),
    "mbag_n": (85.75, 0.327),
}
PAPER_BLOCK_SIZE = 32  # tau used for AdaBlock, MBAG and MBAG-N in Table I


class Row(NamedTuple):
  """One optimizer's line of the table.

  Attributes:
    optimizer: registry name.
    label: display name (with tau when the runs record it).
    paper: (mean, std) from the paper, or None when the paper has no number.
    seeds: the seeds whose final accuracy went into the mean, sorted.
    accuracies: final test accuracy (%) of those seeds, in seed order.
    mean: mean of ``accuracies`` (NaN when there are none).
    std: their sample standard deviation (ddof=1; NaN for fewer than two).
    epochs: the epoch of each seed's final evaluation.
    planned_epochs: ``num_epochs`` of each seed's config (None when not recorded).
    diverged: the seeds whose training loss became non-finite before a test accuracy was
      logged (not in the mean: the cell says how many).
  """

  optimizer: str
  label: str
  paper: tuple[float, float] | None
  seeds: tuple[int, ...]
  accuracies: tuple[float, ...]
  mean: float
  std: float
  epochs: tuple[float, ...]
  planned_epochs: tuple[int | None, ...]
  diverged: tuple[int, ...] = ()


def table_rows(runs: Sequence[runs_lib.Run],
               paper: dict[str, tuple[float, float]] | None = None
               ) -> tuple[list[Row], list[str]]:
  """One row per optimizer present in ``runs`` or in ``paper``, in the paper's order.

  Args:
    runs: runs of one setting (task, data set, preset).
    paper: the paper's (mean, std) per optimizer, or None for a table without them.

  Returns:
    (rows, notes): notes name runs without a test accuracy and runs that stored fractions.
  """
  paper = paper or {}
  by_optimizer: dict[str, list[runs_lib.Run]] = {}
  for run in runs:
    by_optimizer.setdefault(run.optimizer, []).append(run)
  notes = []
  rows = []
  for optimizer in sorted(set(by_optimizer) | set(paper), key=style.optimizer_sort_key):
    finals, diverged = [], []
    for run in sorted(by_optimizer.get(optimizer, []), key=lambda r: r.seed):
      final = series.final_test_accuracy(run)
      if final is None:
        bad_step = series.divergence_step(run)
        if bad_step is not None:
          diverged.append(run.seed)
          notes.append(f"{run.path / runs_lib.METRICS_FILE}: diverged at step {bad_step} "
                       "(training loss not finite) before any test accuracy")
        else:
          notes.append(f"{run.path / runs_lib.METRICS_FILE}: no test_accuracy logged; "
                       "left out of the table")
        continue
      finals.append((run, final))
    fractions = [r.seed for r, f in finals if f.stored_fraction]
    if fractions:
      notes.append(f"{optimizer}: seed(s) {', '.join(map(str, fractions))} stored accuracy "
                   "as fractions (all values <= 1); converted to percent")
    mean, std = series.mean_std([f.percent for _, f in finals])
    block_sizes = {r.block_size() for r in by_optimizer.get(optimizer, [])}
    block_size = block_sizes.pop() if len(block_sizes) == 1 else None
    rows.append(Row(
        optimizer=optimizer,
        label=style.optimizer_style(optimizer, block_size).name,
        paper=paper.get(optimizer),
        seeds=tuple(r.seed for r, _ in finals),
        accuracies=tuple(f.percent for _, f in finals),
        mean=mean, std=std,
        epochs=tuple(f.epoch for _, f in finals),
        planned_epochs=tuple(r.num_epochs for r, _ in finals),
        diverged=tuple(diverged)))
    if (optimizer in paper and block_size is not None and optimizer in ("adablock", "mbag", "mbag_n")
        and block_size != PAPER_BLOCK_SIZE):
      notes.append(f"{optimizer}: runs use tau={block_size}, the paper's number is for "
                   f"tau={PAPER_BLOCK_SIZE}")
  return rows, notes


def format_mean_std(mean: float, std: float, pm: str = "±") -> str:
  """"90.17 ± 0.112" (the paper's format); "—" without data; "n/a" for the std of one seed."""
  if math.isnan(mean):
    return "—"
  return f"{mean:.2f} {pm} {'n/a' if math.isnan(std) else f'{std:.3f}'}"


def _format_epochs(row: Row) -> str:
  if not row.epochs:
    return "—"
  lo, hi = min(row.epochs), max(row.epochs)
  done = f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"
  planned = {p for p in row.planned_epochs if p is not None}
  if planned and (len(planned) > 1 or planned != {hi} or lo != hi):
    done += " of " + "/".join(str(p) for p in sorted(planned))
  return done


def _result_cell(row: Row, pm: str) -> str:
  """Mean ± std of the seeds that finished, and how many diverged ("no runs" when none ran)."""
  if not row.diverged:
    return format_mean_std(row.mean, row.std, pm=pm) if row.seeds else "no runs"
  diverged = f"{len(row.diverged)} of {len(row.seeds) + len(row.diverged)} seeds diverged"
  return f"{format_mean_std(row.mean, row.std, pm=pm)} ({diverged})" if row.seeds else diverged


def _cells(row: Row, pm: str, with_paper: bool) -> list[str]:
  cells = [row.label]
  if with_paper:
    cells.append(format_mean_std(*row.paper, pm=pm) if row.paper else "—")
  cells.append(_result_cell(row, pm))
  cells.append(str(len(row.seeds)))
  cells.append(", ".join(str(s) for s in row.seeds) or "—")
  cells.append(_format_epochs(row))
  return cells


def _header(with_paper: bool) -> list[str]:
  if with_paper:
    return ["Optimizer", "Paper (%)", "Reproduced (%)", "Seeds", "Seed values", "Epochs run"]
  return ["Optimizer", "Test accuracy (%)", "Seeds", "Seed values", "Epochs run"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   align: Sequence[str] | None = None) -> str:
  """A Markdown (pipe) table whose columns are as wide as their widest cell.

  Args:
    header: the column titles.
    rows: the cells, as text (never re-read as numbers: "0.90" stays "0.90").
    align: "left" or "right" per column; default: the first left, the others right.

  Returns:
    The table, one line per row, without a trailing newline.
  """
  align = align or ["left"] + ["right"] * (len(header) - 1)
  return tabulate.tabulate([list(r) for r in rows], headers=list(header), tablefmt="pipe",
                           colalign=list(align), disable_numparse=True)


def to_markdown(rows: Sequence[Row], caption: str, *, with_paper: bool = True) -> str:
  """The table as GitHub Markdown, caption above, columns sized to their content."""
  table = markdown_table(_header(with_paper), [_cells(row, "±", with_paper) for row in rows])
  return f"**{caption}**\n\n{table}\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "τ": r"$\tau$", "—": "---", "–": "--"}


def latex_escape(text: str) -> str:
  """Escapes LaTeX specials (and writes τ as ``$\\tau$``)."""
  return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def to_latex(rows: Sequence[Row], caption: str, *, with_paper: bool = True) -> str:
  """The table as a LaTeX ``table`` environment (no packages beyond the LaTeX kernel)."""
  head = _header(with_paper)
  lines = [r"\begin{table}[t]", r"\centering",
           r"\caption{" + latex_escape(caption) + "}",
           r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\hline",
           " & ".join(latex_escape(h) for h in head) + r" \\", r"\hline"]
  for row in rows:
    cells = [latex_escape(c).replace("±", r"$\pm$") for c in _cells(row, "±", with_paper)]
    lines.append(" & ".join(cells) + r" \\")
  lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
  return "\n".join(lines) + "\n"
