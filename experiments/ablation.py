r"""The study: ``python -m experiments.ablation`` (protocols ``paired`` and ``stages``).

  python -m experiments.ablation --workdir=results/study --workers=2

runs the main protocol, ``paired`` (``experiments/paired_study.py``: warm-up + cosine presets,
every entry tuned at its own rate on the validation split over ``--tune_seeds`` seeds, a window
grown at an edge up to ``--max_extensions`` times, ``--seeds`` paired final seeds, paired
differences with 95 % t-intervals at equal steps and in time to a target loss, Holm over all
comparisons) on every benchmark, resumably (finished runs are reused), with a progress bar per
stage, and writes ``<workdir>/study_summary.json``. ``--protocol=stages`` runs the constant-rate
study of ``results/ablation`` (``experiments/study.py``: tune the base optimizers, spot-check the
variants at their base's rate, final seeds) into ``ablation_summary.json``.

Each run directory keeps ``config.json``, ``metrics.jsonl`` and ``result.json`` (checkpoints are
deleted once a run is done); a finished run whose config no longer matches is replaced and
logged with its old result in ``<workdir>/replaced_runs.jsonl``
(``experiments/study_records.py``). Every command is appended to the summary's ``commands``.
``--measure`` times one run per benchmark and optimizer at ``--measure_epochs`` epochs and
extrapolates to the preset's length (``<workdir>/timings.json``); ``--estimate`` then prints the
runs per benchmark and entry and the predicted wall time at ``--workers``, without training.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags

from experiments import paired_study
from experiments import rundir
from experiments import study
from experiments import study_records
from experiments import xla_flags


@dataclasses.dataclass(frozen=True)
class Protocol:
  """What a protocol runs by default: its benchmarks, summary file, directory, seeds, cap."""
  benchmarks: Mapping[str, study.Benchmark]
  summary_file: str
  workdir: str
  seeds: int
  max_extensions: int


PROTOCOLS: dict[str, Protocol] = {
    "paired": Protocol(paired_study.BENCHMARKS, paired_study.SUMMARY_FILE, "results/study",
                       paired_study.DEFAULT_SEEDS, paired_study.DEFAULT_MAX_EXTENSIONS),
    "stages": Protocol(study.CONSTANT_RATE_BENCHMARKS, study.SUMMARY_FILE, "results/ablation", 3,
                       study.MAX_EXTENSIONS),
}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the command's flags (called by ``__main__``: importing the module defines none)."""
  kw = {"flag_values": flag_values}
  flags.DEFINE_enum("protocol", "paired", list(PROTOCOLS),
                    "paired: the main protocol (experiments/paired_study.py); stages: the "
                    "constant-rate study of results/ablation (experiments/study.py).", **kw)
  flags.DEFINE_string("workdir", None, "Directory of the study (default: results/study for "
                      "paired, results/ablation for stages).", **kw)
  flags.DEFINE_list("benchmarks", None, "Benchmarks to run (default: all of the protocol's).",
                    **kw)
  flags.DEFINE_integer("workers", 1, "Runs at the same time (processes).", lower_bound=1,
                       **kw)
  flags.DEFINE_integer("seeds", None, "Seeds of the final stage (default: 5 paired, 3 stages).",
                       lower_bound=1, **kw)
  flags.DEFINE_integer("tune_seeds", paired_study.DEFAULT_TUNE_SEEDS,
                       "paired: seeds whose mean scores a tuning rate (at least 2).",
                       lower_bound=2, **kw)
  flags.DEFINE_integer("window", 5, "Learning rates of the first tuning window.", lower_bound=1,
                       **kw)
  flags.DEFINE_integer("max_extensions", None, "Cap on the window's growth (default: 3 paired, "
                       "2 stages).", lower_bound=0, **kw)
  flags.DEFINE_string("data_dir", None, "Where to look for data sets first.", **kw)
  flags.DEFINE_list("only", None,
                    "Entries to run. paired: besides the reference (always run; default "
                    "mbag,mbag_ema,mbag_n), <entry>@<source> runs <entry> untuned at <source>'s "
                    "tuned rate; stages: e.g. adam,mbag,mbag/momentum=0.0", **kw)
  flags.DEFINE_bool("spot_check", True, "stages: variants try their base's rate and one step "
                    "either side (false: the base's rate only, on the validation split).", **kw)
  flags.DEFINE_integer("epochs", None, "Override every run's num_epochs (tests, trials).",
                       **kw)
  flags.DEFINE_bool("estimate", False, "Print runs and predicted wall time; train nothing.",
                    **kw)
  flags.DEFINE_bool("measure", False, "Time one short run per benchmark and optimizer.", **kw)
  flags.DEFINE_integer("measure_epochs", 2, "Epochs of a --measure run.", **kw)


