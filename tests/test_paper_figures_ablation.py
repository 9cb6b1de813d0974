"""paper_figures' ablation figure and table from an ablation_summary.json."""

import json

import pytest

from paper_figures import cli
from paper_figures import runs as runs_lib


def _stats(values):
  import statistics
  return {"mean": statistics.fmean(values), "std": statistics.stdev(values), "n": len(values),
          "values": values}


SUMMARY = {
    "protocol": {"seeds": 3}, "command": "python -m experiments.ablation --test",
    "hardware": "x86_64 CPU, 2 cores",
    "benchmarks": {"mnist1d": {
        "config": "mnist1d:ablation", "select": "test_accuracy", "higher_is_better": True,
        "report": ["test_accuracy", "test_loss"], "tuning": {},
        "final": {
            "adam": {"learning_rate": 0.01, "group": "baseline", "seeds": 3, "diverged": 0,
                     "test_accuracy": _stats([0.92, 0.93, 0.90]),
                     "test_loss": _stats([0.5, 0.6, 0.7])},
            "mbag/momentum=0.0": {"learning_rate": 0.003, "group": "momentum", "seeds": 3,
                                  "diverged": 3, "test_accuracy": {"mean": None, "std": None,
                                                                   "n": 0, "values": []},
                                  "test_loss": {"mean": None, "std": None, "n": 0, "values": []}},
        }}},
}


def test_ablation_figure_and_table_from_the_summary(tmp_path):
  study_dir = tmp_path / "results" / "ablation"
  run = study_dir / "mnist1d" / "final" / "adam" / "lr_0.01" / "seed_0"
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"task": "signal_cnn"}))
  (run / "metrics.jsonl").write_text("")
  (study_dir / runs_lib.ABLATION_SUMMARY_FILE).write_text(json.dumps(SUMMARY))
  out = tmp_path / "figures"
  status = cli.main(["--runs", str(tmp_path / "results"), "--out", str(out), "--only", "ablation"])
  assert status == 0
  assert (out / "ablation.png").exists() and (out / "ablation.pdf").exists()
  table = (out / "ablation.md").read_text()
  # accuracy in percent, mean +- sample std over the three seeds: 91.67 +- 1.5
  assert "| adam | baseline | 0.01 | 3 | 91.67 ± 1.5 | 0.6 ± 0.1 |" in table
  assert "| mbag/momentum=0.0 | momentum | 0.003 | 3 | diverged | diverged |" in table
  assert "python -m experiments.ablation --test" in table
  # the study's run directories are read through its summary, not as figure runs
  assert runs_lib.find_run_dirs(tmp_path / "results") == []


def test_no_summary_is_reported_missing(tmp_path):
  (tmp_path / "runs").mkdir()
  status = cli.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"),
                     "--only", "ablation"])
  assert status == 1
  assert "no ablation_summary.json" in (tmp_path / "o" / "figures.md").read_text()
