"""What a figure builder produced, what it lacked, and the ``figures.md`` summary."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence


@dataclasses.dataclass
class Product:
  """The outcome of building one table or figure.

  Attributes:
    title: e.g. "Figure 2 (CIFAR-10, preset paper)".
    files: the files written (empty when the inputs were missing).
    used: one line per group of runs or records that went in.
    missing: one line per expected input that had no runs (optimizer, data set, file).
    notes: conversions and caveats the reader should know about.
  """

  title: str
  files: list[pathlib.Path] = dataclasses.field(default_factory=list)
  used: list[str] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)


def _bullets(header: str, lines: Sequence[str]) -> list[str]:
  if not lines:
    return []
  return [f"{header}:"] + [f"  - {line}" for line in lines]


def summary_markdown(products: Sequence[Product], *, runs_dir: pathlib.Path,
                     out_dir: pathlib.Path, num_runs: int,
                     skipped: Sequence[str], verify_files: Sequence[pathlib.Path]) -> str:
  """The ``figures.md`` text: inputs, then per table/figure what was produced and what was missing.

  Args:
    products: the builders' results, in the order to list them.
    runs_dir: the ``--runs`` directory.
    out_dir: where the files went (paths are shown relative to it).
    num_runs: how many runs were read.
    skipped: one message per input that was skipped (file:line: reason).
    verify_files: the theory verification files read.

  Returns:
    Markdown text.
  """
  def rel(path: pathlib.Path) -> str:
    try:
      return str(path.relative_to(out_dir))
    except ValueError:
      return str(path)

  lines = ["# Paper figures", "",
           f"Runs read from `{runs_dir}`: {num_runs} run(s); skipped inputs: {len(skipped)}; "
           f"theory verification files: {', '.join(f'`{p}`' for p in verify_files) or 'none'}.",
           ""]
  for product in products:
    lines.append(f"## {product.title}")
    lines.append("")
    if product.files:
      lines.append("Produced: " + ", ".join(f"`{rel(f)}`" for f in product.files))
    else:
      lines.append("Not made: its inputs are not among these runs (see Missing).")
    lines.append("")
    for header, items in (("Inputs", product.used), ("Missing", product.missing),
                          ("Notes", product.notes)):
      block = _bullets(header, items)
      if block:
        lines.extend(block)
        lines.append("")
  if skipped:
    lines.append("## Skipped inputs")
    lines.append("")
    lines.extend(f"- {message}" for message in skipped)
    lines.append("")
  return "\n".join(lines)
