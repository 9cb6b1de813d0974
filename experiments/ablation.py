r"""The ablation study: ``python -m experiments.ablation`` (protocol: ``experiments/study.py``).

  python -m experiments.ablation --workdir=results/ablation --benchmarks=mnist1d,mnist5k,digits_ae \
      --workers=2 --seeds=3 --window=5

runs the three stages (tune, spot check, final) for every benchmark, resumably (finished
runs are reused), with a progress bar per stage, and writes
``<workdir>/ablation_summary.json`` (chosen learning rates with every tuning score, mean
+- std of the test metrics, seconds per run, command, hardware). Each run directory keeps
``config.json``, ``metrics.jsonl`` and ``result.json`` (checkpoints are deleted once a run
is done). ``--estimate`` prints the number of runs and the wall time predicted from the
seconds per run measured in ``<workdir>`` (a ``--measure`` pass times one run per
benchmark and optimizer at ``--measure_epochs`` epochs and extrapolates to the preset's
length) without training.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import multiprocessing
import os
import pathlib
import platform
import shutil
import sys
import time
from typing import Sequence

from absl import app
from absl import flags

from experiments import rundir
from experiments import study
from experiments import xla_flags


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the command's flags (called by ``__main__``: importing the module defines none)."""
  kw = {"flag_values": flag_values}
  flags.DEFINE_string("workdir", "results/ablation", "Directory of the study.", **kw)
  flags.DEFINE_list("benchmarks", list(study.BENCHMARKS), "Benchmarks to run.", **kw)
  flags.DEFINE_integer("workers", 1, "Runs at the same time (processes).", lower_bound=1,
                       **kw)
  flags.DEFINE_integer("seeds", 3, "Seeds of the final stage.", lower_bound=1, **kw)
  flags.DEFINE_integer("window", 5, "Learning rates per base optimizer.", lower_bound=1,
                       **kw)
  flags.DEFINE_string("data_dir", None, "Where to look for data sets first.", **kw)
  flags.DEFINE_list("only", None,
                    "Entries to run (default: all), e.g. adam,mbag,mbag/momentum=0.0", **kw)
  flags.DEFINE_bool("spot_check", True, "Variants try their base's rate and one step either "
                    "side (false: the base's rate only, on the validation split).", **kw)
  flags.DEFINE_integer("epochs", None, "Override every run's num_epochs (tests, trials).",
                       **kw)
  flags.DEFINE_bool("estimate", False, "Print runs and predicted wall time; train nothing.",
                    **kw)
  flags.DEFINE_bool("measure", False, "Time one short run per benchmark and optimizer.", **kw)
  flags.DEFINE_integer("measure_epochs", 2, "Epochs of a --measure run.", **kw)


TIMINGS_FILE = "timings.json"


def _run_job(job: study.Job, data_dir: str | None) -> dict:
  """Trains one run in this (worker) process; writes and returns its ``result.json``."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from experiments import errors  # pylint: disable=import-outside-toplevel
  from experiments import train  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(job.workdir)
  config = ml_collections.ConfigDict(json.loads(job.config_json))
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  with open(workdir / "log.txt", "a", encoding="utf-8") as log, \
      contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
    try:
      try:
        summary, diverged = dict(train.run(config, workdir, data_dir).summary), False
      except errors.ConfigError as e:
        # An unfinished run of another config (written by an older version): start it afresh.
        print(f"{workdir}: restarting an unfinished run ({str(e)[:200]})", flush=True)
        for sub in ("checkpoints", "tensorboard"):
          shutil.rmtree(workdir / sub, ignore_errors=True)
        for name in ("metrics.jsonl", "config.json"):
          (workdir / name).unlink(missing_ok=True)
        summary, diverged = dict(train.run(config, workdir, data_dir).summary), False
    except train.NonFiniteError as e:
      summary, diverged = {"error": str(e)}, True
  result = {"summary": summary, "diverged": diverged, "seconds": time.time() - start}
  (workdir / study.RESULT_FILE).write_text(json.dumps(result, indent=2, default=float) + "\n")
  for sub in ("checkpoints", "tensorboard"):  # config.json and metrics.jsonl stay
    shutil.rmtree(workdir / sub, ignore_errors=True)
  (workdir / rundir.LOCK_FILE).unlink(missing_ok=True)  # released (empty) when the run ended
  if (workdir / "log.txt").stat().st_size == 0:
    (workdir / "log.txt").unlink()
  return result


class Runner:
  """Runs jobs on ``workers`` spawned processes (one JAX runtime each), skipping finished ones."""

  def __init__(self, workers: int, data_dir: str | None):
    self.workers, self.data_dir = workers, data_dir
    context = multiprocessing.get_context("spawn")
    self.pool = (concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
                 if workers > 1 else None)

  def run(self, jobs: Sequence[study.Job], desc: str) -> list[dict]:
    import tqdm  # pylint: disable=import-outside-toplevel

    results: list[dict | None] = [study.read_result(j.workdir) for j in jobs]
    todo = [i for i, r in enumerate(results) if r is None]
    with tqdm.tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run",
                   dynamic_ncols=True) as bar:
      if self.pool is None:
        for i in todo:
          results[i] = _run_job(jobs[i], self.data_dir)
          bar.update(1)
      else:
        futures = {self.pool.submit(_run_job, jobs[i], self.data_dir): i for i in todo}
        for future in concurrent.futures.as_completed(futures):
          results[futures[future]] = future.result()
          bar.update(1)
    return results  # type: ignore[return-value]

  def close(self):
    if self.pool is not None:
      self.pool.shutdown()


def run_benchmark(runner: Runner, root: pathlib.Path, benchmark: study.Benchmark, *, seeds: int,
                  window_size: int, only: Sequence[str] | None, epochs: int | None,
                  spot_check: bool = True) -> dict:
  """The three stages of one benchmark; returns its part of the summary.

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
                                             scores[e.name]) for e in entries if e.base is None}
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


