"""Figure + table products made from a study's summary JSON files (ablation, paired study)."""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

from paper_figures import report
from paper_figures import runs as runs_lib
from paper_figures import style


def build_per_summary(paths: Sequence[pathlib.Path], out_dir: pathlib.Path, *, title: str,
                      stem: str, missing: str, plot: Callable[[dict[str, Any]], Any],
                      table: Callable[[dict[str, Any]], str],
                      count: Callable[[dict[str, Any]], str]) -> list[report.Product]:
  """``<stem>[_<n>].png/.pdf`` (``plot(summary)``) and ``<stem>[_<n>].md`` (``table(summary)``)
  per summary in ``paths``; a malformed summary is reported, not drawn.

  Args:
    paths: the summary files found.
    out_dir: where the files go.
    title: the product's title ("Ablation"); the summary's path is added.
    stem: the files' stem (``_<n>`` added when there are several summaries).
    missing: what the product says when ``paths`` is empty.
    plot: summary -> matplotlib figure.
    table: summary -> markdown.
    count: one benchmark's part of the summary -> what it holds ("12 entries").
  """
  if not paths:
    return [report.Product(title=title, missing=[missing])]
  products = []
  for i, path in enumerate(paths):
    product = report.Product(title=f"{title} ({path})")
    try:
      summary = runs_lib.read_json_file(path)
    except runs_lib.MalformedInputError as e:
      product.missing.append(str(e))
      products.append(product)
      continue
    name = stem if len(paths) == 1 else f"{stem}_{i}"
    with style.context():
      product.files = style.save(plot(summary), out_dir, name)
    markdown = out_dir / f"{name}.md"
    markdown.write_text(table(summary), encoding="utf-8")
    product.files.append(markdown)
    product.used = [f"{path}: " + ", ".join(
        f"{b} ({count(p)})" for b, p in summary.get("benchmarks", {}).items())]
    products.append(product)
  return products