TIMINGS_FILE = "timings.json"


def _run_job(job: study.Job, data_dir: str | None, session: Mapping[str, Any] | None = None
             ) -> dict:
  """Trains one run in this (worker) process; writes and returns its ``result.json``.

  ``session``: the command's id, hardware and workers, stored in the result with the load
  average at the run's start and end (timings are compared within one session only).
  """
  import ml_collections  # pylint: disable=import-outside-toplevel
  from experiments import errors  # pylint: disable=import-outside-toplevel
  from experiments import train  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(job.workdir)
  config = ml_collections.ConfigDict(json.loads(job.config_json))
  workdir.mkdir(parents=True, exist_ok=True)
  start, load_start, restarted = time.time(), study_records.load_average(), None
  with open(workdir / "log.txt", "a", encoding="utf-8") as log, \
      contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
    try:
      try:
        summary, diverged = dict(train.run(config, workdir, data_dir).summary), False
      except errors.ConfigError as e:
        # An unfinished run of another config (written by an older version): start it afresh;
        # the runner logs it as replaced.
        print(f"{workdir}: restarting an unfinished run ({str(e)[:200]})", flush=True)
        restarted = {"reason": "restarted: an unfinished run of another config",
                     "error": str(e)[:500], "old_metric_records": _count_lines(
                         workdir / "metrics.jsonl")}
        for sub in ("checkpoints", "tensorboard"):
          shutil.rmtree(workdir / sub, ignore_errors=True)
        for name in ("metrics.jsonl", "config.json"):
          (workdir / name).unlink(missing_ok=True)
        summary, diverged = dict(train.run(config, workdir, data_dir).summary), False
    except train.NonFiniteError as e:
      summary, diverged = {"error": str(e)}, True
  result = {"summary": summary, "diverged": diverged, "seconds": time.time() - start}
  if session is not None:
    result["session"] = {**session, "load_average_start": load_start,
                         "load_average_end": study_records.load_average()}
  if restarted is not None:
    result["restarted"] = restarted
  (workdir / study.RESULT_FILE).write_text(json.dumps(result, indent=2, default=float) + "\n")
  for sub in ("checkpoints", "tensorboard"):  # config.json and metrics.jsonl stay
    shutil.rmtree(workdir / sub, ignore_errors=True)
  (workdir / rundir.LOCK_FILE).unlink(missing_ok=True)  # released (empty) when the run ended
  if (workdir / "log.txt").stat().st_size == 0:
    (workdir / "log.txt").unlink()
  return result


def _count_lines(path: pathlib.Path) -> int:
  return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


