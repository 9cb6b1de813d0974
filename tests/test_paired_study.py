"""The study's main protocol (``paired``) with a fake runner: tuning windows and their cap, transfer
entries, paired comparisons at equal steps and in time, the records, the estimate, the CLI."""

import json
import math
import pathlib

from absl import flags
import pytest

from experiments import ablation
from experiments import paired_study
from experiments import study
from experiments import study_records
from experiments import study_stats

TINY = study.Benchmark("tiny", "mnist1d:smoke", "test_accuracy", True,
                       ("test_accuracy", "test_loss"), reference="adam")
# The fake's accuracy peaks at these rates (the smoke config's rates: adam 1e-2, mbag 3e-3,
# mbag_n 3e-4): adam's window (3e-3, 1e-2) grows once down, mbag's (1e-3, 3e-3) once down,
# mbag_n's (1e-4, 3e-4) upward until the cap.
PEAK = {"adam": 3e-3, "mbag": 1e-3, "mbag_n": 1.0}
TOP = {"adam": 0.9, "mbag": 0.8, "mbag_n": 0.7}
NOISE = {"adam": [0.0, 0.02, -0.01], "mbag": [0.03, 0.0, 0.04], "mbag_n": [0.0, 0.0, 0.0]}
# test_loss at steps 10, 20, 30, 40 of a final run; adam's last one is 0.5 + 0.1 x seed.
CURVE = {"adam": [2.0, 1.5, 1.0, None], "mbag": [1.2, 0.6, 0.5, 0.4], "mbag_n": [3.0] * 4}


def fake_run_job(calls):
  """A stand-in for one training run (writes config.json, metrics.jsonl and result.json)."""

  def run(job, data_dir, session=None):
    del data_dir
    config = json.loads(job.config_json)
    calls.append(job.workdir)
    opt, lr, seed = config["optimizer"], config["learning_rate"], config["seed"]
    accuracy = TOP[opt] - abs(math.log10(lr / PEAK[opt])) / 10 + NOISE[opt][seed]
    diverged = False
    if opt == "adam" and lr == 1e-2:  # a lucky seed 0 and a diverging seed 1: the mean decides
      accuracy, diverged = (0.95, False) if seed == 0 else (None, seed == 1)
    curve = list(CURVE[opt])
    curve[-1] = 0.5 + 0.1 * seed if curve[-1] is None else curve[-1]
    step_time = 0.01 if opt == "adam" else 0.02 + 0.001 * seed
    records = [{"step": 10 * (i + 1), "epoch": i + 1, "wall_time": 1.0 + i, "step_time": step_time,
                "test_loss": loss} for i, loss in enumerate(curve)]
    workdir = pathlib.Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(job.config_json)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = {"summary": {"test_accuracy": accuracy, "test_loss": curve[-1]},
              "diverged": diverged, "seconds": 1.0}
    if session is not None:
      result["session"] = dict(session)
    (workdir / study.RESULT_FILE).write_text(json.dumps(result))
    return result

  return run


def _run(tmp_path, monkeypatch, calls, only=("mbag", "mbag_n", "mbag@adam"), session="s1"):
  monkeypatch.setattr(ablation, "_run_job", fake_run_job(calls))
  runner = ablation.Runner(1, None, tmp_path, {"id": session, "hardware": "cpu", "workers": 1})
  return paired_study.run_benchmark(runner, tmp_path, TINY, seeds=3, tune_seeds=2, window_size=2,
                                    max_extensions=2, only=list(only))