def hardware() -> str:
  import jax  # pylint: disable=import-outside-toplevel
  return (f"{platform.machine()} CPU, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"{platform.python_version()}")


def _with_epochs(job: study.Job, epochs: int | None) -> study.Job:
  """``job`` with ``num_epochs`` replaced (None: unchanged)."""
  if epochs is None:
    return job
  config = json.loads(job.config_json)
  config["num_epochs"] = epochs
  return study.Job(job.workdir, json.dumps(config))


def measure(runner: Runner, root: pathlib.Path, benchmarks: Sequence[study.Benchmark],
            epochs: int) -> dict:
  """Seconds per run of every optimizer at each benchmark's full length, from short runs.

  One run of ``epochs`` epochs per (benchmark, optimizer) on the training split (seed 0, the
  config's rate; a tenth of it when that diverged), extrapolated by
  :func:`study.extrapolate_seconds`.
  """
  timings: dict[str, dict[str, float]] = {}
  for benchmark in benchmarks:
    config = study.load_config(benchmark.config)
    names = sorted({e.optimizer for e in study.entries(config)})
    jobs = [_with_epochs(study.make_job(root / "timing", benchmark, "measure",
                                        study.Entry(name, name), config.learning_rates[name],
                                        0, False), epochs) for name in names]
    results = runner.run(jobs, f"{benchmark.name} measure")
    # A run that diverged stopped early: time it again at a tenth of the rate.
    retry = {i: _with_epochs(study.make_job(root / "timing", benchmark, "measure",
                                            study.Entry(names[i], names[i]),
                                            config.learning_rates[names[i]] / 10, 0, False),
                             epochs)
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


def main(argv: Sequence[str]) -> int:
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  root = pathlib.Path(f.workdir)
  unknown = sorted(set(f.benchmarks) - set(study.BENCHMARKS))
  if unknown:
    raise app.UsageError(f"unknown benchmark(s) {unknown}; known: {sorted(study.BENCHMARKS)}")
  benchmarks = [study.BENCHMARKS[b] for b in f.benchmarks]
  root.mkdir(parents=True, exist_ok=True)
  command = "python -m experiments.ablation " + " ".join(sys.argv[1:])
  timings_path = root / TIMINGS_FILE
  if f.estimate:
    if not timings_path.exists():
      print(f"no {timings_path}: run with --measure first", file=sys.stderr)
      return 1
    timings = json.loads(timings_path.read_text())["seconds_per_run"]
    counts = {b.name: study.plan_counts(study.load_config(b.config), f.window, f.seeds,
                                        f.spot_check)
              for b in benchmarks}
    seconds = study.estimate_seconds(counts, timings, f.workers)
    for b, c in counts.items():
      print(f"{b}: {sum(c.values())} runs " + ", ".join(f"{o} {n}" for o, n in sorted(c.items())))
    print(f"estimated wall time with {f.workers} worker(s): {seconds / 3600:.2f} h "
          f"(without window extensions; seconds per run from {timings_path})")
    return 0
  runner = Runner(f.workers, f.data_dir)
  try:
    if f.measure:
      timings = measure(runner, root, benchmarks, f.measure_epochs)
      timings_path.write_text(json.dumps({"seconds_per_run": timings, "command": command,
                                          "hardware": hardware(),
                                          "workers": f.workers}, indent=2) + "\n")
      print(json.dumps(timings, indent=2))
      return 0
    parts = {}
    for benchmark in benchmarks:
      parts[benchmark.name] = run_benchmark(runner, root, benchmark, seeds=f.seeds,
                                            window_size=f.window, only=f.only,
                                            epochs=f.epochs, spot_check=f.spot_check)
      study.write_summary(root / study.SUMMARY_FILE, parts, protocol(), command, hardware())
  finally:
    runner.close()
  print(f"summary: {root / study.SUMMARY_FILE}")
  return 0


def protocol() -> dict:
  f = flags.FLAGS
  return {"lr_grid": list(study.LR_GRID), "window": f.window, "seeds": f.seeds,
          "max_extensions": study.MAX_EXTENSIONS, "epochs_override": f.epochs,
          "only": f.only, "spot_check": f.spot_check, "description": study.__doc__.split("\n\n", 1)[1].strip()}


if __name__ == "__main__":
  xla_flags.set_entry_point_flags()
  define_flags()
  app.run(main)
