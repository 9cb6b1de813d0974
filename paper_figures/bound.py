"""The theory figure: both sides of Theorem 1 and its terms over the horizon T.

Reads the records of ``python -m theory.verify --out DIR`` (``verify.json``); one
column per problem, rows: (1) the left side min_t ||grad f||^2 and the right side
of the bound, (2) log(|G_T|/|G_0|) and sum_t gamma_t, (3) their ratio, which must
go to 0 for the theorem to give convergence (log det = o(sum gamma_t)).
Lines are means over seeds with +- std shading; crosses mark records where the
bound did not hold. The theorem's setting is drawn solid, others (e.g. the
paper's practical stale-root setting) dashed.
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np
from matplotlib import pyplot as plt

from paper_figures import report
from paper_figures import series
from paper_figures import style

SIDE_COLORS = {"lhs": "#1f77b4", "rhs": "#d62728", "logdet_ratio": "#2ca02c",
               "sum_gamma": "#9467bd", "ratio": "#000000"}
SIDE_LABELS = {"lhs": r"left: $\min_t\,\|\nabla f(\theta_t)\|^2$",
               "rhs": "right: bound of Theorem 1",
               "logdet_ratio": r"$\log(|\hat G_T|/|\hat G_0|)$",
               "sum_gamma": r"$\sum_t \gamma_t$",
               "ratio": r"$\log(|\hat G_T|/|\hat G_0|)\,/\,\sum_t \gamma_t$"}
SETTING_STYLES = {"theorem": "-", "practical": "--"}


def _in_order(values) -> list:
  seen = []
  for v in values:
    if v not in seen:
      seen.append(v)
  return seen


def _by_t(records: Sequence[dict[str, Any]], value) -> series.Band:
  ts = sorted({float(r["T"]) for r in records})
  means, stds, counts = [], [], []
  for t in ts:
    mean, std = series.mean_std([value(r) for r in records if float(r["T"]) == t])
    means.append(mean)
    stds.append(std)
    counts.append(sum(float(r["T"]) == t for r in records))
  return series.Band(x=np.array(ts), mean=np.array(means), std=np.array(stds),
                     count=np.array(counts))


def _draw(ax, band: series.Band, key: str, setting: str) -> None:
  linestyle = SETTING_STYLES.get(setting, ":")
  label = SIDE_LABELS[key] + ("" if setting == "theorem" else f" ({setting})")
  ax.plot(band.x, band.mean, color=SIDE_COLORS[key], linestyle=linestyle, marker="o",
          markersize=2.5, label=label)
  spread = band.count > 1
  if spread.any():
    ax.fill_between(band.x, band.mean - band.std, band.mean + band.std, where=spread,
                    color=SIDE_COLORS[key], alpha=0.15, linewidth=0)


def _log_axes(ax, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> None:
  x = np.concatenate(xs) if xs else np.zeros(0)
  y = np.concatenate(ys) if ys else np.zeros(0)
  y = y[np.isfinite(y)]
  if x.size and x.min() > 0 and x.max() / x.min() >= 10:
    ax.set_xscale("log")
  if y.size and y.min() > 0 and y.max() / y.min() >= 10:
    ax.set_yscale("log")


def plot_theory(records: Sequence[dict[str, Any]]):
  """The figure for ``records`` (see the module docstring)."""
  problems = _in_order(r["problem"] for r in records)
  fig, axes = plt.subplots(3, len(problems), figsize=(3.3 * len(problems) + 0.6, 7.2),
                           layout="constrained", squeeze=False)
  rows = ((("lhs", lambda r: r["lhs"]), ("rhs", lambda r: r["rhs"])),
          (("logdet_ratio", lambda r: r["logdet_ratio"]),
           ("sum_gamma", lambda r: r["sum_gamma"])),
          (("ratio", lambda r: r["logdet_ratio"] / r["sum_gamma"] if r["sum_gamma"] else np.nan),))
  y_labels = ("squared gradient norm", "term value", "ratio (dimensionless)")
  for col, problem in enumerate(problems):
    mine = [r for r in records if r["problem"] == problem]
    exact = all(r["L_exact"] for r in mine)
    for row, entries in enumerate(rows):
      ax = axes[row, col]
      xs, ys = [], []
      for setting in _in_order(r["setting"] for r in mine):
        chosen = [r for r in mine if r["setting"] == setting]
        for key, value in entries:
          band = _by_t(chosen, value)
          _draw(ax, band, key, setting)
          xs.append(band.x)
          ys.append(band.mean)
        if row == 0:
          failed = [r for r in chosen if not r["holds"]]
          if failed:
            ax.plot([r["T"] for r in failed], [r["lhs"] for r in failed], "x", color="k",
                    markersize=5, label="bound violated")
      _log_axes(ax, xs, ys)
      ax.set_xlabel("horizon T (iterations)")
      ax.set_ylabel(y_labels[row])
      if row == 0:
        ax.set_title(f"{problem}\n(L {'exact' if exact else 'estimated: a lower bound'})")
  fig.suptitle("Theorem 1: both sides and their terms over T (mean over seeds, ±std shaded)")
  handles = {}
  for ax in axes.ravel():
    for handle, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, handle)
  fig.legend(list(handles.values()), list(handles), loc="outside lower center",
             ncol=min(len(handles), 4), frameon=False)
  return fig


def build_theory_figure(records: Sequence[dict[str, Any]], sources: Sequence[pathlib.Path],
                        out_dir: pathlib.Path) -> list[report.Product]:
  """Writes ``theory_bound.png/.pdf`` from verification records (none: reports the file missing)."""
  product = report.Product(title="Theory figure (Theorem 1)")
  if not records:
    product.missing.append("no theory verification records (verify.json from "
                           "`python -m theory.verify --out DIR`, under --runs or via --verify)")
    return [product]
  with style.context():
    product.files = style.save(plot_theory(records), out_dir, "theory_bound")
  product.used.append("from " + ", ".join(str(s) for s in sources))
  for problem in _in_order(r["problem"] for r in records):
    for setting in _in_order(r["setting"] for r in records if r["problem"] == problem):
      chosen = [r for r in records if r["problem"] == problem and r["setting"] == setting]
      ts = sorted({r["T"] for r in chosen})
      held = sum(bool(r["holds"]) for r in chosen)
      product.used.append(
          f"{problem} [{setting}]: T in {{{', '.join(f'{t:g}' for t in ts)}}}, "
          f"{len({r['seed'] for r in chosen})} seed(s); bound held in {held}/{len(chosen)} records")
      if held < len(chosen):
        product.notes.append(f"{problem} [{setting}]: bound violated in "
                             f"{len(chosen) - held} record(s) (marked x)")
      if not all(r["L_exact"] for r in chosen):
        product.notes.append(f"{problem} [{setting}]: L is an estimate (a lower bound), "
                             "so the right side is not guaranteed")
  return [product]
