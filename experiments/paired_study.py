r"""The study's main protocol, ``paired``: ``python -m experiments.ablation`` (docs/benchmarks.md, Protocol).

1. **Entries.** The benchmark's reference optimizer (Adam; AdamW on the transformer) and
   MBAG, MBAG-EMA and MBAG-N by default; ``--only`` names others: any optimizer with a rate in
   the config, any variant of :func:`experiments.study.variants`, and declared *transfer*
   entries ``<entry>@<source>``, run at ``<source>``'s tuned rate without tuning of their own
   (labelled so in the summary). No other entry inherits a rate.
2. **Tuning, each entry at its own rate** (validation split ``<data set>-val``: the last 20 %
   of the training set held out). A window of ``window`` rates of the 1-3-10 grid
   (:data:`experiments.study.LR_GRID`) centred on the config's rate for the entry's optimizer;
   each rate is run with seeds ``0 .. tune_seeds - 1`` and scored by the MEAN over the seeds
   of the benchmark's ``select`` metric of the final record (a diverged run scores worst, so
   its rate's mean does too). While the best rate is at an edge of the window, the window grows
   by one grid step on that side (when every rate diverged, one step down), at most
   ``max_extensions`` times; the summary reports, per entry, the window, the extensions used,
   the cap, and whether the search stopped with the best still at an edge (``cap_hit``: the cap
   stopped it; ``grid_edge``: the grid's end did). Ties go to the smaller rate.
3. **Final** (train / test split): every entry at its rate, seeds ``0 .. seeds - 1``, run in
   seed order (seed 0 of every entry, then seed 1, ...) so that a pair runs close in time.
   Seeds are paired: the same seed gives the same initialisation and data order to every
   optimizer (``experiments.train.make_keys``).
4. **Comparisons**, each entry against the reference, in two currencies
   (:mod:`experiments.study_stats`):
   - *equal steps*: the paired difference of ``select`` at the last step, oriented so that > 0
     means the entry is better, with its 95 % t-interval (n - 1 degrees of freedom), the
     verdict better / worse when the interval excludes 0 and tie otherwise, and Holm's
     adjusted verdict over all comparisons of the summary (both currencies, every benchmark);
   - *time to target*: training seconds (steps x step time: no compilation, evaluation or
     checkpoints) until the first evaluation of ``time_metric`` at or below the target, compared
     as ``log(t_ref / t_entry)`` over the seeds where both reached it and both runs' timings come
     from the same session (command) on the same hardware; runs that never reached it are
     counted. The target is the benchmark's ``target`` when set, else :data:`TARGET_RULE`.
5. **Records**: every command (``commands``: id, time, git commit, hardware, workers), every
   replaced run with its old result (``replaced_runs``), the reference's result against the
   benchmark's published or earlier figures (``reference_check``), final runs of an entry at a
   rate that is no longer its tuned rate (``superseded_finals``).

A run diverges when its loss or gradient stops being finite (``NonFiniteError``); it is not
retried. Finished runs (``result.json`` whose ``config.json`` matches) are reused, so the
command resumes where it stopped.
"""

from __future__ import annotations

import glob
import json
import math
import pathlib
import statistics
from typing import Any, Callable, Mapping, Sequence

from experiments import study
from experiments import study_stats
from experiments.study import Benchmark
from experiments.study import Entry
from experiments.study import ReferenceFigure

SUMMARY_FILE = "study_summary.json"
HEADLINE = ("mbag", "mbag_ema", "mbag_n")
DEFAULT_SEEDS = 5
DEFAULT_TUNE_SEEDS = 2
DEFAULT_WINDOW = 5
DEFAULT_MAX_EXTENSIONS = 3
ALPHA = study_stats.ALPHA
MULTIPLICITY = "holm"
TARGET_RULE = ("the largest, over the reference's finished seeds, of each seed's lowest "
               "evaluated time_metric: a loss every seed of the reference reaches")
TIME_DEFINITION = ("training seconds until the first evaluation of time_metric at or below the "
                   "target: the sum over the metric records of steps x step_time (step_time "
                   "leaves out evaluation and checkpoints; the compiling first step after a "
                   "(re)start is counted at its interval's step time, its compilation is not; "
                   "compile seconds are reported beside)")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_AE_REPORT = ("test_loss", "train_loss", "test_squared_error", "test_bce_per_pixel")
