"""The study's forest plot and table, from ``study_summary.json`` (``experiments.ablation``, protocol
``paired``).

One row of panels per benchmark, two columns: *equal steps* (the paired difference of the
benchmark's metric at the last step, entry minus reference where higher is better, reference
minus entry where lower is, so > 0 means the entry is better; accuracy in percentage points)
and *time to target* (``t_ref / t_entry``, training seconds to the target loss, on a log axis:
> 1 means the entry is faster). One row per comparison: the mean over the paired seeds with its
95 % t-interval, the zero (or one) line, and the verdict with Holm's adjusted verdict;
transfer entries (``<entry>@<source>``) have open markers. ``study.md`` has the same numbers with n, the intervals, the rates each entry was run
at (and whether its tuning window hit its cap), the reference's check against published figures,
every command and every replaced run.
"""

from __future__ import annotations

import pathlib
from typing import Any

from matplotlib import pyplot as plt
from matplotlib import ticker

from paper_figures import report
from paper_figures import runs as runs_lib
from paper_figures import style
from paper_figures import summaries

CURRENCIES = ("steps", "time")
CURRENCY_TITLES = {"steps": "equal steps", "time": "time to target loss"}


def _base(entry: str) -> str:
  return entry.split("/")[0].split("@")[0]


def _scale(metric: str) -> float:
  """Accuracy differences (fractions) in percentage points."""
  return 100.0 if metric.endswith("accuracy") else 1.0


def _comparisons(part: dict[str, Any], currency: str) -> list[dict[str, Any]]:
  rows = [c for c in part.get("comparisons", []) if c.get("currency") == currency]
  return sorted(rows, key=lambda c: style.optimizer_sort_key(_base(c["entry"])) + (c["entry"],))


def _xlabel(part: dict[str, Any], currency: str) -> str:
  if currency == "time":
    return "t_ref / t_entry (> 1: entry faster)"
  metric = part.get("select", "?")
  unit = " (points)" if _scale(metric) == 100.0 else ""
  return f"Δ {metric}{unit} (> 0: entry better)"


def _point(c: dict[str, Any], currency: str, scale: float):
  """``(mean, low, high)`` on the panel's axis, None where there is no value."""
  if currency == "time":
    return c.get("ratio_mean"), c.get("ratio_low"), c.get("ratio_high")
  return tuple(None if c.get(k) is None else c[k] * scale for k in ("mean", "low", "high"))


def _verdict_text(c: dict[str, Any]) -> str:
  if c.get("verdict") is None:
    reached = (f"; reached the target: entry {c['entry_reached']}/{c.get('seeds', '?')}, "
               f"reference {c.get('reference_reached', '?')}/{c.get('seeds', '?')}"
               if "entry_reached" in c else "")
    return f"n={c.get('n', 0)}: no interval{reached}"
  return f"{c['verdict']} (Holm: {c.get('adjusted_verdict') or '-'}), n={c['n']}"


# Long override names shortened on the figure's axis (the table keeps the entries' full names).
_SHORT = (("weight_decay_mask=", "mask="), ("weight_decay=", "wd="), ("keep_on_adamw=", "AdamW on "),
          ("root_warmup_steps=", "root warm-up "))


def entry_label(entry: str) -> str:
  """An entry as a tick label: shortened names, one override per line."""
  for long, short in _SHORT:
    entry = entry.replace(long, short)
  return entry.replace("+", "\n+ ")


