"""The ablation study at a tiny budget: stages, resumption, the summary's numbers, the estimate."""

import json
import math
import pathlib

import numpy as np
import pytest

from experiments import ablation
from experiments import study
from experiments.data import testing

TINY = study.Benchmark("tiny", "mnist1d:smoke", "test_accuracy", True,
                       ("test_accuracy", "test_loss"))


def test_grid_window_and_neighbours():
  assert study.window(1e-2, 5) == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
  assert study.window(1e-5, 3) == [1e-5, 3e-5, 1e-4]  # shifted to stay inside the grid
  assert study.neighbours(3e-3) == [1e-3, 3e-3, 1e-2]
  assert study.neighbours(3.0) == [1.0, 3.0]


def test_window_grows_while_the_best_is_at_an_edge():
  scores = {1e-3: 3.0, 3e-3: 2.0, 1e-2: 1.0}
  rounds = study.iter_tuning_rates(3e-3, 3, scores)
  assert next(rounds) == [1e-3, 3e-3, 1e-2]
  assert next(rounds) == [1e-3, 3e-3, 1e-2, 3e-2]  # best at the upper edge
  scores[3e-2] = 5.0
  assert next(rounds, None) is None  # now inside: done


def test_score_orients_the_metric_and_divergence_is_worst():
  result = {"summary": {"test_accuracy": 0.9}, "diverged": False}
  assert study.score(result, TINY) == -0.9
  assert study.score({"summary": {}, "diverged": True}, TINY) == math.inf
  assert study.best_lr({1e-3: -0.5, 1e-2: -0.9, 1e-1: math.inf}) == 1e-2
  assert study.best_lr({1e-3: math.inf}) is None


def test_variants_leave_out_the_defaults_of_the_config():
  config = study.load_config("mnist5k:ablation")  # lambda 0.1, T_sqr 50, T_NS 7, tau 32
  names = [e.name for e in study.variants(config)]
  assert "mbag/initial_accumulator_value=0.1" not in names
  assert "mbag/initial_accumulator_value=0.01" in names
  assert "mbag/newton_schulz_steps=5" in names and "mbag/block_size=32" not in names
  assert all(e.base in ("mbag", "mbag_ema") for e in study.variants(config))


def test_a_short_run_is_extrapolated_by_its_steps():
  """2 epochs of 40 steps at 0.01 s in a 5 s run: 4.2 s fixed; 60 epochs: 4.2 + 2400 x 0.01."""
  records = [{"step": 40, "step_time": 0.012, "compile_time": 3.0}, {"step": 80, "step_time": 0.008}]
  assert study.extrapolate_seconds(5.0, records, 2, 60) == pytest.approx(4.2 + 24.0)


def test_estimate_adds_runs_times_seconds_over_workers():
  counts = {"a": {"adam": 4, "mbag": 2}, "b": {"adam": 1}}
  seconds = {"a": {"adam": 10.0, "mbag": 30.0}, "b": {"adam": 100.0}}
  assert study.estimate_seconds(counts, seconds, workers=2) == (40 + 60 + 100) / 2


def test_tiny_study_runs_resumes_and_summarises(tmp_path, monkeypatch):
  """One epoch of the MNIST-1D smoke preset on a generated 300-signal file: Adam and MBAG tuned
  on two rates, MBAG without momentum spot-checked, two final seeds each."""
  data_dir = tmp_path / "data"
  testing.write_mnist1d(str(data_dir), num_train=300, num_test=60)
  monkeypatch.setenv("MBAG_DATA_DIR", str(data_dir))
  root = tmp_path / "ablation"
  runner = ablation.Runner(1, None)
  only = ["adam", "mbag", "mbag/momentum=0.0"]
  part = ablation.run_benchmark(runner, root, TINY, seeds=2, window_size=2, only=only, epochs=1)
  results = sorted(root.rglob(study.RESULT_FILE))
  tuned = part["tuning"]
  # chosen = the best of the scores that were recorded, from the runs' own metrics
  for name in only:
    scores = {float(k): v for k, v in tuned[name]["scores"].items()}
    recorded = {}
    for lr in scores:
      run = root / "tiny" / "tune" / name / f"lr_{study.lr_key(lr)}" / "seed_0"
      r = json.loads((run / study.RESULT_FILE).read_text())
      assert "-val" in json.loads((run / "config.json").read_text())["dataset"]
      recorded[lr] = -r["summary"]["test_accuracy"]
    assert tuned[name]["chosen_lr"] == study.best_lr(recorded)
  assert len(tuned["mbag/momentum=0.0"]["scores"]) == 3  # base rate and one step either side
  # final: mean and std of the test accuracy over the two seeds, on the test split
  for name in only:
    lr = study.lr_key(tuned[name]["chosen_lr"])
    values = [json.loads((root / "tiny" / "final" / name / f"lr_{lr}" / f"seed_{s}" /
                          study.RESULT_FILE).read_text())["summary"]["test_accuracy"]
              for s in (0, 1)]
    row = part["final"][name]["test_accuracy"]
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["std"] == pytest.approx(np.std(values, ddof=1))
    config = json.loads((root / "tiny" / "final" / name / f"lr_{lr}" / "seed_1" /
                         "config.json").read_text())
    assert config["dataset"] == "mnist1d" and config["seed"] == 1
  assert not list(root.rglob("checkpoints"))
  # resuming trains nothing: every result file is left as it was
  stamps = {p: p.stat().st_mtime_ns for p in results}
  again = ablation.run_benchmark(runner, root, TINY, seeds=2, window_size=2, only=only, epochs=1)
  assert {p: p.stat().st_mtime_ns for p in root.rglob(study.RESULT_FILE)} == stamps
  assert again == part
  report = study.write_summary(tmp_path / study.SUMMARY_FILE, {"tiny": part}, {"seeds": 2},
                               "test", "cpu")
  assert json.loads((tmp_path / study.SUMMARY_FILE).read_text()) == report


def test_a_variant_without_its_base_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"need their base optimizers \['mbag'\]"):
    ablation.run_benchmark(ablation.Runner(1, None), tmp_path, TINY, seeds=1, window_size=1,
                           only=["mbag/momentum=0.0"], epochs=1)
