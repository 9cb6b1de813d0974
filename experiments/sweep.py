r"""A learning-rate sweep: one run per (optimizer, learning rate) of a config, and the best of each.

  python -m experiments.sweep --config=experiments/configs/digits.py:demo \
      --optimizers=adam,mbag --learning_rates=1e-4,1e-3,1e-2,1e-1 --workdir=runs/sweep

Each run goes to ``<workdir>/<optimizer>/lr_<lr>`` (an existing finished run is
reused). The score is the final ``test_loss`` (``--metric`` to change it; lower
is better); a run whose loss stopped being finite scores infinity (``null`` in the JSON). Prints a
table and writes ``<workdir>/sweep.json``. This is how the learning rates in
``experiments/configs`` were chosen (see docs/experiments.md, "Learning rates").
"""

from __future__ import annotations

import json
import math
import os
import platform
import pathlib
import sys
from typing import Sequence

import jax
import tabulate
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import train
from experiments import xla_flags

def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the command's flags (called by ``__main__``: importing the module defines none)."""
  config_flags.DEFINE_config_file("config", None, "Config file and preset.", lock_config=False,
                                  flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "Directory of the sweep's runs.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_string("data_dir", None, "Where to look for the data set first.",
                      flag_values=flag_values)
  flags.DEFINE_list("optimizers", None, "Optimizers (default: all in the config).",
                    flag_values=flag_values)
  flags.DEFINE_list("learning_rates", ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2", "3e-2", "1e-1",
                                       "3e-1", "1"], "Learning rates to try.",
                    flag_values=flag_values)
  flags.DEFINE_string("metric", "test_loss", "Metric of the final record; lower is better.",
                      flag_values=flag_values)

def sweep(config, workdir: pathlib.Path, optimizers: Sequence[str], learning_rates: Sequence[float],
          metric: str, data_dir: str | None = None) -> dict[str, dict[str, float]]:
  """``{optimizer: {str(lr): final metric}}`` (infinity where the run diverged)."""
  results: dict[str, dict[str, float]] = {}
  for name in optimizers:
    results[name] = {}
    for lr in learning_rates:
      run_config = config.copy_and_resolve_references()
      run_config.optimizer = name
      run_config.learning_rate = float(lr)
      try:
        summary = train.run(run_config, workdir / name / f"lr_{lr:g}", data_dir).summary
        value = float(summary.get(metric, math.inf))
      except train.NonFiniteError:
        value = math.inf
      results[name][f"{lr:g}"] = value if math.isfinite(value) else math.inf
      print(f"{name:>9} lr={lr:<8g} {metric}={value:.5g}", flush=True)
  return results


def best(results: dict[str, dict[str, float]]) -> dict[str, str]:
  """The learning rate with the lowest score, per optimizer."""
  return {name: min(scores, key=scores.get) for name, scores in results.items()}


def write_report(path: pathlib.Path, metric: str, results: dict[str, dict[str, float]],
                 command: str) -> dict:
  """Writes the sweep's JSON (strict: a diverged run's infinite score is ``null``); returns it."""
  report = {
      "metric": metric,
      "results": {name: {lr: (v if math.isfinite(v) else None) for lr, v in scores.items()}
                  for name, scores in results.items()},
      "best": best(results),
      "command": command,
      "hardware": f"{platform.machine()} CPU, {os.cpu_count()} cores, jax {jax.__version__}",
  }
  path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
  return report


def format_table(results: dict[str, dict[str, float]], lrs: Sequence[float],
                 best_lrs: dict[str, str]) -> str:
  """The scores as a Markdown table, one row per optimizer, one column per learning rate and the
  best; columns as wide as their widest cell ("inf": the run diverged)."""
  rows = [[name, *(f"{scores[f'{lr:g}']:.4g}" for lr in lrs), best_lrs[name]]
          for name, scores in results.items()]
  return tabulate.tabulate(rows, headers=["optimizer", *(f"{lr:g}" for lr in lrs), "best"],
                           tablefmt="pipe", colalign=["left"] + ["right"] * (len(lrs) + 1),
                           disable_numparse=True)


def main(argv):
  del argv
  f = flags.FLAGS
  config = f.config
  optimizers = f.optimizers or list(config.learning_rates.keys())
  lrs = [float(v) for v in f.learning_rates]
  workdir = pathlib.Path(f.workdir)
  results = sweep(config, workdir, optimizers, lrs, f.metric, f.data_dir)
  chosen = write_report(workdir / "sweep.json", f.metric, results,
                        "python -m experiments.sweep " + " ".join(sys.argv[1:]))["best"]
  print(format_table(results, lrs, chosen))


if __name__ == "__main__":
  xla_flags.set_entry_point_flags()
  define_flags()
  app.run(main)