_CONSTANT_STUDY = "the constant-rate study (results/ablation, protocol stages): "
BENCHMARKS: dict[str, Benchmark] = {
    "mnist1d": Benchmark(
        "mnist1d", "mnist1d:study", "test_accuracy", True, ("test_accuracy", "test_loss",
                                                             "train_loss"),
        figures=(
            ReferenceFigure("published, CNN with Adam (github.com/greydanus/mnist1d README, "
                            "arXiv:2011.14439)", "test_accuracy", value=0.94,
                            note="the authors' protocol: constant rate 1e-2, batch 100"),
            ReferenceFigure("the authors' notebook mnist1d-classification.ipynb after 6000 steps",
                            "test_accuracy", value=0.923,
                            note="6000 steps at a constant 1e-2; the study: 2400 steps, "
                                 "warm-up + cosine, tuned rate"),
            ReferenceFigure("the project's 5-seed reference (results/benchmarks/mnist1d_reference)",
                            "test_accuracy", runs="results/benchmarks/mnist1d_reference/adam/seed_*",
                            note="6000 steps at a constant 1e-2 (configs/mnist1d.py:reference)"),
        )),
    "mnist5k": Benchmark(
        "mnist5k", "mnist5k:study", "test_loss", False, _AE_REPORT,
        figures=(ReferenceFigure(_CONSTANT_STUDY + "Adam", "test_loss",
                                 runs="results/ablation/mnist5k/final/adam/lr_*/seed_*",
                                 note="same 800 steps at a constant tuned rate"),)),
    "digits_ae": Benchmark(
        "digits_ae", "digits:study", "test_loss", False, _AE_REPORT,
        figures=(ReferenceFigure(_CONSTANT_STUDY + "Adam", "test_loss",
                                 runs="results/ablation/digits_ae/final/adam/lr_*/seed_*",
                                 note="same steps at a constant tuned rate"),)),
    # The transformer benchmark: its preset carries its own schedule (warm-up 100 of 1,008
    # steps, cosine to 10 %) and AdamW (decoupled weight decay) is the reference.
    "shakespeare": Benchmark(
        "shakespeare", "shakespeare:reference", "test_loss", False,
        ("test_loss", "test_bits_per_char", "train_loss"), reference="adamw"),
}


# ----------------------------------------------------------------------------- entries


def known_entries(config) -> dict[str, Entry]:
  """Every entry a benchmark can run: each optimizer the config gives a rate, and the variants."""
  bases = {name: Entry(name, name) for name in config.learning_rates}
  return {**bases, **{e.name: e for e in study.variants(config)}}


def select_entries(config, benchmark: Benchmark, only: Sequence[str] | None) -> list[Entry]:
  """The reference first, then ``only`` (default :data:`HEADLINE`); ``a@b``: transfer entries.

  Raises:
    ValueError: an unknown entry, or a transfer whose source is not tuned in this study.
  """
  known = known_entries(config)
  if benchmark.reference not in known:
    raise ValueError(f"benchmark {benchmark.name}: reference optimizer {benchmark.reference!r} "
                     f"has no learning rate in {benchmark.config}")
  names = [benchmark.reference] + [n for n in (only or HEADLINE) if n != benchmark.reference]
  out: list[Entry] = []
  for name in dict.fromkeys(names):
    entry_name, _, source = name.partition("@")
    if entry_name not in known:
      raise ValueError(f"unknown entry {entry_name!r} on {benchmark.name}; known: "
                       f"{sorted(known)} (and <entry>@<source> for a transfer)")
    entry = known[entry_name]
    if source:
      entry = Entry(name, entry.optimizer, entry.overrides, group="transfer", transfer_from=source)
    out.append(entry)
  tuned = {e.name for e in out if e.transfer_from is None}
  bad = sorted(e.name for e in out if e.transfer_from is not None and e.transfer_from not in tuned)
  if bad:
    raise ValueError(f"transfer entries {bad}: their source is not an entry of this study "
                     f"(add it to --only)")
  return out


# ----------------------------------------------------------------------------- stages

JobFn = Callable[..., study.Job]


def _mean_score(values: Sequence[float]) -> float:
  return math.inf if any(not math.isfinite(v) for v in values) else statistics.fmean(values)