class Runner:
  """Runs jobs on ``workers`` spawned processes (one JAX runtime each), skipping finished ones.

  A finished run is reused only when its ``config.json`` matches the job's config
  (``study_records.config_differences``); otherwise it is logged as replaced, with its old
  result, in ``<root>/replaced_runs.jsonl`` and run again. ``session`` goes into every result.
  """

  def __init__(self, workers: int, data_dir: str | None, root: os.PathLike | str = ".",
               session: Mapping[str, Any] | None = None):
    self.workers, self.data_dir = workers, data_dir
    self.root, self.session = pathlib.Path(root), dict(session) if session else None
    self.trained = 0
    context = multiprocessing.get_context("spawn")
    # Spawned workers start a fresh interpreter: they set the entry points' flags themselves
    # (XLA_FLAGS is inherited, glibc's setting to keep freed memory is per process).
    self.pool = (concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=xla_flags.set_entry_point_flags)
                 if workers > 1 else None)
    self._neutral = None

  def _reusable(self, job: study.Job) -> dict | None:
    """The job's finished result if its config is the job's; else None (a changed one replaced)."""
    workdir = pathlib.Path(job.workdir)
    result = study.read_result(workdir)
    stored = workdir / "config.json"
    if result is None or not stored.exists():
      return result
    if self._neutral is None:
      self._neutral = study_records.neutral_fields()
    changed = study_records.config_differences(json.loads(stored.read_text()),
                                               json.loads(job.config_json), self._neutral)
    if not changed:
      return result
    study_records.replace_run(self.root, workdir, "config changed", result, changed,
                              (self.session or {}).get("id"))
    return None

  def _done(self, job: study.Job, result: dict) -> dict:
    self.trained += 1
    restarted = result.get("restarted")
    if restarted:
      study_records.log_replaced(self.root, {
          "run": os.path.relpath(job.workdir, self.root), "reason": restarted["reason"],
          "changed": [restarted["error"]], "old_result": None,
          "old_metric_records": restarted["old_metric_records"],
          "command_id": (self.session or {}).get("id")})
    return result

  def run(self, jobs: Sequence[study.Job], desc: str) -> list[dict]:
    import tqdm  # pylint: disable=import-outside-toplevel

    results: list[dict | None] = [self._reusable(j) for j in jobs]
    todo = [i for i, r in enumerate(results) if r is None]
    with tqdm.tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run",
                   dynamic_ncols=True) as bar:
      if self.pool is None:
        for i in todo:
          results[i] = self._done(jobs[i], _run_job(jobs[i], self.data_dir, self.session))
          bar.update(1)
      else:
        futures = {self.pool.submit(_run_job, jobs[i], self.data_dir, self.session): i
                   for i in todo}
        for future in concurrent.futures.as_completed(futures):
          i = futures[future]
          results[i] = self._done(jobs[i], future.result())
          bar.update(1)
    return results  # type: ignore[return-value]

  def close(self):
    if self.pool is not None:
      self.pool.shutdown()


def run_benchmark(runner: Runner, root: pathlib.Path, benchmark: study.Benchmark, *, seeds: int,
                  window_size: int, only: Sequence[str] | None, epochs: int | None,
                  spot_check: bool = True, max_extensions: int = study.MAX_EXTENSIONS) -> dict:
  """Protocol ``stages``: the three stages of one benchmark; returns its part of the summary.

  ``spot_check=False`` skips stage 2: every variant runs at its base's chosen rate (a cut of
  the protocol, recorded in the summary).
  """
  config = study.load_config(benchmark.config)
  entries = [e for e in study.entries(config) if not only or e.name in only]
  names = {e.name for e in entries}
  missing_bases = sorted({e.base for e in entries if e.base and e.base not in names})
  if missing_bases:
    raise ValueError(f"--only: variants need their base optimizers {missing_bases} too")

  def job(stage, entry, lr, seed, validation):
    return _with_epochs(study.make_job(root, benchmark, stage, entry, lr, seed, validation), epochs)

  tuning: dict[str, dict] = {}
  # Stage 1: base optimizers on a window of the grid, grown while the best is at an edge.
  scores: dict[str, dict[float, float]] = {e.name: {} for e in entries if e.base is None}
  pending = {e.name: study.iter_tuning_rates(config.learning_rates[e.optimizer], window_size,
                                             scores[e.name], max_extensions)
             for e in entries if e.base is None}
  by_name = {e.name: e for e in entries}
  round_index = 0
  while pending:
    batch = []
    for name, rates_iter in list(pending.items()):
      rates = next(rates_iter, None)
      if rates is None:
        del pending[name]
        continue
      batch.extend((name, lr) for lr in rates if lr not in scores[name])
    if not batch and not pending:
      break
    jobs = [job("tune", by_name[n], lr, 0, True) for n, lr in batch]
    round_index += 1
    for (name, lr), result in zip(batch, runner.run(jobs, f"{benchmark.name} tune {round_index}")):
      scores[name][lr] = study.score(result, benchmark)
  for name, s in scores.items():
    tuning[name] = {"scores": {study.lr_key(lr): (v if math.isfinite(v) else None)
                               for lr, v in sorted(s.items())},
                    "chosen_lr": study.best_lr(s), "stage": "tune"}
  # Stage 2: variants at their base's rate and one step either side.
  spot = [(e, lr) for e in entries if e.base is not None and tuning[e.base]["chosen_lr"]
          for lr in (study.neighbours(tuning[e.base]["chosen_lr"]) if spot_check
                     else [tuning[e.base]["chosen_lr"]])]
  results = runner.run([job("tune", e, lr, 0, True) for e, lr in spot], f"{benchmark.name} spot")
  spot_scores: dict[str, dict[float, float]] = {}
  for (entry, lr), result in zip(spot, results):
    spot_scores.setdefault(entry.name, {})[lr] = study.score(result, benchmark)
  for name, s in spot_scores.items():
    tuning[name] = {"scores": {study.lr_key(lr): (v if math.isfinite(v) else None)
                               for lr, v in sorted(s.items())},
                    "chosen_lr": study.best_lr(s),
                    "stage": "spot check" if spot_check else "base rate"}
  # Stage 3: every entry at its rate, seeds on the test split.
  chosen = [e for e in entries if tuning.get(e.name, {}).get("chosen_lr")]
  final_jobs = [(e, s) for e in chosen for s in range(seeds)]
  results = runner.run([job("final", e, tuning[e.name]["chosen_lr"], s, False)
                        for e, s in final_jobs], f"{benchmark.name} final")
  finals: dict[str, list] = {}
  for (entry, _), result in zip(final_jobs, results):
    finals.setdefault(entry.name, []).append(result)
  return study.summarize(benchmark, tuning, finals, {e.name: e.group for e in entries})


