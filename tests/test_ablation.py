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


def test_window_grows_down_while_every_rate_diverges():
  scores = {1e-3: math.inf, 3e-3: math.inf, 1e-2: math.inf}
  rounds = study.iter_tuning_rates(3e-3, 3, scores)
  assert next(rounds) == [1e-3, 3e-3, 1e-2]
  assert next(rounds) == [3e-4, 1e-3, 3e-3, 1e-2]  # all diverged: one step down
  scores[3e-4] = math.inf
  assert next(rounds) == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
  scores[1e-4] = math.inf
  assert next(rounds, None) is None  # MAX_EXTENSIONS reached
  low = study.iter_tuning_rates(1e-5, 3, {1e-5: math.inf, 3e-5: math.inf, 1e-4: math.inf})
  assert next(low) == [1e-5, 3e-5, 1e-4] and next(low, None) is None  # nothing lower on the grid


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


def _fake_run_job(calls):
  """A stand-in for one training run: accuracy peaks at lr = 3e-3 (0.9 for adam, 0.8 for the
  others, minus 0.01 per seed); lr >= 0.1 diverges. Writes config.json and result.json."""

  def run(job, data_dir, session=None):
    del data_dir, session
    config = json.loads(job.config_json)
    calls.append(job.workdir)
    lr, seed = config["learning_rate"], config["seed"]
    top = 0.9 if config["optimizer"] == "adam" else 0.8
    if config["optimizer_config"]["mbag"]["momentum"] == 0.0 and config["optimizer"] == "mbag":
      top = 0.7
    result = {"summary": {"test_accuracy": top - abs(math.log10(lr / 3e-3)) / 10 - 0.01 * seed,
                          "test_loss": lr}, "diverged": lr >= 0.1, "seconds": 1.0}
    workdir = pathlib.Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(job.config_json)
    (workdir / study.RESULT_FILE).write_text(json.dumps(result))
    return result

  return run


def test_stages_choose_rates_resume_and_summarise(tmp_path, monkeypatch):
  """Adam and MBAG tuned on a window of 2 grown to the best's far side, MBAG without momentum
  spot-checked at MBAG's rate and its neighbours, two final seeds on the test split."""
  calls = []
  monkeypatch.setattr(ablation, "_run_job", _fake_run_job(calls))
  root = tmp_path / "ablation"
  only = ["adam", "mbag", "mbag/momentum=0.0"]
  runner = ablation.Runner(1, None, tmp_path)
  part = ablation.run_benchmark(runner, root, TINY, seeds=2, window_size=2, only=only, epochs=1)
  tuned = part["tuning"]
  # adam's window around 1e-2 is (3e-3, 1e-2) -> best 3e-3 at the edge -> grows to 1e-3: stop
  assert list(tuned["adam"]["scores"]) == ["0.001", "0.003", "0.01"]
  assert tuned["adam"]["chosen_lr"] == 3e-3 and tuned["mbag"]["chosen_lr"] == 3e-3
  assert list(tuned["mbag/momentum=0.0"]["scores"]) == ["0.001", "0.003", "0.01"]
  assert tuned["mbag/momentum=0.0"]["scores"]["0.003"] == pytest.approx(-0.7)
  for workdir in calls[:-6]:  # tuning runs see the validation split, seed 0
    config = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    assert config["dataset"] == "mnist1d-val" and config["seed"] == 0
  final = json.loads((root / "tiny" / "final" / "mbag" / "lr_0.003" / "seed_1" /
                      "config.json").read_text())
  assert (final["dataset"], final["seed"], final["num_epochs"]) == ("mnist1d", 1, 1)
  row = part["final"]["adam"]["test_accuracy"]
  assert row["mean"] == pytest.approx(0.895) and row["std"] == pytest.approx(np.std([0.9, 0.89],
                                                                                        ddof=1))
  assert part["final"]["mbag/momentum=0.0"]["group"] == "momentum"
  # resuming runs nothing and gives the same summary
  done = len(calls)
  assert ablation.run_benchmark(runner, root, TINY, seeds=2, window_size=2, only=only,
                                epochs=1) == part
  assert len(calls) == done
  report = study.write_summary(tmp_path / study.SUMMARY_FILE, {"tiny": part}, {"seeds": 2},
                               "test", "cpu")
  assert json.loads((tmp_path / study.SUMMARY_FILE).read_text()) == report


def test_a_diverging_tuning_rate_scores_worst(tmp_path, monkeypatch):
  monkeypatch.setattr(ablation, "_run_job", _fake_run_job([]))
  part = ablation.run_benchmark(ablation.Runner(1, None, tmp_path), tmp_path, TINY, seeds=1, window_size=5,
                                only=["adam"], epochs=1)
  scores = part["tuning"]["adam"]["scores"]
  assert scores["0.1"] is None and part["tuning"]["adam"]["chosen_lr"] == 3e-3