def tune(runner, job: JobFn, benchmark: Benchmark, config, entries: Sequence[Entry], *,
         window_size: int, tune_seeds: int, max_extensions: int) -> dict[str, dict]:
  """Stage 2 for every tuned entry at once (rounds of window growth); returns ``tuning``."""
  tuned = [e for e in entries if e.transfer_from is None]
  per_seed: dict[str, dict[float, list[float]]] = {e.name: {} for e in tuned}
  means: dict[str, dict[float, float]] = {e.name: {} for e in tuned}
  windows: dict[str, list[float]] = {}
  pending = {e.name: study.iter_tuning_rates(config.learning_rates[e.optimizer], window_size,
                                             means[e.name], max_extensions) for e in tuned}
  by_name = {e.name: e for e in tuned}
  round_index = 0
  while pending:
    batch = []
    for name, rates_iter in list(pending.items()):
      rates = next(rates_iter, None)
      if rates is None:
        del pending[name]
        continue
      windows[name] = rates
      batch.extend((name, lr, s) for lr in rates if lr not in means[name]
                   for s in range(tune_seeds))
    if not batch:
      continue
    round_index += 1
    results = runner.run([job("tune", by_name[n], lr, s, True) for n, lr, s in batch],
                         f"{benchmark.name} tune {round_index}")
    for (name, lr, _), result in zip(batch, results):
      per_seed[name].setdefault(lr, []).append(study.score(result, benchmark))
    for name, lr, _ in batch:
      means[name][lr] = _mean_score(per_seed[name][lr])
  return {e.name: _tuning_record(per_seed[e.name], means[e.name], windows[e.name], window_size,
                                 max_extensions, benchmark) for e in tuned}


def _tuning_record(per_seed, means, rates, window_size, max_extensions, benchmark) -> dict:
  """What the summary says of one entry's search (see the module docstring)."""
  sign = -1.0 if benchmark.higher_is_better else 1.0  # scores are oriented: back to the metric

  def metric(v):
    return None if not math.isfinite(v) else sign * v

  chosen = study.best_lr(means)
  lo, hi = study.grid_index(rates[0]), study.grid_index(rates[-1])
  at = None if chosen is None else study.grid_index(chosen)
  at_edge = chosen is not None and at in (lo, hi) and lo != hi
  grid_end = at_edge and ((at == lo and lo == 0) or (at == hi and hi == len(study.LR_GRID) - 1))
  extensions = len(rates) - min(window_size, len(study.LR_GRID))
  return {
      "stage": "tuned", "chosen_lr": chosen, "window": [rates[0], rates[-1]],
      "extensions": extensions, "cap": max_extensions,
      "best_at_edge": at_edge, "cap_hit": at_edge and not grid_end and extensions >= max_extensions,
      "grid_edge": grid_end, "all_diverged": chosen is None,
      "scores": {study.lr_key(lr): {"mean": metric(means[lr]),
                                    "values": [metric(v) for v in per_seed[lr]]}
                 for lr in sorted(means)}}


def final(runner, job: JobFn, benchmark: Benchmark, entries: Sequence[Entry],
          tuning: Mapping[str, Mapping[str, Any]], seeds: int
          ) -> tuple[dict[str, dict[int, dict]], dict[str, dict[int, list[dict]]]]:
  """Stage 3: ``(results[entry][seed], records[entry][seed])`` (records: metrics.jsonl)."""
  todo = [(e, s) for s in range(seeds) for e in entries
          if tuning.get(e.name, {}).get("chosen_lr") is not None]
  jobs = [job("final", e, tuning[e.name]["chosen_lr"], s, False) for e, s in todo]
  results = runner.run(jobs, f"{benchmark.name} final")
  out: dict[str, dict[int, dict]] = {}
  records: dict[str, dict[int, list[dict]]] = {}
  for (entry, seed), j, result in zip(todo, jobs, results):
    out.setdefault(entry.name, {})[seed] = result
    path = pathlib.Path(j.workdir) / "metrics.jsonl"
    records.setdefault(entry.name, {})[seed] = (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.exists() else [])
  return out, records