def _with_epochs(job: study.Job, epochs: int | None) -> study.Job:
  """``job`` with ``num_epochs`` replaced (None: unchanged); a warm-up shrinks or grows with
  the run (``warmup_steps x epochs / num_epochs``, rounded down), keeping the schedule's shape."""
  if epochs is None:
    return job
  config = json.loads(job.config_json)
  if config.get("lr_schedule") == "warmup_cosine" and config.get("warmup_steps"):
    config["warmup_steps"] = config["warmup_steps"] * epochs // config["num_epochs"]
  config["num_epochs"] = epochs
  return study.Job(job.workdir, json.dumps(config))


def measure(runner: Runner, root: pathlib.Path, benchmarks: Sequence[study.Benchmark],
            epochs: int, optimizers: Mapping[str, Sequence[str]]) -> dict:
  """Seconds per run of each of ``optimizers[benchmark]`` at the benchmark's full length.

  One run of ``epochs`` epochs per (benchmark, optimizer) on the training split (seed 0, the
  config's rate; a tenth of it when that diverged), extrapolated by
  :func:`study.extrapolate_seconds`.
  """
  timings: dict[str, dict[str, float]] = {}
  for benchmark in benchmarks:
    config = study.load_config(benchmark.config)
    names = sorted(optimizers[benchmark.name])

    def job(name, lr):
      return _with_epochs(study.make_job(root / "timing", benchmark, "measure",
                                         study.Entry(name, name), lr, 0, False), epochs)

    jobs = [job(name, config.learning_rates[name]) for name in names]
    results = runner.run(jobs, f"{benchmark.name} measure")
    # A run that diverged stopped early: time it again at a tenth of the rate.
    retry = {i: job(names[i], config.learning_rates[names[i]] / 10)
             for i, r in enumerate(results) if r.get("diverged")}
    for i, result in zip(retry, runner.run(list(retry.values()), f"{benchmark.name} again")):
      results[i], jobs[i] = result, retry[i]
    timings[benchmark.name] = {}
    for name, result, j in zip(names, results, jobs):
      records = [json.loads(line) for line in
                 (pathlib.Path(j.workdir) / "metrics.jsonl").read_text().splitlines()]
      timings[benchmark.name][name] = study.extrapolate_seconds(
          result["seconds"], records, epochs, config.num_epochs)
  return timings


