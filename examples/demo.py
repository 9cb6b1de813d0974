"""The main job: MBAG against its baselines on scikit-learn's digits, offline, on a CPU in minutes.

  python -m examples.demo [--optimizers adam,mbag,...] [--seeds 3] [--out runs/demo] [--no-autoencoder]

For every optimizer of the registry (adam, adagrad, kfac, shampoo, adablock,
mbag, mbag_n, mbag_ema) and seed, it trains with the one training loop of
``experiments`` (``experiments.train.run``):

- an MLP classifier 64-64-64-10 on the 8x8 digits (config
  ``experiments/configs/digits.py:demo``), runs in ``<out>/<optimizer>/seed_<k>``;
- the digits autoencoder 64-32-16-8 (mirrored; ``digits.py:demo_autoencoder``),
  runs in ``<out>/autoencoder/<optimizer>/seed_<k>``;

prints a comparison table (final test accuracy / loss, training loss, step time
relative to Adam), and draws the figures with ``python -m paper_figures`` into
``<out>/figures``. Each run directory has the full contract (config.json,
metrics.jsonl, TensorBoard events, checkpoints), so a second invocation reuses
finished runs and resumes interrupted ones. Digits is a stand-in that ships
with scikit-learn, not one of the paper's data sets.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import subprocess
import sys
import time

from absl import logging

from experiments import train
from experiments import xla_flags
from experiments.configs import common
from experiments.configs import digits

TASKS = {
    # name: (preset of experiments/configs/digits.py, sub-directory of --out, metrics shown)
    "classification": ("demo", "", ("test_accuracy", "test_loss", "train_loss")),
    "autoencoder": ("demo_autoencoder", "autoencoder", ("test_loss", "train_loss",
                                                        "test_squared_error")),
}


def _mean_std(values):
  if not values:
    return "-"
  mean = statistics.fmean(values)
  return f"{mean:.4g}" + (f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else "")


def run_task(task: str, optimizers, seeds: int, out: pathlib.Path, epochs: int | None):
  """Trains every (optimizer, seed) of ``task``; returns ``{optimizer: [summary per seed]}``."""
  preset, sub, _ = TASKS[task]
  results = {}
  for name in optimizers:
    results[name] = []
    for seed in range(seeds):
      config = digits.get_config(preset)
      config.optimizer = name
      config.seed = seed
      if epochs is not None:
        config.num_epochs = epochs
      workdir = out / sub / name / f"seed_{seed}"
      start = time.time()
      try:
        summary = dict(train.run(config, workdir).summary)
      except train.NonFiniteError as e:
        print(f"  {name} seed {seed}: diverged ({e})", flush=True)
        summary = {"diverged": True}
      summary["seconds"] = time.time() - start
      results[name].append(summary)
      print(f"  {task:<14} {name:<9} seed {seed}: "
            + ", ".join(f"{k}={summary[k]:.4g}" for k in TASKS[task][2] if k in summary)
            + f"  ({summary['seconds']:.0f} s)", flush=True)
  return results


def print_table(task: str, results) -> None:
  """One row per optimizer: mean ± std over seeds of the final metrics, step time vs Adam."""
  keys = TASKS[task][2]
  step_times = {n: statistics.median([s["step_time"] for s in r if "step_time" in s] or [float("nan")])
                for n, r in results.items()}
  adam = step_times.get("adam")
  print(f"\n{task} (scikit-learn digits, {len(next(iter(results.values())))} seed(s)):")
  header = f"| {'optimizer':<9} | " + " | ".join(f"{k:<16}" for k in keys) + " | step time | vs adam |"
  print(header)
  print("|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|")
  for name, runs in results.items():
    cells = [_mean_std([r[k] for r in runs if k in r]) for k in keys]
    ratio = f"{step_times[name] / adam:.2f}x" if adam else "-"
    print(f"| {name:<9} | " + " | ".join(f"{c:<16}" for c in cells)
          + f" | {step_times[name] * 1e3:6.2f} ms | {ratio:>7} |")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--optimizers", default=",".join(common.PAPER_OPTIMIZER_NAMES),
                      help="comma-separated registry names (default: the paper's eight)")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--out", default="runs/demo", type=pathlib.Path)
  parser.add_argument("--epochs", type=int, default=None, help="override the presets' epochs")
  parser.add_argument("--no-autoencoder", action="store_true", help="classification only")
  parser.add_argument("--no-figures", action="store_true", help="do not call paper_figures")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  optimizers = [o for o in args.optimizers.split(",") if o]
  tasks = ["classification"] + ([] if args.no_autoencoder else ["autoencoder"])
  start = time.time()
  results = {}
  for task in tasks:
    print(f"training {task}: {len(optimizers)} optimizers x {args.seeds} seed(s) -> {args.out}",
          flush=True)
    results[task] = run_task(task, optimizers, args.seeds, args.out, args.epochs)
  for task in tasks:
    print_table(task, results[task])
  print(f"\n{sum(len(r) for t in results.values() for r in t.values())} runs in "
        f"{time.time() - start:.0f} s; run directories under {args.out}")
  if not args.no_figures:
    if importlib.util.find_spec("paper_figures") is None:
      print("paper_figures is not installed: no figures drawn")
    else:
      command = [sys.executable, "-m", "paper_figures", "--runs", str(args.out),
                 "--out", str(args.out / "figures")]
      print("drawing figures:", " ".join(command[1:]), flush=True)
      status = subprocess.run(command, check=False).returncode
      if status not in (0, 1):  # 1: some figure had missing inputs (the paper's data sets)
        print(f"paper_figures failed with exit status {status}")
        return status
  return 0


if __name__ == "__main__":
  xla_flags.set_entry_point_flags()
  sys.exit(main())