def run_benchmark(runner, root: pathlib.Path, benchmark: Benchmark, *, seeds: int = DEFAULT_SEEDS,
                  tune_seeds: int = DEFAULT_TUNE_SEEDS, window_size: int = DEFAULT_WINDOW,
                  max_extensions: int = DEFAULT_MAX_EXTENSIONS, only: Sequence[str] | None = None,
                  with_epochs: Callable[[study.Job], study.Job] = lambda j: j) -> dict:
  """The ``paired`` protocol on one benchmark; returns its part of the summary."""
  if tune_seeds < 2 or seeds < 1:
    raise ValueError(f"tune_seeds={tune_seeds} must be >= 2 (a rate is scored on a mean over "
                     f"seeds) and seeds={seeds} >= 1")
  config = study.load_config(benchmark.config)
  entries = select_entries(config, benchmark, only)

  def job(stage, entry, lr, seed, validation):
    return with_epochs(study.make_job(root, benchmark, stage, entry, lr, seed, validation))

  tuning = tune(runner, job, benchmark, config, entries, window_size=window_size,
                tune_seeds=tune_seeds, max_extensions=max_extensions)
  for e in entries:
    if e.transfer_from is not None:
      tuning[e.name] = {"stage": f"transfer: untuned, at {e.transfer_from}'s tuned rate",
                        "transfer_from": e.transfer_from,
                        "chosen_lr": tuning[e.transfer_from]["chosen_lr"]}
  results, records = final(runner, job, benchmark, entries, tuning, seeds)
  return summarize(benchmark, entries, tuning, results, records,
                   superseded=superseded_finals(root, benchmark, tuning))


# ----------------------------------------------------------------------------- summary


def target_of(benchmark: Benchmark, reference_records: Mapping[int, Sequence[dict]],
              reference_results: Mapping[int, dict]) -> dict[str, Any]:
  """The time-to-target target: the benchmark's fixed one, else :data:`TARGET_RULE`."""
  if benchmark.target is not None:
    return {"value": benchmark.target, "rule": "fixed in the benchmark's record"}
  bests = [study_stats.best_value(reference_records[s], benchmark.time_metric)
           for s in sorted(reference_records) if not reference_results[s].get("diverged")]
  bests = [b for b in bests if b is not None]
  return {"value": max(bests) if bests else None, "rule": TARGET_RULE}


def _select(result: Mapping[str, Any] | None, metric: str) -> float | None:
  if not result or result.get("diverged"):
    return None
  value = result.get("summary", {}).get(metric)
  return value if value is not None and math.isfinite(value) else None


def _session(result: Mapping[str, Any]) -> tuple[Any, Any]:
  session = result.get("session") or {}
  return session.get("id"), session.get("hardware")


def compare_entry(benchmark: Benchmark, name: str, results, times) -> list[dict[str, Any]]:
  """The entry's two comparisons against the reference (equal steps, time to target)."""
  ref = benchmark.reference
  steps = study_stats.compare(study_stats.paired(
      {s: _select(r, benchmark.select) for s, r in results[name].items()},
      {s: _select(r, benchmark.select) for s, r in results[ref].items()},
      benchmark.higher_is_better))
  steps.update(entry=name, reference=ref, currency="steps", metric=benchmark.select,
               seeds=len(results[name]),
               entry_diverged=sum(bool(r.get("diverged")) for r in results[name].values()),
               reference_diverged=sum(bool(r.get("diverged")) for r in results[ref].values()))
  same, other = [], []  # seeds whose two runs were timed in one session on one machine
  for s in sorted(set(times[name]) & set(times[ref])):
    (same if _session(results[name][s]) == _session(results[ref][s]) else other).append(s)
  ratios = study_stats.log_time_ratios(
      {s: times[name][s]["seconds"] for s in same}, {s: times[ref][s]["seconds"] for s in same})
  time = study_stats.compare(ratios)
  time.update(entry=name, reference=ref, currency="time", metric=f"log time ratio "
              f"(reference / entry) to {benchmark.time_metric} <= target",
              entry_reached=sum(t["reached"] for t in times[name].values()),
              reference_reached=sum(t["reached"] for t in times[ref].values()),
              seeds=len(times[name]), other_session_seeds=sorted(other))
  for key in ("mean", "low", "high"):
    time[f"ratio_{key}"] = None if time[key] is None else math.exp(time[key])
  used = [results[n][s].get("session") or {} for s in same for n in (name, ref)]
  loads = [u["load_average_start"][0] for u in used if u.get("load_average_start")]
  time.update(sessions=sorted({str(u.get("id")) for u in used}),
              hardware=sorted({str(u.get("hardware")) for u in used}),
              workers=sorted({u["workers"] for u in used if u.get("workers") is not None}),
              load_average_range=[min(loads), max(loads)] if loads else None)
  return [steps, time]