def _optimizers(protocol_name: str, benchmarks, only) -> dict[str, list[str]]:
  """The optimizers whose runs a study of ``benchmarks`` has (what ``--measure`` times)."""
  out = {}
  for b in benchmarks:
    config = study.load_config(b.config)
    if protocol_name == "paired":
      entries = paired_study.select_entries(config, b, only)
    else:
      entries = [e for e in study.entries(config) if not only or e.name in only]
    out[b.name] = sorted({e.optimizer for e in entries})
  return out


def estimate_lines(protocol_name: str, benchmarks, timings: Mapping[str, Mapping[str, float]],
                   workers: int, *, seeds: int, window: int, tune_seeds: int,
                   max_extensions: int, only, spot_check: bool) -> list[str]:
  """The ``--estimate`` report: runs per benchmark and entry, predicted wall time at ``workers``.

  ``paired``: without window extensions, and with every entry's window grown to the cap (the
  most it can cost). Raises KeyError naming a benchmark or optimizer that was not measured.
  """
  lines = []
  if protocol_name == "stages":
    counts = {b.name: study.plan_counts(study.load_config(b.config), window, seeds, spot_check)
              for b in benchmarks}
    for b, c in counts.items():
      lines.append(f"{b}: {sum(c.values())} runs " + ", ".join(
          f"{o} {n}" for o, n in sorted(c.items())))
    seconds = study.estimate_seconds(counts, _measured(timings, counts), workers)
    lines.append(f"estimated wall time with {workers} worker(s): {seconds / 3600:.2f} h "
                 f"(without window extensions)")
    return lines
  low = high = 0.0
  for b in benchmarks:
    plan = paired_study.plan_counts(study.load_config(b.config), b, only, window=window,
                                    tune_seeds=tune_seeds, seeds=seeds,
                                    max_extensions=max_extensions)
    per_run = _measured(timings, {b.name: {p["optimizer"]: 1 for p in plan.values()}})[b.name]
    lines.append(f"{b.name} ({b.config}): entry runs (tune + final, tune up to the cap) x "
                 f"seconds per run")
    b_low = b_high = 0.0
    for name, p in plan.items():
      t = per_run[p["optimizer"]]
      b_low += (p["tune"] + p["final"]) * t
      b_high += (p["tune_max"] + p["final"]) * t
      lines.append(f"  {name}: {p['tune']} + {p['final']} = {p['tune'] + p['final']} runs "
                   f"(up to {p['tune_max'] + p['final']}) x {t:.0f} s")
    runs = sum(p["tune"] + p["final"] for p in plan.values())
    runs_max = sum(p["tune_max"] + p["final"] for p in plan.values())
    lines.append(f"  {b.name}: {runs} runs (up to {runs_max}), {b_low / 3600:.2f} h "
                 f"(up to {b_high / 3600:.2f} h) of one worker")
    low, high = low + b_low, high + b_high
  lines.append(f"estimated wall time with {workers} worker(s): {low / workers / 3600:.2f} h "
               f"without window extensions, up to {high / workers / 3600:.2f} h with every "
               f"window grown to the cap (tuning runs train on the 80 % of the training set "
               f"outside the validation split: a slight over-estimate)")
  return lines


def _measured(timings, counts):
  missing = sorted(f"{b}/{o}" for b, c in counts.items() for o in c
                   if o not in timings.get(b, {}))
  if missing:
    raise KeyError(f"no measured seconds per run for {missing}: run --measure with the same "
                   f"--protocol, --benchmarks and --only")
  return timings