def test_each_entry_is_tuned_at_its_own_rate_on_the_mean_of_two_seeds(tmp_path, monkeypatch):
  calls = []
  part = _run(tmp_path, monkeypatch, calls)
  adam = part["tuning"]["adam"]
  # seed 0 alone would pick 1e-2 (0.95); its mean with the diverged seed 1 is the worst
  assert adam["scores"]["0.01"] == {"mean": None, "values": [0.95, None]}
  assert adam["chosen_lr"] == 3e-3 and adam["window"] == [1e-3, 1e-2]
  assert adam["scores"]["0.003"]["mean"] == pytest.approx((0.9 + 0.92) / 2)
  assert (adam["extensions"], adam["cap_hit"], adam["best_at_edge"]) == (1, False, False)
  mbag = part["tuning"]["mbag"]
  assert mbag["chosen_lr"] == 1e-3 and mbag["window"] == [3e-4, 3e-3] and not mbag["cap_hit"]
  # mbag_n: (1e-4, 3e-4) -> 1e-3 -> 3e-3, then the cap of 2 extensions; the best is at the edge
  mbag_n = part["tuning"]["mbag_n"]
  assert list(mbag_n["scores"]) == ["0.0001", "0.0003", "0.001", "0.003"]
  assert mbag_n["chosen_lr"] == 3e-3
  assert (mbag_n["extensions"], mbag_n["cap"], mbag_n["cap_hit"], mbag_n["grid_edge"]) == (
      2, 2, True, False)
  tune_runs = [c for c in calls if "/tune/" in c]
  assert len(tune_runs) == 2 * (3 + 3 + 4)  # two seeds per rate, no spot checks
  for workdir in tune_runs:
    config = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    assert config["dataset"] == "mnist1d-val" and config["seed"] in (0, 1)


def test_a_transfer_entry_runs_untuned_at_its_sources_rate(tmp_path, monkeypatch):
  calls = []
  part = _run(tmp_path, monkeypatch, calls)
  assert not [c for c in calls if "/tune/mbag@adam/" in c]
  transfer = part["final"]["mbag@adam"]
  assert transfer["learning_rate"] == part["tuning"]["adam"]["chosen_lr"] == 3e-3
  assert transfer["transfer_from"] == "adam" and "transfer" in transfer["rate_source"]
  config = json.loads((tmp_path / "tiny" / "final" / "mbag@adam" / "lr_0.003" / "seed_2" /
                       "config.json").read_text())
  assert (config["optimizer"], config["learning_rate"], config["dataset"]) == ("mbag", 3e-3,
                                                                               "mnist1d")
  assert part["final"]["mbag"]["learning_rate"] == 1e-3  # its own rate, not adam's
  with pytest.raises(ValueError, match="their source is not an entry"):
    paired_study.select_entries(study.load_config(TINY.config), TINY, ["mbag@mbag_ema"])
  with pytest.raises(ValueError, match="unknown entry 'mbag_x'"):
    paired_study.select_entries(study.load_config(TINY.config), TINY, ["mbag_x"])


def test_paired_comparisons_at_equal_steps_and_in_time(tmp_path, monkeypatch):
  part = _run(tmp_path, monkeypatch, [])
  by = {(c["entry"], c["currency"]): c for c in part["comparisons"]}
  steps = by[("mbag", "steps")]
  # final accuracies at the peaks: adam 0.9 + (0, .02, -.01), mbag 0.8 + (.03, 0, .04)
  expected = [0.83 - 0.90, 0.80 - 0.92, 0.84 - 0.89]
  assert [steps["differences"][s] for s in "012"] == pytest.approx(expected)
  assert steps["mean"] == pytest.approx(sum(expected) / 3)
  # -0.07, -0.12, -0.05: mean -0.08, sd sqrt(.0026 / 2); t_{0.975, 2} = 4.302653 (a table):
  # the interval -0.08 -+ 0.0896 holds 0 -- with three seeds, 8 points are a tie
  half = 4.302653 * math.sqrt(0.0026 / 2) / math.sqrt(3)
  assert (steps["low"], steps["high"]) == (pytest.approx(-0.08 - half, abs=1e-6),
                                           pytest.approx(-0.08 + half, abs=1e-6))
  assert steps["verdict"] == "tie" and steps["n"] == 3
  # target: the largest of adam's best losses (0.5, 0.6, 0.7) = 0.7; adam reaches it at step 40
  # (0.4 s), mbag at step 20 (20 x (0.02 + 0.001 s)); mbag_n never
  assert part["target"]["value"] == pytest.approx(0.7)
  time = by[("mbag", "time")]
  assert [time["differences"][s] for s in "012"] == pytest.approx(
      [math.log(0.4 / (20 * (0.02 + 0.001 * s))) for s in range(3)])
  assert (time["entry_reached"], time["reference_reached"], time["n"]) == (3, 3, 3)
  assert time["ratio_mean"] == pytest.approx(math.exp(time["mean"]))
  assert (time["sessions"], time["hardware"], time["workers"]) == (["s1"], ["cpu"], [1])
  never = by[("mbag_n", "time")]
  assert (never["entry_reached"], never["n"], never["verdict"]) == (0, 0, None)
  assert part["final"]["mbag_n"]["time_to_target"]["0"]["reached"] is False