def plot_study(summary: dict[str, Any], title: str):
  benchmarks = summary.get("benchmarks", {})
  lines = max([sum(entry_label(c["entry"]).count("\n") + 1 for c in _comparisons(p, "steps"))
               for p in benchmarks.values()] + [1])
  fig, axes = plt.subplots(len(benchmarks), 2, squeeze=False, layout="constrained",
                           figsize=(11.0, (1.0 + 0.22 * lines) * len(benchmarks) + 0.4))
  for (name, part), panel in zip(benchmarks.items(), axes):
    for ax, currency in zip(panel, CURRENCIES):
      comparisons = _comparisons(part, currency)
      scale = _scale(part.get("select", ""))
      for y, c in enumerate(comparisons):
        mean, low, high = _point(c, currency, scale)
        color = style.optimizer_style(_base(c["entry"])).color
        face = "white" if "@" in c["entry"] else color  # transfer entries: open markers
        if mean is not None and low is not None:
          ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", ms=4, color=color,
                      mfc=face, capsize=3)
        elif mean is not None:
          ax.plot(mean, y, "o", ms=4, color=color, mfc="none")
        ax.text(1.02, y, _verdict_text(c), transform=ax.get_yaxis_transform(), va="center",
                fontsize=6)
      ax.axvline(1.0 if currency == "time" else 0.0, color="0.4", lw=0.8, ls="--")
      if currency == "time" and any(_point(c, currency, 1)[0] for c in comparisons):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
      labels = [entry_label(c["entry"]) for c in comparisons] if currency == "steps" else []
      ax.set_yticks(range(len(comparisons)), labels or [""] * len(comparisons), fontsize=7)
      ax.set_ylim(len(comparisons) - 0.5 if comparisons else 0.5, -0.5)
      ax.set_xlabel(_xlabel(part, currency))
      reference = comparisons[0]["reference"] if comparisons else "?"
      ax.set_title(f"{name}: {CURRENCY_TITLES[currency]}, against {reference}", fontsize=8)
  fig.suptitle(title, fontsize=8)
  return fig


def _num(value, scale: float = 1.0, digits: str = ".3g") -> str:
  return "–" if value is None else format(value * scale, digits)


def _rate(part: dict[str, Any], entry: str) -> str:
  tuning = part.get("tuning", {}).get(entry, {})
  lr = tuning.get("chosen_lr")
  if lr is None:
    return "none (every rate diverged)" if tuning.get("all_diverged") else "–"
  if tuning.get("transfer_from"):
    return f"{lr:g} (transfer: {tuning['transfer_from']}'s rate)"
  flags = []
  if tuning.get("cap_hit"):
    flags.append("CAP HIT")
  if tuning.get("grid_edge"):
    flags.append("grid edge")
  window = tuning.get("window") or [None, None]
  text = (f"{lr:g} (window {_num(window[0])}–{_num(window[1])}, "
          f"{tuning.get('extensions', 0)}/{tuning.get('cap', '?')} ext.")
  return text + ("; " + ", ".join(flags) if flags else "") + ")"


