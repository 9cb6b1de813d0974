"""The ablation study's figure and table, from ``ablation_summary.json`` (``experiments.ablation``).

One panel per benchmark: each entry of the study (the baselines, their reference-code
variants, MBAG and every variant of one of its choices) as its mean over the final seeds
with +-1 sample standard deviation, on the test set, at the learning rate its tuning chose
on the validation split; Adam's mean is a dashed line. Entries whose final runs all
diverged are listed as such. ``ablation.md`` has the same numbers with the rates and seeds,
and per benchmark the paired comparison of each entry with its reference (a variant with its
base optimizer, a base optimizer with Adam): the mean difference over the seeds both finished
(seed i against seed i: same initialisation and data order), its 95 % t-interval and "better" /
"worse" only where the interval excludes zero, "tie" otherwise.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Sequence

from matplotlib import pyplot as plt
from scipy import stats as scipy_stats

from paper_figures import report
from paper_figures import runs as runs_lib
from paper_figures import style
from paper_figures import summaries

# The metric drawn per benchmark: the first of its reported metrics.
METRIC_LABELS = {"test_accuracy": "test accuracy (%)", "test_loss": "test loss",
                 "train_loss": "training loss", "test_squared_error": "test squared error",
                 "test_bce_per_pixel": "test BCE per pixel"}
GROUP_ORDER = ("baseline", "lambda", "T_sqr", "root", "warm-up", "tau", "momentum", "grouping",
               "storage", "EMA decay")


def _rows(part: dict[str, Any], metric: str) -> list[tuple[str, str, dict[str, Any], float]]:
  """``(entry, group, stats, lr)`` in group order, then by name."""
  rows = [(name, row.get("group", "baseline"), row.get(metric, {}), row.get("learning_rate"))
          for name, row in part.get("final", {}).items()]
  order = {g: i for i, g in enumerate(GROUP_ORDER)}
  return sorted(rows, key=lambda r: (order.get(r[1], len(order)), r[0]))


def _scale(metric: str, values: Sequence[float]) -> float:
  return 100.0 if metric.endswith("accuracy") and values and max(values) <= 1.0 else 1.0


def plot_ablation(summary: dict[str, Any], title: str):
  benchmarks = summary.get("benchmarks", {})
  fig, axes = plt.subplots(1, len(benchmarks), squeeze=False, layout="constrained",
                           figsize=(3.6 * len(benchmarks), 0.5 + 0.19 * max(
                               len(p.get("final", {})) for p in benchmarks.values())))
  for ax, (name, part) in zip(axes[0], benchmarks.items()):
    metric = next(iter(part.get("report", [])), None) or _first_metric(part)
    rows = _rows(part, metric)
    means = [r[2].get("mean") for r in rows if r[2].get("mean") is not None]
    scale = _scale(metric, means)
    for y, (entry, _, stats, _) in enumerate(rows):
      mean, std = stats.get("mean"), stats.get("std") or 0.0
      if mean is None:
        ax.text(0.02, y, "diverged", transform=ax.get_yaxis_transform(), va="center", fontsize=6)
        continue
      color = style.optimizer_style(entry.split("/")[0]).color
      ax.errorbar(mean * scale, y, xerr=std * scale, fmt="o", ms=3, color=color, capsize=2)
    adam = part.get("final", {}).get("adam", {}).get(metric, {}).get("mean")
    if adam is not None:
      ax.axvline(adam * scale, color=style.optimizer_style("adam").color, ls="--", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{name} ({part.get('config', '')})")
  fig.suptitle(title)
  return fig


def _first_metric(part: dict[str, Any]) -> str:
  for row in part.get("final", {}).values():
    for key, value in row.items():
      if isinstance(value, dict) and "mean" in value and key != "run_seconds":
        return key
  return "test_loss"


def _fmt(stats: dict[str, Any], scale: float) -> str:
  mean, std = stats.get("mean"), stats.get("std")
  if mean is None:
    return "diverged"
  text = f"{mean * scale:.4g}"
  return text + (f" ± {std * scale:.2g}" if std is not None and math.isfinite(std) else "")


def reference_of(entry: str) -> str:
  """What an entry is compared with: its base optimizer for a variant, Adam for a base."""
  return entry.split("/")[0] if "/" in entry else "adam"


def paired_interval(values: Sequence[float | None], reference: Sequence[float | None],
                    higher_is_better: bool, confidence: float = 0.95) -> dict[str, Any] | None:
  """Mean of ``entry - reference`` per seed (oriented: > 0 is better), its t-interval and verdict,
  over the seeds where both are finite; None with fewer than 2 such seeds."""
  sign = 1.0 if higher_is_better else -1.0
  diffs = [sign * (a - b) for a, b in zip(values, reference)
           if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
  n = len(diffs)
  if n < 2:
    return None
  mean = sum(diffs) / n
  sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
  half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
  low, high = mean - half, mean + half
  verdict = "better" if low > 0 else "worse" if high < 0 else "tie"
  return {"n": n, "mean": mean, "low": low, "high": high, "verdict": verdict}


def paired_markdown(part: dict[str, Any], metric: str) -> list[str]:
  """The paired comparisons of one benchmark on ``metric`` (see the module docstring)."""
  final = part.get("final", {})
  hib = bool(part.get("higher_is_better", metric.endswith("accuracy")))
  lines = [f"Paired by seed, {METRIC_LABELS.get(metric, metric)}: entry - reference, oriented "
           f"so that > 0 means the entry is better, 95 % t-interval over n seeds.", "",
           "| entry | reference | n | difference [95 % interval] | verdict |",
           "|---|---|---|---|---|"]
  count = 0
  for entry, _, stats, _ in _rows(part, metric):
    ref = reference_of(entry)
    if entry == ref or ref not in final:
      continue
    ref_stats = final[ref].get(metric, {})
    values = stats.get("values", [])
    scale = _scale(metric, [v for v in values + ref_stats.get("values", []) if v is not None])
    result = paired_interval(values, ref_stats.get("values", []), hib)
    if result is None:
      lines.append(f"| {entry} | {ref} | < 2 | (too few finite seeds) | |")
      continue
    count += 1
    lines.append(f"| {entry} | {ref} | {result['n']} | {result['mean'] * scale:+.3g} "
                 f"[{result['low'] * scale:+.3g}, {result['high'] * scale:+.3g}] | "
                 f"{result['verdict']} |")
  lines += ["", f"{count} comparisons on this benchmark, none corrected for multiplicity.", ""]
  return lines


def table_markdown(summary: dict[str, Any]) -> str:
  commands = [c["command"] for c in summary.get("commands", [])] or [summary.get("command", "?")]
  lines = [f"Command{'s' if len(commands) > 1 else ''}: " + "; ".join(f"`{c}`" for c in commands)
           + f"; hardware: {summary.get('hardware', '?')}.", ""]
  for name, part in summary.get("benchmarks", {}).items():
    metrics = list(part.get("report", [])) or [_first_metric(part)]
    lines += [f"## {name} ({part.get('config', '')})", "",
              "| entry | group | lr | seeds | " + " | ".join(metrics) + " |",
              "|---|---|---|---|" + "---|" * len(metrics)]
    for entry, group, _, lr in _rows(part, metrics[0]):
      row = part["final"][entry]
      cells = []
      for metric in metrics:
        stats = row.get(metric, {})
        means = [v for v in stats.get("values", []) if v is not None]
        cells.append(_fmt(stats, _scale(metric, means)))
      lines.append(f"| {entry} | {group} | {lr:g} | {row.get('seeds')} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += paired_markdown(part, metrics[0])
  return "\n".join(lines)


def build_ablation(root: pathlib.Path, out_dir: pathlib.Path) -> list[report.Product]:
  """``ablation[_<n>].png/.pdf`` and ``ablation[_<n>].md`` per summary found under ``root``."""
  return summaries.build_per_summary(
      runs_lib.find_ablation_summaries(root), out_dir, title="Ablation", stem="ablation",
      missing=f"no {runs_lib.ABLATION_SUMMARY_FILE} (python -m experiments.ablation)",
      plot=lambda summary: plot_ablation(summary, (
          "What matters in MBAG: test metrics, mean ± std over seeds "
          f"({summary.get('hardware', '?')})")),
      table=table_markdown, count=lambda part: f"{len(part.get('final', {}))} entries")