def test_times_from_another_session_are_not_compared(tmp_path, monkeypatch):
  _run(tmp_path, monkeypatch, [])
  # seed 1 of mbag is run again by a later command: its time is from another session
  (tmp_path / "tiny" / "final" / "mbag" / "lr_0.001" / "seed_1" / study.RESULT_FILE).unlink()
  part = _run(tmp_path, monkeypatch, [], session="s2")
  time = {(c["entry"], c["currency"]): c for c in part["comparisons"]}[("mbag", "time")]
  assert time["other_session_seeds"] == [1] and sorted(time["differences"]) == ["0", "2"]
  steps = {(c["entry"], c["currency"]): c for c in part["comparisons"]}[("mbag", "steps")]
  assert steps["n"] == 3  # equal steps do not depend on the machine


def test_the_reference_is_checked_against_its_figures(tmp_path):
  for s, accuracy in enumerate([0.92, 0.93, 0.90]):
    run = tmp_path / "ref" / f"seed_{s}"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "test_accuracy": accuracy}) + "\n")
  bench = study.Benchmark("b", "mnist1d:smoke", "test_accuracy", True, ("test_accuracy",),
                          figures=(study.ReferenceFigure("published", "test_accuracy", value=0.94),
                                   study.ReferenceFigure("ours", "test_accuracy",
                                                         runs="ref/seed_*")))
  results = {s: {"summary": {"test_accuracy": v}, "diverged": False}
             for s, v in enumerate([0.915, 0.925, 0.92])}
  published, ours = paired_study.reference_check(bench, results, repo_root=tmp_path)
  assert published["study"]["mean"] == pytest.approx(0.92)
  # 0.92 -+ 4.3027 x 0.005 / sqrt(3) = (0.9076, 0.9324): below 0.94, and 0.9167 inside
  assert published["reached"] is False and published["within_interval"] is False
  assert ours["value"] == pytest.approx((0.92 + 0.93 + 0.90) / 3)
  assert ours["runs_values"] == [0.92, 0.93, 0.90]
  assert ours["reached"] is True and ours["within_interval"] is True


def test_superseded_final_runs_are_listed_with_their_results(tmp_path, monkeypatch):
  _run(tmp_path, monkeypatch, [], only=("mbag",))
  old = tmp_path / "tiny" / "final" / "mbag" / "lr_0.3" / "seed_0"
  old.mkdir(parents=True)
  (old / study.RESULT_FILE).write_text(json.dumps({"summary": {"test_accuracy": 0.5},
                                                   "diverged": False, "seconds": 1.0}))
  part = _run(tmp_path, monkeypatch, [], only=("mbag",))
  assert part["superseded_finals"] == [{
      "entry": "mbag", "learning_rate": "0.3", "tuned_rate_now": 1e-3,
      "test_accuracy": {"seed_0": 0.5},
      "why": "not the entry's tuned rate now (or the entry is not in this command)"}]


def _main(tmp_path, monkeypatch, calls, *argv):
  monkeypatch.setattr(ablation, "_run_job", fake_run_job(calls))
  monkeypatch.setitem(ablation.PROTOCOLS, "paired", ablation.Protocol(
      {"tiny": TINY}, paired_study.SUMMARY_FILE, str(tmp_path / "study"), 3, 2))
  fv = flags.FlagValues()
  ablation.define_flags(fv)
  fv(["ablation", "--window=2", "--max_extensions=2", *argv])
  monkeypatch.setattr(flags, "FLAGS", fv)
  return ablation.main(["ablation"])