def test_one_real_run_writes_its_result_and_drops_checkpoints(tmp_path, monkeypatch):
  """One epoch of the MNIST-1D smoke preset on a generated 300-signal file, validation split."""
  data_dir = tmp_path / "data"
  testing.write_mnist1d(str(data_dir), num_train=300, num_test=60)
  monkeypatch.setenv("MBAG_DATA_DIR", str(data_dir))
  job = ablation._with_epochs(study.make_job(tmp_path / "a", TINY, "tune", study.Entry("adam", "adam"),
                                             1e-2, 0, True), 1)
  result = ablation._run_job(job, None)
  workdir = pathlib.Path(job.workdir)
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert not result["diverged"] and result["summary"]["test_accuracy"] == records[-1]["test_accuracy"]
  assert json.loads((workdir / study.RESULT_FILE).read_text())["summary"]["step"] == 2  # 240 / 100
  assert json.loads((workdir / "config.json").read_text())["num_test"] == 60  # 20 % of 300
  assert sorted(p.name for p in workdir.iterdir()) == ["config.json", "metrics.jsonl", "result.json"]
  assert study.read_result(workdir) == json.loads((workdir / study.RESULT_FILE).read_text())


def test_a_variant_without_its_base_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"need their base optimizers \['mbag'\]"):
    ablation.run_benchmark(ablation.Runner(1, None, tmp_path), tmp_path, TINY, seeds=1, window_size=1,
                           only=["mbag/momentum=0.0"], epochs=1)


def test_without_spot_checks_variants_run_once_at_their_base_rate(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(ablation, "_run_job", _fake_run_job(calls))
  only = ["adam", "mbag", "mbag/momentum=0.0"]
  part = ablation.run_benchmark(ablation.Runner(1, None, tmp_path), tmp_path, TINY, seeds=1, window_size=2,
                                only=only, epochs=1, spot_check=False)
  variant = part["tuning"]["mbag/momentum=0.0"]
  assert variant == {"scores": {"0.003": pytest.approx(-0.7)}, "chosen_lr": 3e-3,
                     "stage": "base rate"}
  spot_runs = [c for c in calls if "momentum=0.0" in c and "/tune/" in c]
  assert len(spot_runs) == 1
  config = study.load_config(TINY.config)
  mbag_variants = sum(v.optimizer == "mbag" for v in study.variants(config))
  cut = study.plan_counts(config, 2, 1, spot_check=False)["mbag"]
  assert study.plan_counts(config, 2, 1)["mbag"] - cut == 2 * mbag_variants  # 3 rates -> 1


def test_a_summary_keeps_the_benchmarks_an_earlier_command_wrote(tmp_path):
  path = tmp_path / study.SUMMARY_FILE
  study.write_summary(path, {"a": {"final": {"adam": 1}}}, {"seeds": 3}, "first", "cpu")
  report = study.write_summary(path, {"b": {"final": {"mbag": 2}}}, {"seeds": 1}, "second", "cpu")
  assert report["benchmarks"]["a"] == {"final": {"adam": 1}, "protocol": {"seeds": 3},
                                       "command": "first"}
  assert report["benchmarks"]["b"]["command"] == "second" and report["protocol"] == {"seeds": 1}
  assert [c["command"] for c in report["commands"]] == ["first", "second"]  # none overwritten
  path.write_text("[1, 2]")
  with pytest.raises(ValueError, match="not a summary"):
    study.write_summary(path, {}, {}, "third", "cpu")


def test_an_unfinished_run_of_another_config_is_started_afresh(tmp_path, monkeypatch):
  from experiments import errors
  from experiments import train
  job = study.make_job(tmp_path, TINY, "final", study.Entry("adam", "adam"), 1e-2, 0, False)
  workdir = pathlib.Path(job.workdir)
  (workdir / "checkpoints" / "8").mkdir(parents=True)
  (workdir / "metrics.jsonl").write_text('{"step": 8}\n')
  seen = []

  def fake_run(config, directory, data_dir):
    seen.append(sorted(p.name for p in pathlib.Path(directory).iterdir()))
    if len(seen) == 1:
      raise errors.ConfigError("the run in this directory has a different config")
    return train.RunResult(params=None, model_state={}, summary={"test_accuracy": 0.5},
                           workdir=directory)

  monkeypatch.setattr(train, "run", fake_run)
  result = ablation._run_job(job, None)
  assert seen == [["checkpoints", "log.txt", "metrics.jsonl"], ["log.txt"]]
  assert result["summary"] == {"test_accuracy": 0.5} and not result["diverged"]
  assert "restarting an unfinished run" in (workdir / "log.txt").read_text()
