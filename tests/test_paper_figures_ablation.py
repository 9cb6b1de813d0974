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


def _comparison(entry, currency, mean, low, high, verdict, adjusted, n=5, **extra):
  return {"entry": entry, "reference": "adam", "currency": currency, "n": n, "mean": mean,
          "low": low, "high": high, "verdict": verdict, "adjusted_verdict": adjusted,
          "p_value": 0.01, **extra}


STUDY = {
    "protocol": {"name": "paired", "seeds": 5, "confidence": 0.95},
    "multiplicity": {"method": "holm", "alpha": 0.05, "comparisons": 4},
    "hardware": "x86_64 CPU, 2 cores",
    "commands": [
        {"id": "a1", "command": "python -m experiments.ablation --workers=2", "started": "t0",
         "finished": "t1", "commit": "0123456789abcdef", "dirty": False, "workers": 2,
         "hardware": "x86_64 CPU, 2 cores"},
        {"id": "b2", "command": "python -m experiments.ablation --only=mbag", "started": "t2",
         "finished": None, "commit": "fedcba9876543210", "dirty": True, "workers": 1,
         "hardware": "x86_64 CPU, 2 cores"}],
    "replaced_runs": [{"time": "t2", "run": "mnist1d/final/mbag/lr_0.01/seed_3",
                       "reason": "config changed", "changed": ["num_epochs"],
                       "old_result": {"summary": {"test_accuracy": 0.9125}}}],
    "benchmarks": {"mnist1d": {
        "config": "mnist1d:study", "select": "test_accuracy", "higher_is_better": True,
        "reference": "adam", "time_metric": "test_loss",
        "target": {"value": 0.4321, "rule": "the reference's worst best loss"},
        "tuning": {
            "adam": {"chosen_lr": 0.003, "window": [0.001, 0.01], "extensions": 1, "cap": 3,
                     "cap_hit": False, "grid_edge": False},
            "mbag": {"chosen_lr": 0.1, "window": [0.001, 0.1], "extensions": 3, "cap": 3,
                     "cap_hit": True, "grid_edge": False},
            "mbag@adam": {"chosen_lr": 0.003, "transfer_from": "adam"}},
        "comparisons": [
            _comparison("mbag", "steps", 0.012, 0.004, 0.020, "better", "tie",
                        entry_diverged=0, reference_diverged=0),
            _comparison("mbag@adam", "steps", -0.01, -0.03, 0.01, "tie", "tie"),
            _comparison("mbag", "time", -0.5, -0.8, -0.2, "worse", "worse", n=4,
                        ratio_mean=0.6065, ratio_low=0.4493, ratio_high=0.8187, seeds=5,
                        entry_reached=4, reference_reached=5, other_session_seeds=[]),
            _comparison("mbag@adam", "time", None, None, None, None, None, n=0,
                        ratio_mean=None, ratio_low=None, ratio_high=None, seeds=5,
                        entry_reached=0, reference_reached=5, other_session_seeds=[2]),
        ],
        "reference_check": [{"label": "published", "metric": "test_accuracy", "value": 0.94,
                             "study": {"mean": 0.925}, "reached": False,
                             "within_interval": True, "note": "6000 steps"}],
        "superseded_finals": []}},
}


def test_study_forest_plot_and_table_from_a_summary(tmp_path):
  study_dir = tmp_path / "results" / "study"
  run = study_dir / "mnist1d" / "final" / "adam" / "lr_0.003" / "seed_0"
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"task": "signal_cnn"}))
  (study_dir / runs_lib.STUDY_SUMMARY_FILE).write_text(json.dumps(STUDY))
  out = tmp_path / "figures"
  status = cli.main(["--runs", str(tmp_path / "results"), "--out", str(out), "--only", "study"])
  assert status == 0
  assert (out / "study.png").exists() and (out / "study.pdf").exists()
  table = (out / "study.md").read_text()
  # accuracy differences in points; the entry's rate with its window and the cap flag
  assert ("| mbag vs adam | equal steps | 5 | 1.2 | [0.4, 2] | better | tie | 0.1 (window "
          "0.001–0.1, 3/3 ext.; CAP HIT) | 0.003 (window 0.001–0.01, 1/3 ext.) | diverged: "
          "entry 0, reference 0 |") in table
  assert "| mbag@adam vs adam | equal steps | 5 | -1 | [-3, 1] | tie | tie | 0.003 (transfer: " \
         "adam's rate) |" in table
  assert ("| mbag vs adam | time to target loss | 4 | 0.607 | [0.449, 0.819] | worse | worse |"
          in table)
  assert "reached: entry 0/5, reference 5/5; seeds [2] left out (timed in other sessions)" in table
  assert "holm over 4 comparisons" in table
  assert "adam against published: 94 vs the study's 92.5: not reached; inside the 95 % interval" \
         in table
  # every command, and the replaced run with its old result
  assert "`python -m experiments.ablation --workers=2`" in table
  assert "commit fedcba9876 (changed tree), 1 worker(s)" in table
  assert "mnist1d/final/mbag/lr_0.01/seed_3: config changed (num_epochs); old result: " \
         "test_accuracy=0.9125" in table
  # the study's run directories are read through its summary, not as figure runs
  assert runs_lib.find_run_dirs(tmp_path / "results") == []


def test_no_study_summary_is_reported_missing(tmp_path):
  (tmp_path / "runs").mkdir()
  status = cli.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"),
                     "--only", "study"])
  assert status == 1
  assert "no study_summary.json" in (tmp_path / "o" / "figures.md").read_text()


def test_paired_comparisons_are_by_seed_with_t_intervals():
  from paper_figures import ablation
  # accuracy 1, 2, 0 points better per seed: mean 1, sd 1, t(0.975, 2) = 4.303 -> +-2.484
  got = ablation.paired_interval([0.93, 0.95, 0.90], [0.92, 0.93, 0.90], higher_is_better=True)
  assert got["n"] == 3 and got["verdict"] == "tie"
  assert got["mean"] == pytest.approx(0.01) and got["low"] == pytest.approx(0.01 - 0.02484, abs=1e-5)
  # unpaired, the same numbers would be compared as two samples; paired, a constant 0.1 lower
  # loss is "better" however large the spread between seeds
  got = ablation.paired_interval([0.4, 0.9, 0.2], [0.5, 1.0, 0.3], higher_is_better=False)
  assert got["verdict"] == "better" and got["low"] == pytest.approx(0.1)
  # a seed that diverged on either side is left out; fewer than two seeds: no interval
  assert ablation.paired_interval([0.5, None, 0.4], [0.6, 0.6, None], False) is None
  part = {"higher_is_better": True, "final": {
      "adam": {"group": "baseline", "test_accuracy": _stats([0.92, 0.93, 0.90])},
      "mbag": {"group": "baseline", "test_accuracy": _stats([0.93, 0.95, 0.90])},
      "mbag/momentum=0.0": {"group": "momentum", "test_accuracy": _stats([0.80, 0.82, 0.79])}}}
  lines = ablation.paired_markdown(part, "test_accuracy")
  assert "| mbag | adam | 3 | +1 [-1.48, +3.48] | tie |" in lines
  # -13, -13, -11 points: mean -12.33, sd 1.155 -> +-2.87
  assert "| mbag/momentum=0.0 | mbag | 3 | -12.3 [-15.2, -9.46] | worse |" in lines
  assert "2 comparisons on this benchmark, none corrected for multiplicity." in lines