def test_the_summary_keeps_every_command_and_logs_a_replaced_run(tmp_path, monkeypatch, capsys):
  calls = []
  assert _main(tmp_path, monkeypatch, calls, "--only=mbag") == 0
  root = tmp_path / "study"
  first = json.loads((root / paired_study.SUMMARY_FILE).read_text())
  assert len(first["commands"]) == 1 and first["commands"][0]["runs_trained"] == len(calls)
  assert first["commands"][0]["finished"] is not None and "commit" in first["commands"][0]
  # the config of one finished run changes (as if its preset had): it is replaced, not reused
  stored = root / "tiny" / "final" / "mbag" / "lr_0.001" / "seed_2" / "config.json"
  config = json.loads(stored.read_text())
  old_result = json.loads((stored.parent / study.RESULT_FILE).read_text())
  stored.write_text(json.dumps({**config, "batch_size": 7}))
  done = len(calls)
  assert _main(tmp_path, monkeypatch, calls, "--only=mbag") == 0
  assert calls[done:] == [str(stored.parent)]
  summary = json.loads((root / paired_study.SUMMARY_FILE).read_text())
  assert [c["id"] for c in summary["commands"][:1]] == [first["commands"][0]["id"]]
  assert len(summary["commands"]) == 2 and summary["commands"][1]["runs_trained"] == 1
  [replaced] = summary["replaced_runs"]
  assert replaced["run"] == "tiny/final/mbag/lr_0.001/seed_2"
  assert replaced["changed"] == ["batch_size"] and replaced["reason"] == "config changed"
  assert replaced["old_result"] == old_result
  assert replaced["command_id"] == summary["commands"][1]["id"]
  assert study_records.read_replaced(root) == [replaced]
  # Holm over the study's comparisons (mbag vs adam at equal steps; in time)
  assert summary["multiplicity"]["method"] == "holm"
  assert summary["multiplicity"]["comparisons"] == sum(
      c["p_value"] is not None for c in summary["benchmarks"]["tiny"]["comparisons"])
  assert summary["protocol"]["compilation_included"] is False


def test_estimate_counts_runs_per_entry_and_predicts_the_wall_time(tmp_path, monkeypatch, capsys):
  root = tmp_path / "study"
  root.mkdir()
  (root / ablation.TIMINGS_FILE).write_text(json.dumps({
      "seconds_per_run": {"tiny": {"adam": 10.0, "mbag": 30.0}}, "hardware": "cpu",
      "workers": 2}))
  assert _main(tmp_path, monkeypatch, [], "--only=mbag,mbag@adam", "--estimate", "--workers=2",
               "--seeds=5") == 0
  out = capsys.readouterr().out
  # adam and mbag: window 2 x 2 seeds + 5 final (up to (2 + 2) x 2 + 5); mbag@adam: 5 final
  assert "  adam: 4 + 5 = 9 runs (up to 13) x 10 s" in out
  assert "  mbag@adam: 0 + 5 = 5 runs (up to 5) x 30 s" in out
  low, high = (9 * 10 + 9 * 30 + 5 * 30) / 2, (13 * 10 + 13 * 30 + 5 * 30) / 2
  assert (f"with 2 worker(s): {low / 3600:.2f} h without window extensions, up to "
          f"{high / 3600:.2f} h") in out
  assert _main(tmp_path, monkeypatch, [], "--only=mbag_n", "--estimate") == 1
  assert "tiny/mbag_n" in capsys.readouterr().err


def test_real_runs_of_the_smoke_preset_end_to_end(tmp_path, monkeypatch):
  """One epoch of MNIST-1D's smoke preset on 300 generated signals: Adam tuned at one rate on
  two seeds, AdaGrad at Adam's rate (a transfer), one final seed each; the comparison and the
  time to target come from the runs' own files."""
  from experiments.data import testing
  data_dir = tmp_path / "data"
  testing.write_mnist1d(str(data_dir), num_train=300, num_test=60)
  monkeypatch.setenv("MBAG_DATA_DIR", str(data_dir))
  runner = ablation.Runner(1, None, tmp_path, {"id": "s", "hardware": "cpu", "workers": 1})
  part = paired_study.run_benchmark(
      runner, tmp_path, TINY, seeds=1, tune_seeds=2, window_size=1, max_extensions=0,
      only=["adagrad@adam"], with_epochs=lambda job: ablation._with_epochs(job, 1))
  assert runner.trained == 4
  assert part["tuning"]["adam"]["extensions"] == 0
  assert part["tuning"]["adam"]["cap_hit"] is False  # a window of one rate has no edge
  final = tmp_path / "tiny" / "final" / "adagrad@adam" / "lr_0.01" / "seed_0"
  records = [json.loads(line) for line in (final / "metrics.jsonl").read_text().splitlines()]
  result = json.loads((final / study.RESULT_FILE).read_text())
  assert result["session"]["id"] == "s" and "load_average_start" in result["session"]
  steps = {c["currency"]: c for c in part["comparisons"]}["steps"]
  adam = json.loads((tmp_path / "tiny" / "final" / "adam" / "lr_0.01" / "seed_0" /
                     study.RESULT_FILE).read_text())
  assert steps["differences"]["0"] == pytest.approx(
      records[-1]["test_accuracy"] - adam["summary"]["test_accuracy"])
  assert steps["n"] == 1 and steps["verdict"] is None  # one seed: no interval
  time = part["final"]["adagrad@adam"]["time_to_target"]["0"]
  assert time == study_stats.time_to_target(records, part["target"]["value"])
  assert time["compile_seconds"] == records[0]["compile_time"] > 0


