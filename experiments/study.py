"""The study's shared pieces (benchmarks, entries, learning-rate grid, runs, summary) and the
constant-rate protocol ``stages``.

The main protocol, ``paired`` (warm-up + cosine schedules, every entry tuned at its own rate,
paired seeds, intervals), is :mod:`experiments.paired_study`. The constant-rate study of
``results/ablation`` ran the three stages below (``python -m experiments.ablation
--protocol=stages``; docs/benchmarks.md "What matters in MBAG"):

1. **Tune** (validation split, seed 0). Every base optimizer -- Adam, AdaGrad, KFAC,
   Shampoo, AdaBlock, their ``*_paper`` variants, MBAG, MBAG-N, MBAG-EMA -- runs at its
   defaults on a window of ``window`` learning rates of :data:`LR_GRID` (1-3-10 steps)
   centred on the benchmark config's rate; when the best is at an edge of the window,
   the window grows by one step on that side, and when every rate diverged, by one step
   down (at most :data:`MAX_EXTENSIONS` times in all). The
   validation split is ``<data set>-val`` (the last 20 % of the training set as the test
   set, :func:`experiments.data.validation_split`); the score is the benchmark's
   ``select`` metric of the final record.
2. **Spot check** (validation split, seed 0). Every variant of MBAG's choices runs at its
   base optimizer's chosen rate and one grid step either side; the best of the three is
   its rate.
3. **Final** (train / test split): every base optimizer and variant at its chosen rate,
   seeds ``0 .. seeds - 1``; the summary reports mean, sample standard deviation (n - 1)
   and every value of the benchmark's ``report`` metrics on the test set.

A run diverges when its loss or gradient stops being finite (``NonFiniteError``): its
score is the worst possible, and it is not retried. Runs already finished (``result.json``
in their directory) are reused, so the command resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import pathlib
import statistics
from typing import Any, Callable, Iterable, Mapping, Sequence

LR_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
MAX_EXTENSIONS = 2
RESULT_FILE = "result.json"
SUMMARY_FILE = "ablation_summary.json"
BASE_OPTIMIZERS = ("adam", "adagrad", "kfac", "kfac_paper", "shampoo", "shampoo_paper",
                   "adablock", "adablock_paper", "mbag", "mbag_n", "mbag_ema")


@dataclasses.dataclass(frozen=True)
class ReferenceFigure:
  """A published or earlier figure that a benchmark's reference optimizer should reach.

  Attributes:
    label: where it comes from, e.g. "published (github.com/greydanus/mnist1d)".
    metric: the metric it is a value of (the benchmark's ``select`` metric).
    value: the figure; None when it is computed from ``runs``.
    runs: a glob (relative to the repository) of run directories whose final ``metric`` gives
      the figure (mean, sd and n over them), e.g. the project's own reference runs.
    note: how its protocol differs from the study's (steps, schedule).
  """
  label: str
  metric: str
  value: float | None = None
  runs: str | None = None
  note: str = ""


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A config preset the study runs, and how it is scored.

  Attributes:
    name: the study's name for it (a directory name).
    config: ``module:preset`` of ``experiments/configs``.
    select: the metric of the final record that picks learning rates (on the validation split)
      and that the equal-steps comparisons compare (on the test split).
    higher_is_better: for ``select``.
    report: the metrics the summary reports on the test set.
    reference: the optimizer every entry is compared with (``paired`` protocol).
    time_metric: the held-out loss whose target the time-to-target comparison uses.
    target: a fixed target of ``time_metric``; None: derived from the reference's runs
      (``experiments.paired_study.TARGET_RULE``).
    figures: published or earlier figures the reference's result is checked against.
  """
  name: str
  config: str
  select: str
  higher_is_better: bool
  report: tuple[str, ...]
  reference: str = "adam"
  time_metric: str = "test_loss"
  target: float | None = None
  figures: tuple[ReferenceFigure, ...] = ()


_AE_REPORT = ("test_loss", "train_loss", "test_squared_error", "test_bce_per_pixel")
# The constant-rate study's benchmarks (protocol ``stages``, results/ablation).
CONSTANT_RATE_BENCHMARKS: dict[str, Benchmark] = {
    "mnist1d": Benchmark("mnist1d", "mnist1d:ablation", "test_accuracy", True,
                         ("test_accuracy", "test_loss", "train_loss")),
    "mnist5k": Benchmark("mnist5k", "mnist5k:ablation", "test_loss", False, _AE_REPORT),
    "digits_ae": Benchmark("digits_ae", "digits:demo_autoencoder", "test_loss", False, _AE_REPORT),
}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One line of the study: an optimizer with hyperparameter overrides.

  Attributes:
    name: e.g. ``mbag`` or ``mbag/lambda=0.1`` (a path under the study's directory).
    optimizer: the registry name.
    overrides: ``optimizer_config.<optimizer>`` fields to change.
    base: None for an optimizer tuned on the grid; else the entry whose rate it reuses
      (protocol ``stages`` only: the ``paired`` protocol tunes every entry at its own rate).
    group: what the entry ablates ("baseline", "lambda", ...).
    transfer_from: protocol ``paired``: a declared *transfer* entry, run untuned at the rate
      tuned for this other entry (its name is ``<entry>@<transfer_from>``); None: tuned.
  """
  name: str
  optimizer: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  base: str | None = None
  group: str = "baseline"
  transfer_from: str | None = None


def load_config(spec: str):
  """The ConfigDict of ``module:preset`` (a module of ``experiments.configs``)."""
  module_name, _, preset = spec.partition(":")
  module = importlib.import_module(f"experiments.configs.{module_name}")
  return module.get_config(preset or None)


def variants(config) -> list[Entry]:
  """MBAG's choices the study varies, each away from the config's default (see the README)."""
  mbag = config.optimizer_config.mbag
  out = []

  def add(group, optimizer, **overrides):
    label = "+".join(f"{k}={v}" for k, v in overrides.items())  # "," separates --only entries
    out.append(Entry(f"{optimizer}/{label}", optimizer, overrides, base=optimizer, group=group))

  for lam in (0.001, 0.01, 0.1, 1.0):
    if lam != mbag.initial_accumulator_value:
      add("lambda", "mbag", initial_accumulator_value=lam)
  for interval in (1, 10, 50, 200):
    if interval != mbag.root_interval:
      add("T_sqr", "mbag", root_interval=interval)
  for steps in (5, 10):
    if steps != mbag.newton_schulz_steps:
      add("root", "mbag", newton_schulz_steps=steps)
  add("root", "mbag", newton_schulz_tolerance=1e-3)
  add("root", "mbag", root_method="eigh")
  add("warm-up", "mbag", root_warmup_steps=mbag.root_interval)
  add("warm-up", "mbag", root_warmup_steps=1)  # the first root at step 1 (a safe start)
  # Grafting onto Adam's step sizes (mbag/_src/graft.py): run at Adam's (AdamW's) tuned rate
  # as a transfer entry, mbag/graft=adam@adam.
  add("graft", "mbag", graft="adam")
  add("graft", "mbag", graft="adam_block")  # one norm per mini-block instead of per leaf
  adamw = config.optimizer_config.get("adamw")
  if adamw is not None and adamw.get("weight_decay"):
    # "From AdamW to MBAG" (docs/optimizer.md): grafted MBAG with AdamW's decoupled weight decay,
    # on every leaf or with embeddings / embeddings and vectors left to AdamW itself.
    recipe = dict(graft="adam", weight_decay=adamw.weight_decay,
                  weight_decay_mask=adamw.get("mask", "matrices"))
    add("recipe", "mbag", **recipe)
    for keep in ("embeddings", "embeddings_and_vectors"):
      add("recipe", "mbag", **recipe, keep_on_adamw=keep)
  for tau in (1, 8, 16, 32, 64):
    if tau != mbag.block_size:
      add("tau", "mbag", block_size=tau)
  add("momentum", "mbag", momentum=0.0)
  add("storage", "mbag", root_dtype="bfloat16")  # the root kept in bfloat16 (docs/performance.md)
  add("grouping", "mbag", grouping="diagonal_vectors")
  for decay in (0.9, 0.999):
    add("EMA decay", "mbag_ema", decay=decay)
  # Algorithm 2's inverse root is far less accurate than Algorithm 1's root at a fixed number of
  # Newton-Schulz steps (benchmarks.root_accuracy, form "G"): does an accurate one change it?
  add("root", "mbag_ema", newton_schulz_tolerance=1e-3)
  return out


def entries(config) -> list[Entry]:
  return [Entry(name, name) for name in BASE_OPTIMIZERS] + variants(config)


def grid_index(lr: float) -> int:
  """The index of ``lr`` in :data:`LR_GRID` (the nearest on a log scale)."""
  return min(range(len(LR_GRID)), key=lambda i: abs(math.log(LR_GRID[i] / lr)))


def window(lr: float, size: int) -> list[float]:
  """``size`` consecutive grid rates centred on ``lr`` (shifted to stay inside the grid)."""
  centre = grid_index(lr)
  start = min(max(centre - size // 2, 0), len(LR_GRID) - size)
  return list(LR_GRID[start:start + size])


def neighbours(lr: float) -> list[float]:
  """``lr`` and one grid step either side (inside the grid)."""
  i = grid_index(lr)
  return [LR_GRID[j] for j in (i - 1, i, i + 1) if 0 <= j < len(LR_GRID)]


def lr_key(lr: float) -> str:
  return f"{lr:g}"


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class Job:
  """One training run: where it goes and its resolved config as JSON."""
  workdir: str
  config_json: str


def run_dir(root: pathlib.Path, benchmark: str, stage: str, entry: Entry, lr: float,
            seed: int) -> pathlib.Path:
  return root / benchmark / stage / entry.name / f"lr_{lr_key(lr)}" / f"seed_{seed}"


def make_job(root: pathlib.Path, benchmark: Benchmark, stage: str, entry: Entry, lr: float,
             seed: int, validation: bool) -> Job:
  """The run of ``entry`` at ``lr`` and ``seed``; ``validation``: on the validation split."""
  from experiments import train  # pylint: disable=import-outside-toplevel

  config = load_config(benchmark.config)
  config.optimizer = entry.optimizer
  config.learning_rate = float(lr)
  config.seed = int(seed)
  section = config.optimizer_config[entry.optimizer]
  for key, value in entry.overrides.items():
    section[key] = value
  config = train.resolve_config(config)  # fills the model from the data set's name first
  if validation:
    from experiments import data  # pylint: disable=import-outside-toplevel
    config.dataset = config.dataset + data.VALIDATION_SUFFIX
  return Job(str(run_dir(root, benchmark.name, stage, entry, lr, seed)), config.to_json())


def read_result(workdir: str | os.PathLike) -> dict | None:
  path = pathlib.Path(workdir) / RESULT_FILE
  return json.loads(path.read_text()) if path.exists() else None


def score(result: Mapping[str, Any] | None, benchmark: Benchmark) -> float:
  """The run's ``select`` metric, oriented so that lower is better; +inf when diverged or missing."""
  if not result or result.get("diverged"):
    return math.inf
  value = result["summary"].get(benchmark.select)
  if value is None or not math.isfinite(value):
    return math.inf
  return -value if benchmark.higher_is_better else value


def best_lr(scores: Mapping[float, float]) -> float | None:
  """The rate with the lowest score (ties: the smaller rate); None if every run diverged."""
  finite = {lr: s for lr, s in scores.items() if math.isfinite(s)}
  if not finite:
    return None
  return min(sorted(finite), key=lambda lr: finite[lr])


def mean_std(values: Sequence[float]) -> dict[str, Any]:
  finite = [v for v in values if v is not None and math.isfinite(v)]
  std = statistics.stdev(finite) if len(finite) > 1 else None
  return {"mean": statistics.fmean(finite) if finite else None, "std": std, "n": len(finite),
          "values": list(values)}


def summarize(benchmark: Benchmark, tuning: Mapping[str, Mapping[str, Any]],
              finals: Mapping[str, Sequence[dict | None]], groups: Mapping[str, str]) -> dict:
  """The benchmark's part of the summary JSON (see :func:`write_summary`)."""
  final = {}
  for name, results in finals.items():
    chosen = tuning[name]["chosen_lr"]
    done = [r for r in results if r is not None]
    row = {"learning_rate": chosen, "group": groups[name], "seeds": len(results),
           "diverged": sum(1 for r in done if r.get("diverged")),
           "run_seconds": mean_std([r["seconds"] for r in done])}
    for metric in benchmark.report:
      row[metric] = mean_std([None if r.get("diverged") else r["summary"].get(metric)
                              for r in done])
    final[name] = row
  return {"config": benchmark.config, "select": benchmark.select,
          "higher_is_better": benchmark.higher_is_better, "report": list(benchmark.report),
          "tuning": dict(tuning), "final": final}


def read_summary(path: pathlib.Path) -> dict:
  """The summary at ``path`` ({} when there is none); ValueError when it is no summary."""
  if not path.exists():
    return {}
  try:
    earlier = json.loads(path.read_text())
    if not isinstance(earlier, dict) or not isinstance(earlier.get("benchmarks", {}), dict):
      raise ValueError("not a JSON object with a 'benchmarks' object")
  except (json.JSONDecodeError, ValueError) as e:
    raise ValueError(f"{path}: not a summary this command can extend ({e}); move it away") from e
  return earlier


def write_summary(path: pathlib.Path, benchmarks: Mapping[str, dict], protocol: dict,
                  command: Mapping[str, Any] | str, hardware: str,
                  finalize: Callable[[dict], dict] | None = None, **extra) -> dict:
  """Writes the summary of ``benchmarks`` to ``path`` (atomically) and returns it.

  Each benchmark's part records the ``protocol`` and the ``command`` that made it (its id
  when ``command`` is a record of ``study_records.command_record``); the parts of benchmarks
  that an earlier command wrote to ``path`` and this one did not run are kept, and so is every
  earlier command: ``commands`` lists them all (``study_records.merge_commands``), ``command``
  is the last one. ``finalize(parts)``: may update every benchmark's part (this command's and
  the earlier ones) and returns further top-level fields; ``extra``: further top-level fields.
  """
  from experiments import study_records  # pylint: disable=import-outside-toplevel
  earlier = read_summary(path)
  commands = study_records.merge_commands(earlier, command)
  last = commands[-1]["command"]
  made_by = command.get("id", last) if isinstance(command, Mapping) else command
  parts = {**earlier.get("benchmarks", {}),
           **{name: {**part, "protocol": protocol, "command": made_by}
              for name, part in benchmarks.items()}}
  extra = {**extra, **(finalize(parts) if finalize else {})}
  report = {"protocol": protocol, "benchmarks": parts, "commands": commands, "command": last,
            "hardware": hardware, **extra}
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
  os.replace(tmp, path)
  return report


def estimate_seconds(plan_counts: Mapping[str, Mapping[str, int]],
                     seconds_per_run: Mapping[str, Mapping[str, float]], workers: int) -> float:
  """Wall time of ``plan_counts[benchmark][optimizer]`` runs at the measured seconds per run."""
  total = sum(n * seconds_per_run[b][o] for b, counts in plan_counts.items()
              for o, n in counts.items())
  return total / max(workers, 1)


def extrapolate_seconds(seconds: float, records: Sequence[Mapping[str, Any]], epochs: int,
                        full_epochs: int) -> float:
  """The wall time of a run of ``full_epochs`` from one of ``epochs`` that took ``seconds``.

  Its metric records give the steps per epoch and the mean ``step_time`` (which leaves out
  the first step's compilation, evaluation and checkpoints); the rest of ``seconds`` is a
  fixed cost (start, data, compilation, evaluation, which grows with epochs only through
  evaluation, neglected). Result: fixed + full_epochs x steps per epoch x step time.
  """
  steps_per_epoch = max(int(r["step"]) for r in records) // epochs
  times = [float(r["step_time"]) for r in records if "step_time" in r]
  step_time = sum(times) / len(times) if times else 0.0
  fixed = max(seconds - steps_per_epoch * epochs * step_time, 0.0)
  return fixed + steps_per_epoch * full_epochs * step_time


def plan_counts(config, window_size: int, seeds: int, spot_check: bool = True) -> dict[str, int]:
  """Runs per optimizer of one benchmark without window extensions: tune + spot checks + final."""
  counts: dict[str, int] = {}
  for entry in entries(config):
    n = (window_size if entry.base is None else (3 if spot_check else 1)) + seeds
    counts[entry.optimizer] = counts.get(entry.optimizer, 0) + n
  return counts


def iter_tuning_rates(config_lr: float, size: int, scores: Mapping[float, float],
                      max_extensions: int = MAX_EXTENSIONS) -> Iterable[list[float]]:
  """The window, then one extension at a time while the best is at an edge, or one step down
  while every rate diverged, at most ``max_extensions`` times (see the module docstring).

  ``scores`` is read after each yield: the caller fills in the scores of the rates yielded.
  """
  rates = window(config_lr, size)
  yield rates
  for _ in range(max_extensions):
    best = best_lr({lr: scores.get(lr, math.inf) for lr in rates})
    lo, hi = grid_index(rates[0]), grid_index(rates[-1])
    if best is None:  # every rate diverged: look one step lower
      if lo == 0:
        return
      rates = [LR_GRID[lo - 1]] + rates
      yield rates
      continue
    i = grid_index(best)
    if i == lo and lo > 0:
      rates = [LR_GRID[lo - 1]] + rates
    elif i == hi and hi < len(LR_GRID) - 1:
      rates = rates + [LR_GRID[hi + 1]]
    else:
      return
    yield rates