def main(argv: Sequence[str]) -> int:
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  proto = PROTOCOLS[f.protocol]
  root = pathlib.Path(f.workdir or proto.workdir)
  names = f.benchmarks or list(proto.benchmarks)
  unknown = sorted(set(names) - set(proto.benchmarks))
  if unknown:
    raise app.UsageError(f"unknown benchmark(s) {unknown} for --protocol={f.protocol}; known: "
                         f"{sorted(proto.benchmarks)}")
  benchmarks = [proto.benchmarks[b] for b in names]
  seeds = f.seeds or proto.seeds
  max_extensions = proto.max_extensions if f.max_extensions is None else f.max_extensions
  try:  # a bad --only fails here, before anything runs
    optimizers = _optimizers(f.protocol, benchmarks, f.only)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  timings_path = root / TIMINGS_FILE
  if f.estimate:
    if not timings_path.exists():
      print(f"no {timings_path}: run with --measure first", file=sys.stderr)
      return 1
    timings = json.loads(timings_path.read_text())
    try:
      lines = estimate_lines(f.protocol, benchmarks, timings["seconds_per_run"], f.workers,
                             seeds=seeds, window=f.window, tune_seeds=f.tune_seeds,
                             max_extensions=max_extensions, only=f.only,
                             spot_check=f.spot_check)
    except KeyError as e:
      print(f"{timings_path}: {e.args[0]}", file=sys.stderr)
      return 1
    print("\n".join(lines))
    print(f"seconds per run: {timings_path} ({timings.get('hardware')}, measured with "
          f"{timings.get('workers')} worker(s))")
    return 0
  root.mkdir(parents=True, exist_ok=True)
  command = study_records.command_record("experiments.ablation", workers=f.workers,
                                         protocol=f.protocol, benchmarks=names)
  session = {"id": command["id"], "hardware": command["hardware"], "workers": f.workers}
  runner = Runner(f.workers, f.data_dir, root, session)
  try:
    if f.measure:
      timings = measure(runner, root, benchmarks, f.measure_epochs, optimizers)
      earlier = json.loads(timings_path.read_text()) if timings_path.exists() else {}
      merged = {**earlier.get("seconds_per_run", {}), **timings}
      command.update(finished=study_records.now(), runs_trained=runner.trained)
      timings_path.write_text(json.dumps({
          "seconds_per_run": merged, "command": command["command"], "hardware": command["hardware"],
          "workers": f.workers, "commands": study_records.merge_commands(earlier, command)},
          indent=2) + "\n")
      print(json.dumps(timings, indent=2))
      return 0
    parts = {}
    for benchmark in benchmarks:
      parts[benchmark.name] = _run_one(runner, root, benchmark, seeds, max_extensions)
      command["runs_trained"] = runner.trained
      _write(root, proto, parts, command, seeds, max_extensions)
    command.update(finished=study_records.now(), runs_trained=runner.trained)
    _write(root, proto, parts, command, seeds, max_extensions)
  finally:
    runner.close()
  print(f"summary: {root / proto.summary_file}")
  return 0


def _run_one(runner, root, benchmark, seeds, max_extensions) -> dict:
  f = flags.FLAGS
  if f.protocol == "paired":
    return paired_study.run_benchmark(
        runner, root, benchmark, seeds=seeds, tune_seeds=f.tune_seeds, window_size=f.window,
        max_extensions=max_extensions, only=f.only,
        with_epochs=lambda job: _with_epochs(job, f.epochs))
  return run_benchmark(runner, root, benchmark, seeds=seeds, window_size=f.window, only=f.only,
                       epochs=f.epochs, spot_check=f.spot_check, max_extensions=max_extensions)


def _write(root, proto, parts, command, seeds, max_extensions) -> None:
  f = flags.FLAGS
  path = root / proto.summary_file
  if f.protocol == "paired":
    record = paired_study.protocol(seeds=seeds, tune_seeds=f.tune_seeds, window=f.window,
                                   max_extensions=max_extensions, epochs=f.epochs, only=f.only)
    paired_study.write_summary(path, parts, record, command, command["hardware"],
                               study_records.read_replaced(root))
  else:
    study.write_summary(path, parts, stages_protocol(seeds, max_extensions), command,
                        command["hardware"], replaced_runs=study_records.read_replaced(root))


def stages_protocol(seeds: int, max_extensions: int) -> dict:
  f = flags.FLAGS
  return {"name": "stages", "lr_grid": list(study.LR_GRID), "window": f.window, "seeds": seeds,
          "max_extensions": max_extensions, "epochs_override": f.epochs,
          "only": f.only, "spot_check": f.spot_check,
          "description": study.__doc__.split("\n\n", 2)[2].strip()}


if __name__ == "__main__":
  xla_flags.set_entry_point_flags()
  define_flags()
  app.run(main)
