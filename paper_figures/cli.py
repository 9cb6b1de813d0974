"""``python -m paper_figures --runs DIR [--out DIR]``: every table and figure in one command.

Products: Table I, Figures 2 and 3, the Theorem 1 figure, the constant-rate ablation study
(``ablation``), the study's paired comparisons (``study``: a forest plot and table from
``study_summary.json``), MBAG's numerical health over training (``health``: the
``opt/root_error`` and ``opt/min_denominator`` its runs log), and the character language
model's evaluation loss and final table (``language_model``).

Exit status: 0 when every input was read; 1 when an input was malformed (the
other figures are still written, the bad run is skipped and named with its file
and line) or nothing at all could be produced; 2 for bad arguments. With
``--strict`` the first malformed input stops the command before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
from typing import Any, Callable, Sequence

from paper_figures import ablation
from paper_figures import autoencoder
from paper_figures import bound
from paper_figures import classification
from paper_figures import health
from paper_figures import language_model
from paper_figures import report
from paper_figures import runs as runs_lib
from paper_figures import study
from paper_figures import style

SUMMARY_FILE = "figures.md"
_log = logging.getLogger("paper_figures")


@dataclasses.dataclass
class Inputs:
  """Everything the builders read.

  Attributes:
    runs: the runs that were read.
    verify_records: theory verification records (all files together).
    verify_files: the verification files that were read.
    root: the ``--runs`` directory (the ablation summaries are found under it).
  """

  runs: list[runs_lib.Run]
  verify_records: list[dict[str, Any]]
  verify_files: list[pathlib.Path]
  root: pathlib.Path = pathlib.Path(".")


Builder = Callable[[Inputs, pathlib.Path], list[report.Product]]

# Name -> builder, in the order of the summary. Each writes its own files.
BUILDERS: dict[str, Builder] = {
    "table1": lambda inputs, out: classification.build_table1(inputs.runs, out),
    "figure2": lambda inputs, out: classification.build_figure2(inputs.runs, out),
    "figure3": lambda inputs, out: autoencoder.build_figure3(inputs.runs, out),
    "theory": lambda inputs, out: bound.build_theory_figure(
        inputs.verify_records, inputs.verify_files, out),
    "ablation": lambda inputs, out: ablation.build_ablation(inputs.root, out),
    "study": lambda inputs, out: study.build_study(inputs.root, out),
    "health": lambda inputs, out: health.build_health_figure(inputs.runs, out),
    "language_model": lambda inputs, out: language_model.build_language_model(inputs.runs, out),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m paper_figures",
      description="Regenerate the paper's Table I, Figure 2, Figure 3 and a Theorem 1 figure "
                  "from run directories (config.json + metrics.jsonl) and theory verify.json.")
  parser.add_argument("--runs", required=True, type=pathlib.Path,
                      help="directory searched recursively for run directories and verify.json")
  parser.add_argument("--out", type=pathlib.Path, default=None,
                      help="output directory (default: RUNS/paper_figures)")
  parser.add_argument("--verify", type=pathlib.Path, action="append", default=None,
                      metavar="FILE", help="theory verification file(s) to use instead of "
                      "the verify.json files found under --runs (repeatable)")
  parser.add_argument("--only", choices=sorted(BUILDERS), action="append", default=None,
                      help="build only these (repeatable; default: all)")
  parser.add_argument("--strict", action="store_true",
                      help="stop at the first malformed input instead of skipping it")
  return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
  """Reads the inputs, builds every requested product, writes ``figures.md``; returns the exit status."""
  if not args.runs.is_dir():
    _log.error("--runs %s: not a directory", args.runs)
    return 2
  for path in args.verify or ():
    if not path.is_file():
      _log.error("--verify %s: no such file", path)
      return 2
  out_dir = args.out or args.runs / "paper_figures"
  for path in (out_dir, *out_dir.parents):
    if path.exists() and not path.is_dir():
      _log.error("--out %s: %s is a file, not a directory", out_dir, path)
      return 2
  try:
    loaded = runs_lib.load_runs(args.runs, strict=args.strict)
    verify_files = list(args.verify) if args.verify else runs_lib.find_verify_files(args.runs)
    verify_records, verify_problems = runs_lib.read_verify_files(verify_files, strict=args.strict)
  except runs_lib.MalformedInputError as e:
    _log.error("%s", e)
    return 1
  skipped = [str(p) for p in loaded.problems + verify_problems]
  for message in skipped:
    _log.warning("skipped %s", message)
  for message in loaded.duplicates:
    _log.warning("%s", message)
  good_files = [f for f in verify_files if f not in {p.path for p in verify_problems}]
  inputs = Inputs(runs=loaded.runs, verify_records=verify_records, verify_files=good_files,
                  root=args.runs)
  products = []
  for name in args.only or BUILDERS:
    products.extend(BUILDERS[name](inputs, out_dir))
  out_dir.mkdir(parents=True, exist_ok=True)
  summary = report.summary_markdown(
      products, runs_dir=args.runs, out_dir=out_dir, num_runs=len(loaded.runs),
      skipped=skipped + loaded.duplicates, verify_files=good_files)
  (out_dir / SUMMARY_FILE).write_text(summary, encoding="utf-8")
  print_products(products, out_dir)
  produced = any(p.files for p in products)
  if skipped:
    _log.error("%d malformed input(s) skipped (see above and %s)", len(skipped),
               out_dir / SUMMARY_FILE)
  return 1 if skipped or not produced else 0


def print_products(products: Sequence[report.Product], out_dir: pathlib.Path) -> None:
  """What was made (titles and file names), then what was not and why, one line each."""
  made = [p for p in products if p.files]
  not_made = [p for p in products if not p.files]
  if made:
    print(f"made in {out_dir}:")
    for product in made:
      print(f"  {product.title}: {', '.join(f.name for f in product.files)}")
  if not_made:
    print("not made, for want of their inputs:")
    for product in not_made:
      print(f"  {product.title}: {'; '.join(product.missing) or 'no inputs'}")
  print(f"what each was made from, and what it lacks: {out_dir / SUMMARY_FILE}")


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point: configures logging to stderr as "paper_figures: LEVEL: message" and runs."""
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("paper_figures: %(levelname)s: %(message)s"))
  _log.handlers[:] = [handler]
  _log.propagate = False
  _log.setLevel(logging.INFO)
  style.use_agg()
  return run(parse_args(argv))