def summarize(benchmark: Benchmark, entries: Sequence[Entry], tuning: Mapping[str, dict],
              results: Mapping[str, Mapping[int, dict]],
              records: Mapping[str, Mapping[int, Sequence[dict]]],
              superseded: Sequence[dict] = ()) -> dict:
  """The benchmark's part of the summary (see the module docstring)."""
  ref = benchmark.reference
  target = (target_of(benchmark, records[ref], results[ref]) if ref in results
            else {"value": None, "rule": "no final run of the reference"})
  times = {name: {s: (study_stats.time_to_target(rec, target["value"], benchmark.time_metric)
                      if target["value"] is not None and not results[name][s].get("diverged")
                      else {"reached": False, "seconds": None, "step": None,
                            "compile_seconds": None})
                  for s, rec in by_seed.items()} for name, by_seed in records.items()}
  final_rows = {}
  for e in entries:
    if e.name not in results:
      continue
    by_seed = results[e.name]
    done = [by_seed[s] for s in sorted(by_seed)]
    row = {"learning_rate": tuning[e.name]["chosen_lr"], "group": e.group,
           "rate_source": tuning[e.name]["stage"], "transfer_from": e.transfer_from,
           "seeds": len(done), "diverged": sum(bool(r.get("diverged")) for r in done),
           "run_seconds": study.mean_std([r["seconds"] for r in done]),
           "time_to_target": {str(s): t for s, t in sorted(times[e.name].items())},
           "sessions": sorted({str(_session(r)[0]) for r in done})}
    for metric in benchmark.report:
      row[metric] = study.mean_std([_select(r, metric) for r in done])
    final_rows[e.name] = row
  comparisons = [c for e in entries if e.name != ref and e.name in results and ref in results
                 for c in compare_entry(benchmark, e.name, results, times)]
  return {"config": benchmark.config, "select": benchmark.select,
          "higher_is_better": benchmark.higher_is_better, "report": list(benchmark.report),
          "reference": ref, "time_metric": benchmark.time_metric, "target": target,
          "tuning": dict(tuning), "final": final_rows, "comparisons": comparisons,
          "reference_check": reference_check(benchmark, results.get(ref, {})),
          "superseded_finals": list(superseded)}


def reference_check(benchmark: Benchmark, reference_results: Mapping[int, dict],
                    repo_root: pathlib.Path = REPO_ROOT) -> list[dict[str, Any]]:
  """The reference's mean ``select`` (with its t-interval) against each of the benchmark's figures.

  ``reached``: the mean is at least as good as the figure; ``within_interval``: the figure lies
  inside the 95 % t-interval of the mean (consistent with it).
  """
  values = [v for v in (_select(r, benchmark.select) for r in reference_results.values())
            if v is not None]
  ours = study_stats.t_interval(values) if values else {"n": 0, "mean": None}
  out = []
  for fig in benchmark.figures:
    item = {"label": fig.label, "metric": fig.metric, "note": fig.note, "value": fig.value,
            "study": {k: ours.get(k) for k in ("n", "mean", "low", "high")}}
    if fig.runs is not None:
      runs = figure_runs(repo_root, fig.runs, fig.metric)
      item.update(runs=fig.runs, runs_values=runs,
                  value=statistics.fmean(runs) if runs else None,
                  runs_sd=statistics.stdev(runs) if len(runs) > 1 else None)
    if fig.metric != benchmark.select or item["value"] is None or ours["mean"] is None:
      item.update(reached=None, within_interval=None)
    else:
      better = (ours["mean"] >= item["value"]) if benchmark.higher_is_better else (
          ours["mean"] <= item["value"])
      inside = (ours.get("low") is not None and ours["low"] <= item["value"] <= ours["high"])
      item.update(reached=better, within_interval=inside)
    out.append(item)
  return out


def figure_runs(repo_root: pathlib.Path, pattern: str, metric: str) -> list[float]:
  """The last value of ``metric`` in each run directory matching ``pattern``."""
  values = []
  for d in sorted(glob.glob(str(repo_root / pattern))):
    path = pathlib.Path(d) / "metrics.jsonl"
    if not path.exists():
      continue
    last = [json.loads(line) for line in path.read_text().splitlines() if metric in line]
    if last and last[-1].get(metric) is not None:
      values.append(float(last[-1][metric]))
  return values


