"""The study's statistics against hand computations (experiments/study_stats.py)."""

import json
import math

import pytest

from experiments import metrics
from experiments import study_stats

# Student's t quantile t_{0.975, 4}, from a printed table (not from scipy).
T_975_DF4 = 2.776445105


def _t_cdf_df4(t):
  """Student's t CDF with 4 degrees of freedom in closed form: 1/2 + (3/4) x (1 - x^2/3),
  x = t / sqrt(4 + t^2)."""
  x = t / math.sqrt(4 + t * t)
  return 0.5 + 0.75 * x * (1 - x * x / 3)


def test_the_t_interval_of_five_differences_by_hand():
  d = [0.2, 0.5, -0.1, 0.4, 0.3]
  # mean 0.26; squared deviations .0036 .0576 .1296 .0196 .0016 = .212; sd = sqrt(.212 / 4)
  sd = math.sqrt(0.212 / 4)
  half = T_975_DF4 * sd / math.sqrt(5)
  out = study_stats.t_interval(d)
  assert out["n"] == 5 and out["df"] == 4
  assert out["mean"] == pytest.approx(0.26, abs=1e-12)
  assert out["sd"] == pytest.approx(sd, rel=1e-12)
  assert (out["low"], out["high"]) == (pytest.approx(0.26 - half, abs=1e-8),
                                       pytest.approx(0.26 + half, abs=1e-8))
  t = 0.26 / (sd / math.sqrt(5))
  assert out["p_value"] == pytest.approx(2 * (1 - _t_cdf_df4(t)), rel=1e-8)
  assert out["low"] < 0 < out["high"] and study_stats.compare(dict(enumerate(d)))["verdict"] == "tie"
  assert out["p_value"] > 0.05  # the interval contains 0 exactly when p >= 0.05


def test_an_interval_above_zero_is_better_and_below_is_worse():
  d = {0: 1.0, 1: 1.2, 2: 0.9, 3: 1.1, 4: 1.3}  # mean 1.1, sd sqrt(0.1 / 4)
  half = T_975_DF4 * math.sqrt(0.025) / math.sqrt(5)
  better = study_stats.compare(d)
  assert better["low"] == pytest.approx(1.1 - half) and better["high"] == pytest.approx(1.1 + half)
  assert better["verdict"] == "better" and better["p_value"] < 0.05
  assert better["differences"] == {"0": 1.0, "1": 1.2, "2": 0.9, "3": 1.1, "4": 1.3}
  assert study_stats.compare({k: -v for k, v in d.items()})["verdict"] == "worse"


def test_small_and_degenerate_samples():
  one = study_stats.t_interval([0.3])
  assert one["mean"] == 0.3 and one["low"] is None and one["p_value"] is None
  assert study_stats.verdict(None, None) is None
  same = study_stats.t_interval([0.5, 0.5, 0.5])
  assert (same["low"], same["high"], same["p_value"]) == (0.5, 0.5, 0.0)
  zero = study_stats.t_interval([0.0, 0.0])
  assert zero["p_value"] == 1.0 and study_stats.verdict(zero["low"], zero["high"]) == "tie"
  with pytest.raises(ValueError, match="non-finite"):
    study_stats.t_interval([1.0, math.nan])


def test_differences_are_oriented_so_that_positive_means_the_entry_is_better():
  # losses (lower is better): entry 1.0 vs reference 1.5 is +0.5
  assert study_stats.oriented_difference(1.0, 1.5, higher_is_better=False) == 0.5
  assert study_stats.oriented_difference(0.9, 0.95, higher_is_better=True) == pytest.approx(-0.05)
  # paired by seed; a seed missing or diverged on either side is left out
  entry = {0: 0.90, 1: 0.80, 2: None, 3: 0.70}
  reference = {0: 0.85, 1: 0.82, 2: 0.9, 4: 0.9}
  assert study_stats.paired(entry, reference, True) == {0: pytest.approx(0.05),
                                                       1: pytest.approx(-0.02)}


def test_holm_by_hand():
  # sorted 0.01, 0.03, 0.04, 0.5 -> 4 x .01 = .04; 3 x .03 = .09; max(.09, 2 x .04); 1 x .5
  adjusted, rejected = study_stats.holm([0.01, 0.04, 0.03, 0.5])
  assert adjusted == [pytest.approx(0.04), pytest.approx(0.09), pytest.approx(0.09),
                      pytest.approx(0.5)]
  assert rejected == [True, False, False, False]
  assert study_stats.adjusted_verdict(-0.2, True) == "worse"
  assert study_stats.adjusted_verdict(0.2, False) == "tie"
  assert study_stats.holm([]) == ([], [])


RECORDS = [
    {"step": 10, "epoch": 1, "wall_time": 9.0, "step_time": 0.1, "compile_time": 3.0},
    {"step": 20, "epoch": 2, "wall_time": 12.0, "step_time": 0.2, "test_loss": 1.5},
    {"step": 30, "epoch": 3, "wall_time": 13.5, "step_time": 0.1},
    {"step": 40, "epoch": 4, "wall_time": 18.0, "step_time": 0.3, "test_loss": 0.9},
    {"step": 50, "epoch": 5, "wall_time": 20.0, "step_time": 0.1, "test_loss": 0.8},
]


def test_time_to_target_from_a_hand_written_metrics_file(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  records = metrics.read_records(path)
  # 10 x 0.1 + 10 x 0.2 + 10 x 0.1 + 10 x 0.3: evaluation and compilation (3 s) left out
  reached = study_stats.time_to_target(records, 1.0)
  assert reached == {"reached": True, "seconds": pytest.approx(7.0), "step": 40,
                     "compile_seconds": 3.0}
  at = study_stats.time_to_target(records, 1.5)  # "at or below"
  assert at["step"] == 20 and at["seconds"] == pytest.approx(3.0)
  never = study_stats.time_to_target(records, 0.5)
  assert never["reached"] is False and never["seconds"] is None
  assert study_stats.best_value(records, "test_loss") == 0.8


def test_a_record_without_step_time_counts_at_the_runs_mean():
  records = [{"step": 1, "compile_time": 2.0}, {"step": 11, "step_time": 0.5, "test_loss": 1.0},
             {"step": 21, "step_time": 1.5, "test_loss": 0.1}]
  # step 1 at the mean step time (0.5 + 1.5) / 2 = 1.0, then 10 x 0.5, then 10 x 1.5
  assert study_stats.training_seconds(records) == [(1, 1.0), (11, 6.0), (21, 21.0)]
  with pytest.raises(ValueError, match="out of order"):
    study_stats.training_seconds([{"step": 5, "step_time": 1.0}, {"step": 3, "step_time": 1.0}])


def test_log_time_ratios_pair_the_seeds_where_both_reached():
  ratios = study_stats.log_time_ratios({0: 2.0, 1: None, 2: 4.0}, {0: 4.0, 1: 3.0, 2: 2.0})
  assert ratios == {0: pytest.approx(math.log(2.0)), 2: pytest.approx(math.log(0.5))}
