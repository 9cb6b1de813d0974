"""Regenerate the paper's Table I, Figures 2 and 3, a Theorem 1 figure and MBAG's health from run outputs.

Reads only files (run directories with ``config.json`` + ``metrics.jsonl``, and
``verify.json``); imports none of ``mbag``, ``theory`` or ``experiments``.
Command line: ``python -m paper_figures --runs DIR [--out DIR]``.
"""

from paper_figures.autoencoder import build_figure3
from paper_figures.bound import build_theory_figure
from paper_figures.classification import build_figure2
from paper_figures.classification import build_table1
from paper_figures.health import build_health_figure
from paper_figures.cli import main
from paper_figures.report import Product
from paper_figures.runs import MalformedInputError
from paper_figures.runs import Run
from paper_figures.runs import load_run
from paper_figures.runs import load_runs
from paper_figures.runs import read_metrics
from paper_figures.runs import read_verify
from paper_figures.series import final_test_accuracy
from paper_figures.style import optimizer_style
from paper_figures.table import PAPER_TABLE_I
from paper_figures.table import table_rows

__all__ = (
    "MalformedInputError",
    "PAPER_TABLE_I",
    "Product",
    "Run",
    "build_figure2",
    "build_figure3",
    "build_health_figure",
    "build_table1",
    "build_theory_figure",
    "final_test_accuracy",
    "load_run",
    "load_runs",
    "main",
    "optimizer_style",
    "read_metrics",
    "read_verify",
    "table_rows",
)