def table_markdown(summary: dict[str, Any]) -> str:
  multiplicity = summary.get("multiplicity", {})
  protocol = summary.get("protocol", {})
  lines = [f"Protocol `{protocol.get('name', '?')}`: {protocol.get('seeds', '?')} paired seeds, "
           f"{int(100 * protocol.get('confidence', 0.95))} % t-intervals (n - 1 degrees of "
           f"freedom); verdicts better / worse only when the interval excludes 0. Adjusted: "
           f"{multiplicity.get('method', '?')} over {multiplicity.get('comparisons', '?')} "
           f"comparisons (both currencies, every benchmark), alpha "
           f"{multiplicity.get('alpha', '?')}. Differences are oriented so that > 0 means the "
           f"entry is better; time: t_ref / t_entry (> 1: the entry is faster), training "
           f"seconds without compilation, evaluation or checkpoints.", ""]
  for name, part in summary.get("benchmarks", {}).items():
    scale = _scale(part.get("select", ""))
    target = part.get("target", {})
    lines += [f"## {name} ({part.get('config', '')})", "",
              f"Reference: {part.get('reference')}; metric: {part.get('select')}"
              f"{' (differences in points)' if scale == 100.0 else ''}; target "
              f"{part.get('time_metric')} <= {_num(target.get('value'), 1, '.4g')} "
              f"({target.get('rule', '?')}).", "",
              "| comparison | currency | n | mean | 95 % interval | verdict | adjusted | "
              "entry's rate | reference's rate | notes |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for currency in CURRENCIES:
      for c in _comparisons(part, currency):
        s = 1.0 if currency == "time" else scale
        mean, low, high = ((c.get("ratio_mean"), c.get("ratio_low"), c.get("ratio_high"))
                           if currency == "time" else (c.get("mean"), c.get("low"), c.get("high")))
        if currency == "time":
          notes = (f"reached: entry {c.get('entry_reached')}/{c.get('seeds')}, reference "
                   f"{c.get('reference_reached')}/{c.get('seeds')}")
          if c.get("workers"):
            notes += f"; workers {'/'.join(str(w) for w in c['workers'])}"
          if c.get("load_average_range"):
            low_load, high_load = c["load_average_range"]
            notes += f", load {low_load:.1f}-{high_load:.1f}"
          if c.get("other_session_seeds"):
            notes += f"; seeds {c['other_session_seeds']} left out (timed in other sessions)"
        else:
          notes = (f"diverged: entry {c.get('entry_diverged', 0)}, reference "
                   f"{c.get('reference_diverged', 0)}")
        lines.append(
            f"| {c['entry']} vs {c['reference']} | {CURRENCY_TITLES[currency]} | {c.get('n')} | "
            f"{_num(mean, s)} | [{_num(low, s)}, {_num(high, s)}] | {c.get('verdict') or '–'} | "
            f"{c.get('adjusted_verdict') or '–'} | {_rate(part, c['entry'])} | "
            f"{_rate(part, c['reference'])} | {notes} |")
    lines.append("")
    for check in part.get("reference_check", []):
      study_mean = check.get("study", {}).get("mean")
      verdict = ("reached" if check.get("reached") else "not reached") if check.get(
          "reached") is not None else "not compared"
      lines.append(f"- {part.get('reference')} against {check['label']}: "
                   f"{_num(check.get('value'), scale, '.4g')} vs the study's "
                   f"{_num(study_mean, scale, '.4g')}: {verdict}"
                   f"{'; inside the 95 % interval' if check.get('within_interval') else ''}"
                   f"{' (' + check['note'] + ')' if check.get('note') else ''}")
    for old in part.get("superseded_finals", []):
      lines.append(f"- superseded: {old['entry']} at {old['learning_rate']} ({old['why']})")
    lines.append("")
  lines += ["## Commands", ""]
  for c in summary.get("commands", []):
    lines.append(f"- {c.get('started') or '?'} – {c.get('finished') or 'unfinished'}, commit "
                 f"{(c.get('commit') or '?')[:10]}{' (changed tree)' if c.get('dirty') else ''}, "
                 f"{c.get('workers', '?')} worker(s), {c.get('hardware', '?')}: `{c['command']}`")
  replaced = summary.get("replaced_runs", [])
  lines += ["", f"## Replaced runs ({len(replaced)})", ""]
  for r in replaced:
    old = (r.get("old_result") or {}).get("summary", {})
    lines.append(f"- {r.get('time')}: {r['run']}: {r['reason']} ({', '.join(r.get('changed', []))}); "
                 f"old result: {', '.join(f'{k}={v:.4g}' for k, v in old.items() if isinstance(v, float))}")
  return "\n".join(lines) + "\n"


def build_study(root: pathlib.Path, out_dir: pathlib.Path) -> list[report.Product]:
  """``study[_<n>].png/.pdf`` and ``study[_<n>].md`` per ``study_summary.json`` under ``root``."""
  return summaries.build_per_summary(
      runs_lib.find_study_summaries(root), out_dir, title="Study", stem="study",
      missing=f"no {runs_lib.STUDY_SUMMARY_FILE} (python -m experiments.ablation)",
      plot=lambda summary: plot_study(summary, (
          "Paired differences against the reference, 95 % t-intervals "
          f"({summary.get('hardware', '?')})")),
      table=table_markdown, count=lambda part: f"{len(part.get('comparisons', []))} comparisons")