def superseded_finals(root: pathlib.Path, benchmark: Benchmark,
                      tuning: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Final runs on disk at a rate other than their entry's tuned rate now (kept and listed)."""
  out = []
  base = root / benchmark.name / "final"
  for entry_dir in sorted(p for p in base.glob("*") if p.is_dir()) if base.exists() else []:
    chosen = tuning.get(entry_dir.name, {}).get("chosen_lr")
    for lr_dir in sorted(entry_dir.glob("lr_*")):
      if chosen is not None and lr_dir.name == f"lr_{study.lr_key(chosen)}":
        continue
      seeds = {}
      for seed_dir in sorted(lr_dir.glob("seed_*")):
        result = study.read_result(seed_dir)
        seeds[seed_dir.name] = None if result is None else _select(result, benchmark.select)
      out.append({"entry": entry_dir.name, "learning_rate": lr_dir.name[3:],
                  "tuned_rate_now": chosen, benchmark.select: seeds,
                  "why": "not the entry's tuned rate now (or the entry is not in this command)"})
  return out


def apply_multiplicity(parts: Mapping[str, dict], alpha: float = ALPHA) -> dict[str, Any]:
  """Holm over every comparison with a p-value in ``parts`` (in place); returns the family."""
  family = [c for part in parts.values() for c in part.get("comparisons", [])
            if c.get("p_value") is not None]
  adjusted, rejected = study_stats.holm([c["p_value"] for c in family], alpha)
  for c, p, r in zip(family, adjusted, rejected):
    c["adjusted_p"] = p
    c["adjusted_verdict"] = study_stats.adjusted_verdict(c["mean"], r)
  for part in parts.values():
    for c in part.get("comparisons", []):
      if c.get("p_value") is None:
        c["adjusted_p"], c["adjusted_verdict"] = None, None
  return {"method": MULTIPLICITY, "alpha": alpha, "comparisons": len(family),
          "without_interval": sum(1 for part in parts.values()
                                  for c in part.get("comparisons", []) if c.get("p_value") is None),
          "family": "every comparison of the summary: both currencies, every benchmark"}


def protocol(*, seeds: int, tune_seeds: int, window: int, max_extensions: int,
             epochs: int | None, only: Sequence[str] | None) -> dict[str, Any]:
  return {"name": "paired", "lr_grid": list(study.LR_GRID), "window": window, "seeds": seeds,
          "tune_seeds": tune_seeds, "max_extensions": max_extensions, "epochs_override": epochs,
          "only": list(only) if only else None, "confidence": study_stats.CONFIDENCE,
          "multiplicity": MULTIPLICITY, "time_to_target": TIME_DEFINITION,
          "compilation_included": False, "target_rule": TARGET_RULE,
          "description": __doc__.split("\n\n", 1)[1].strip()}


def write_summary(path: pathlib.Path, parts: Mapping[str, dict], protocol_record: dict,
                  command: Mapping[str, Any], hardware: str, replaced: Sequence[dict]) -> dict:
  """:func:`experiments.study.write_summary` with Holm over every benchmark's comparisons (this
  command's and the earlier ones') and the replaced runs."""
  return study.write_summary(path, parts, protocol_record, command, hardware,
                             finalize=lambda merged: {"multiplicity": apply_multiplicity(merged)},
                             replaced_runs=list(replaced))


# ----------------------------------------------------------------------------- budget


def plan_counts(config, benchmark: Benchmark, only: Sequence[str] | None, *, window: int,
                tune_seeds: int, seeds: int, max_extensions: int) -> dict[str, dict[str, Any]]:
  """Runs per entry: ``{"optimizer", "tune": without extensions, "tune_max": with every
  extension, "final"}``."""
  out = {}
  size = min(window, len(study.LR_GRID))
  for e in select_entries(config, benchmark, only):
    tuned = e.transfer_from is None
    out[e.name] = {"optimizer": e.optimizer, "tune": size * tune_seeds if tuned else 0,
                   "tune_max": min(size + max_extensions, len(study.LR_GRID)) * tune_seeds
                   if tuned else 0, "final": seeds}
  return out