def test_holm_spans_the_benchmarks_of_every_command(tmp_path):
  path = tmp_path / paired_study.SUMMARY_FILE
  part_a = {"comparisons": [{"p_value": 0.01, "mean": 0.5}, {"p_value": 0.04, "mean": -0.2}]}
  part_b = {"comparisons": [{"p_value": 0.03, "mean": 0.1}, {"p_value": None, "mean": None}]}
  paired_study.write_summary(path, {"a": part_a}, {"name": "paired"},
                             {"id": "c1", "command": "first"}, "cpu", [])
  summary = paired_study.write_summary(path, {"b": part_b}, {"name": "paired"},
                                       {"id": "c2", "command": "second"}, "cpu", [])
  assert summary["benchmarks"]["a"]["command"] == "c1"  # made by the first command
  assert summary["benchmarks"]["b"]["command"] == "c2"
  assert (summary["multiplicity"]["comparisons"], summary["multiplicity"]["without_interval"]) == (
      3, 1)
  # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04)
  a, b = summary["benchmarks"]["a"]["comparisons"], summary["benchmarks"]["b"]["comparisons"]
  assert [c["adjusted_p"] for c in a] == [pytest.approx(0.03), pytest.approx(0.06)]
  assert [c["adjusted_verdict"] for c in a] == ["better", "tie"]
  assert (b[0]["adjusted_p"], b[0]["adjusted_verdict"]) == (pytest.approx(0.06), "tie")
  assert b[1]["adjusted_verdict"] is None
  assert [c["command"] for c in summary["commands"]] == ["first", "second"]


# training examples of each benchmark's data set (MNIST-1D 4000, MNIST-5k 4000, digits 1500)
TRAIN_EXAMPLES = {"mnist1d": 4000, "mnist5k": 4000, "digits": 1500}


@pytest.mark.parametrize("study_spec,constant_spec", [
    ("mnist1d:study", "mnist1d:ablation"), ("mnist5k:study", "mnist5k:ablation"),
    ("digits:study", "digits:demo_autoencoder")])
def test_study_presets_warm_up_five_percent_then_decay_over_the_same_steps(study_spec,
                                                                           constant_spec):
  main, constant = study.load_config(study_spec), study.load_config(constant_spec)
  steps = main.num_epochs * (TRAIN_EXAMPLES[study_spec.split(":")[0]] // main.batch_size)
  assert (main.num_epochs, main.batch_size) == (constant.num_epochs, constant.batch_size)
  assert main.lr_schedule == "warmup_cosine" and main.lr_final_fraction == 0.0
  assert main.warmup_steps == round(0.05 * steps) and tuple(main.lr_decay_epochs) == ()
  # the held-out loss is evaluated at least every 5 % of the run (time to target)
  steps_per_epoch = steps // main.num_epochs
  every = min(main.eval_every_epochs * steps_per_epoch, main.get("eval_every_steps") or steps)
  assert every <= 0.05 * steps
  # the study runs these presets; the constant-rate presets stay with the second protocol
  assert paired_study.BENCHMARKS[{"digits": "digits_ae"}.get(
      study_spec.split(":")[0], study_spec.split(":")[0])].config == study_spec
