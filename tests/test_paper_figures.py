"""Tests for paper_figures: run discovery, Table I numbers, figure files, error messages."""

import json
import math
import pathlib
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from paper_figures import autoencoder  # pylint: disable=wrong-import-position
from paper_figures import bound  # pylint: disable=wrong-import-position
from paper_figures import classification  # pylint: disable=wrong-import-position
from paper_figures import cli  # pylint: disable=wrong-import-position
from paper_figures import health  # pylint: disable=wrong-import-position
from paper_figures import runs as runs_lib  # pylint: disable=wrong-import-position
from paper_figures import series  # pylint: disable=wrong-import-position
from paper_figures import style  # pylint: disable=wrong-import-position
from paper_figures import table  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]

# Final test accuracy (%) per optimizer and seed of the CIFAR fixture.
CIFAR_FINAL = {
    "adam": {0: 89.0, 1: 90.5, 2: 91.0},
    "mbag": {0: 0.9012, 1: 0.9034},  # stored as fractions
    "kfac": {3: 90.0},
}
NUM_EPOCHS_RUN = 3


def write_run(directory, config, records, tail=""):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(config))
  text = "".join(json.dumps(r) + "\n" for r in records) + tail
  (directory / "metrics.jsonl").write_text(text)
  return directory


def cifar_records(final, fraction):
  """3 epochs: per epoch two train records and one eval record; the last eval holds `final`."""
  scale = 0.01 if fraction else 1.0
  records = []
  for epoch in range(1, NUM_EPOCHS_RUN + 1):
    for k in range(2):
      step = (epoch - 1) * 20 + 10 * (k + 1)
      records.append({"step": step, "epoch": epoch, "wall_time": 1.5 * step,
                      "train_loss": 2.0 / (step + k), "train_accuracy": (40 + 10 * epoch) * scale})
    test_accuracy = final if epoch == NUM_EPOCHS_RUN else (30.0 + epoch) * scale
    records.append({"step": epoch * 20, "epoch": epoch, "wall_time": 30.0 * epoch + 1,
                    "test_loss": 1.0 / epoch, "test_accuracy": test_accuracy})
  return records


def cifar_config(optimizer, seed, **extra):
  return {"task": "cifar", "dataset": "cifar10", "optimizer": optimizer, "seed": seed,
          "num_epochs": 200, "preset": "test", "hardware": "unit-test CPU",
          "optimizer_config": {optimizer: {"block_size": 32}}, **extra}


def make_tree(root):
  """CIFAR runs (adam x3, mbag x2 as fractions, kfac x1, adagrad truncated), FACES runs, verify.json."""
  for optimizer, finals in CIFAR_FINAL.items():
    for seed, final in finals.items():
      write_run(root / "cifar" / f"{optimizer}-{seed}", cifar_config(optimizer, seed),
                cifar_records(final, fraction=final <= 1))
  write_run(root / "cifar" / "adagrad-0", cifar_config("adagrad", 0),
            cifar_records(80.0, False)[:2], tail='{"step": 30, "epoch": 2, "wall_ti')
  for optimizer in ("adam", "mbag"):
    for seed in (0, 1):
      records = [{"step": s, "epoch": s // 50, "wall_time": 1.7e9 + 0.1 * s,
                  "train_loss": 0.7 * math.exp(-s / 100) + 0.1 * seed} for s in range(0, 200, 20)]
      write_run(root / "ae" / f"faces-{optimizer}-{seed}",
                {"task": "autoencoder", "dataset": "faces", "optimizer": optimizer, "seed": seed,
                 "preset": "test"}, records)
  verify = [{"problem": p, "setting": s, "T": t, "seed": seed, "lhs": 1.0 / t,
             "rhs": 10.0 / math.sqrt(t), "holds": not (p == "mlp" and t == 100),
             "L_exact": p != "mlp", "logdet_ratio": math.log(t), "sum_gamma": 0.1 * t,
             "trace_H0_sqrt": 10.0, "G": 1.0, "L": 1.0, "C": 1.0, "eta": 0.1, "lambda": 0.01}
            for p in ("quadratic", "mlp") for s in ("theorem", "practical")
            for t in (10, 100) for seed in (0, 1)]
  (root / "theory").mkdir()
  (root / "theory" / "verify.json").write_text(json.dumps(verify))
  return root


@pytest.fixture(name="tree")
def fixture_tree(tmp_path):
  return make_tree(tmp_path / "runs")


def markdown_rows(text):
  """The cells of every row of the Markdown tables in ``text`` (separator lines left out)."""
  rows = []
  for line in text.splitlines():
    if line.startswith("|") and not set(line) <= set("|-: "):
      rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
  return rows


def assert_columns_line_up(text):
  """Every line of each table has its pipes at the same positions: columns sized to content."""
  tables = [[]]
  for line in text.splitlines():
    if line.startswith("|"):
      tables[-1].append(line)
    elif tables[-1]:
      tables.append([])
  for lines in tables:
    pipes = {tuple(i for i, c in enumerate(line) if c == "|") for line in lines}
    assert len(pipes) <= 1, "\n".join(lines)


def hand_mean_std(values):
  n = len(values)
  mean = sum(values) / n
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


# ---------------------------------------------------------------- Table I numbers


def test_table_rows_mean_std_by_hand(tree):
  loaded = runs_lib.load_runs(tree)
  cifar = [r for r in loaded.runs if classification.is_cifar(r)]
  rows, notes = table.table_rows(cifar, table.PAPER_TABLE_I)
  by_name = {row.optimizer: row for row in rows}

  adam = by_name["adam"]
  mean, std = hand_mean_std([89.0, 90.5, 91.0])  # 90.1667, 1.0408
  assert adam.seeds == (0, 1, 2)
  assert adam.accuracies == (89.0, 90.5, 91.0)  # last epoch, not the earlier 31..32
  assert adam.mean == pytest.approx(mean, abs=1e-12)
  assert adam.std == pytest.approx(std, abs=1e-12)
  assert adam.epochs == (3.0, 3.0, 3.0)

  mbag = by_name["mbag"]  # fractions 0.9012, 0.9034 -> percent
  assert mbag.mean == pytest.approx(90.23, abs=1e-9)
  assert mbag.std == pytest.approx(math.sqrt(2 * 0.11 ** 2), abs=1e-9)
  assert any("mbag: seed(s) 0, 1 stored accuracy as fractions" in n for n in notes)

  assert by_name["kfac"].mean == 90.0 and math.isnan(by_name["kfac"].std)
  assert by_name["shampoo"].seeds == () and math.isnan(by_name["shampoo"].mean)
  assert by_name["adagrad"].seeds == ()  # its only run is truncated, hence not loaded
  assert [r.optimizer for r in rows] == list(table.PAPER_TABLE_I)  # paper order, all 7 rows

  markdown = table.to_markdown(rows, "caption")
  cells = markdown_rows(markdown)
  assert cells[0] == ["Optimizer", "Paper (%)", "Reproduced (%)", "Seeds", "Seed values",
                      "Epochs run"]
  assert ["Adam", "89.93 ± 0.361", f"{mean:.2f} ± {std:.3f}", "3", "0, 1, 2", "3 of 200"] in cells
  assert ["MBAG (τ=32)", "90.17 ± 0.112", "90.23 ± 0.156", "2", "0, 1", "3 of 200"] in cells
  assert ["KFAC", "90.64 ± 0.145", "90.00 ± n/a", "1", "3", "3 of 200"] in cells
  assert ["Shampoo", "83.67 ± 0.156", "no runs", "0", "—", "—"] in cells
  assert_columns_line_up(markdown)
  latex = table.to_latex(rows, "ResNet-56 / CIFAR-10 100%")
  assert r"MBAG ($\tau$=32) & 90.17 $\pm$ 0.112 & 90.23 $\pm$ 0.156 & 2 & 0, 1 & 3 of 200 \\" in latex
  assert r"\caption{ResNet-56 / CIFAR-10 100\%}" in latex


def test_final_accuracy_is_last_logged_epoch_even_if_out_of_order(tmp_path):
  records = [{"step": 20, "epoch": 2, "wall_time": 2.0, "test_accuracy": 0.7},
             {"step": 10, "epoch": 1, "wall_time": 1.0, "test_accuracy": 0.9},
             {"step": 25, "epoch": 2, "wall_time": 2.5, "train_loss": 0.1}]
  run = runs_lib.load_run(write_run(tmp_path / "r", cifar_config("adam", 0), records))
  final = series.final_test_accuracy(run)
  assert final == series.FinalAccuracy(percent=70.0, epoch=2.0, stored_fraction=True)


def test_tau_differing_from_paper_is_noted(tmp_path):
  config = cifar_config("mbag", 0)
  config["optimizer_config"]["mbag"]["block_size"] = 16
  run = runs_lib.load_run(write_run(tmp_path / "r", config, cifar_records(90.0, False)))
  rows, notes = table.table_rows([run], table.PAPER_TABLE_I)
  assert {r.optimizer: r.label for r in rows}["mbag"] == "MBAG (τ=16)"
  assert "mbag: runs use tau=16, the paper's number is for tau=32" in notes


# ---------------------------------------------------------------- curves across seeds


def test_seed_band_interpolates_and_counts_seeds():
  band = series.seed_band([(np.array([0.0, 2.0]), np.array([0.0, 4.0])),
                           (np.array([1.0, 3.0]), np.array([10.0, 30.0]))])
  np.testing.assert_array_equal(band.x, [0.0, 1.0, 2.0, 3.0])
  np.testing.assert_array_equal(band.count, [1, 2, 2, 1])
  # x=1: seed0 -> 2, seed1 -> 10; x=2: seed0 -> 4, seed1 -> 20.
  np.testing.assert_allclose(band.mean, [0.0, 6.0, 12.0, 30.0])
  np.testing.assert_allclose(band.std[1:3], [np.std([2, 10], ddof=1), np.std([4, 20], ddof=1)])
  assert np.isnan(band.std[0]) and np.isnan(band.std[3])


def test_epoch_curve_averages_within_epoch_and_converts_fractions(tmp_path):
  run = runs_lib.load_run(write_run(tmp_path / "r", cifar_config("adam", 0),
                                    cifar_records(0.9, fraction=True)))
  curve = series.epoch_curve(run, "train_accuracy")
  np.testing.assert_allclose(curve.x, [1, 2, 3])
  np.testing.assert_allclose(curve.y, [50, 60, 70])  # fractions * 100
  np.testing.assert_allclose(curve.wall, [30, 60, 90])  # last train record of each epoch
  loss = series.epoch_curve(run, "train_loss")
  np.testing.assert_allclose(loss.y[0], (2.0 / 10 + 2.0 / 21) / 2)


def test_wall_clock_unix_time_and_restart(tmp_path):
  records = [{"step": s, "epoch": 0, "wall_time": w} for s, w in
             ((1, 1.7e9 + 5), (2, 1.7e9 + 7), (3, 1.7e9 + 9))]
  run = runs_lib.load_run(write_run(tmp_path / "unix", cifar_config("adam", 0), records))
  clock = series.wall_clock(run)
  np.testing.assert_allclose(clock.seconds, [0, 2, 4])
  assert clock.unix_time
  records = [{"step": s, "epoch": 0, "wall_time": w} for s, w in ((1, 5.0), (2, 9.0), (3, 1.0),
                                                                  (4, 3.0))]
  run = runs_lib.load_run(write_run(tmp_path / "resumed", cifar_config("adam", 0), records))
  clock = series.wall_clock(run)
  np.testing.assert_allclose(clock.seconds, [5, 9, 9, 11])
  assert clock.restarts == (3,)
  assert "wall_time goes back at line(s) 3" in series.wall_clock_notes([run])[0]


def test_wall_clock_excludes_logged_compile_time(tmp_path):
  # Compiled at start (2.5 s, in the first record) and again after a resume (1 s).
  records = [{"step": 1, "epoch": 1, "wall_time": 3.0, "compile_time": 2.5},
             {"step": 2, "epoch": 1, "wall_time": 4.0},
             {"step": 3, "epoch": 2, "wall_time": 1.5, "compile_time": 1.0},
             {"step": 4, "epoch": 2, "wall_time": 2.5}]
  run = runs_lib.load_run(write_run(tmp_path / "r", cifar_config("adam", 0), records))
  clock = series.wall_clock(run)
  # raw continued over the restart: 3, 4, 4, 5; minus compilation 2.5, 2.5, 3.5, 3.5
  np.testing.assert_allclose(clock.seconds, [0.5, 1.5, 1.5, 1.5])
  assert clock.compile_seconds == 3.5
  assert any("exclude JIT compilation (1 of 1 run(s) logged compile_time, 3.5-3.5 s each)" in n
             for n in series.wall_clock_notes([run]))


# ---------------------------------------------------------------- error messages


@pytest.mark.parametrize("text, line, reason", [
    ('{"step": 1, "epoch": 0, "wall_time": 1.0}\n{"step": 2, "ep', 2, "truncated"),
    ('{"step": 1, "epoch": 0, "wall_time": 1.0}\n{"step": 2,, }\n'
     '{"step": 3, "epoch": 0, "wall_time": 3.0}\n', 2, "invalid JSON"),
    ('{"step": 1, "epoch": 0, "wall_time": 1.0}\n\n{"step": 2, "epoch": 0}\n', 3,
     "missing required key(s) wall_time"),
    ('{"step": 1, "epoch": 0, "wall_time": 1.0, "train_loss": "abc"}\n', 1,
     "'train_loss' is \"abc\", expected a number"),
    ('[1, 2]\n', 1, "expected a JSON object, got list"),
    ('{"step": 1, "epoch": 0, "wall_time": NaN}\n', 1, "'wall_time' is nan, expected a finite"),
])
def test_read_metrics_errors_name_file_and_line(tmp_path, text, line, reason):
  path = tmp_path / "metrics.jsonl"
  path.write_text(text)
  with pytest.raises(runs_lib.MalformedInputError) as info:
    runs_lib.read_metrics(path)
  assert info.value.line == line
  assert str(info.value).startswith(f"{path}:{line}: ")
  assert reason in str(info.value)


def test_read_metrics_keeps_nan_loss_and_null(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "epoch": 0, "wall_time": 1.0, "train_loss": NaN, '
                  '"test_accuracy": null}\n')
  (record,) = runs_lib.read_metrics(path)
  assert math.isnan(record["train_loss"]) and record["test_accuracy"] is None


def test_whole_file_errors(tmp_path):
  empty = tmp_path / "metrics.jsonl"
  empty.write_text("\n\n")
  with pytest.raises(runs_lib.MalformedInputError, match="no metric records"):
    runs_lib.read_metrics(empty)
  config = tmp_path / "config.json"
  config.write_text('{"task": "cifar", "dataset": "cifar10", "seed": 0}')
  with pytest.raises(runs_lib.MalformedInputError,
                     match=r"config.json: missing required key\(s\) optimizer"):
    runs_lib.read_config(config)
  config.write_text('{\n  "task": "cifar",\n  "seed": 0,,\n}')
  with pytest.raises(runs_lib.MalformedInputError) as info:
    runs_lib.read_config(config)
  assert info.value.line == 3 and "invalid JSON" in str(info.value)
  verify = tmp_path / "verify.json"
  verify.write_text(json.dumps([{"problem": "q", "T": 1}]))
  with pytest.raises(runs_lib.MalformedInputError, match="record 0: missing key"):
    runs_lib.read_verify(verify)
  run_dir = write_run(tmp_path / "r", cifar_config("adam", 0), [])
  (run_dir / "metrics.jsonl").unlink()
  with pytest.raises(runs_lib.MalformedInputError, match="r/metrics.jsonl: missing"):
    runs_lib.load_run(run_dir)


def test_duplicate_seed_is_skipped_and_checkpoints_not_searched(tmp_path):
  for name in ("a", "b"):
    write_run(tmp_path / name, cifar_config("adam", 0), cifar_records(90.0, False))
  write_run(tmp_path / "a" / "checkpoints" / "x", cifar_config("adam", 5), [])  # never read
  loaded = runs_lib.load_runs(tmp_path)
  assert [r.path.name for r in loaded.runs] == ["a"]
  assert loaded.problems == []
  assert loaded.duplicates == [f"{tmp_path / 'b'}: same task/dataset/preset/optimizer/seed as "
                               f"{tmp_path / 'a'}; kept {tmp_path / 'a'}, skipped this one"]


# ---------------------------------------------------------------- the command


def assert_png_and_pdf(out, stem):
  png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
  assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_cli_writes_every_product_and_reports_missing_and_bad(tree, tmp_path, capsys):
  out = tmp_path / "out"
  status = cli.main(["--runs", str(tree), "--out", str(out)])
  captured = capsys.readouterr()
  assert status == 1  # the truncated adagrad run was skipped
  bad = tree / "cifar" / "adagrad-0" / "metrics.jsonl"
  assert f"{bad}:3: truncated" in captured.err
  assert "Traceback" not in captured.err
  # what was made, then what was not and why: nothing that reads as a failure
  assert f"made in {out}:\n  Table I: table1.md, table1.tex" in captured.out
  assert ("not made, for want of their inputs:\n  Ablation: no ablation_summary.json (python -m "
          "experiments.ablation)\n  Study: no study_summary.json (python -m experiments.ablation)\n"
          "  MBAG numerical health: 4 MBAG run(s), none logged"
          ) in captured.out and "not produced" not in captured.out
  for stem in ("figure2_cifar10_test", "figure3_test", "theory_bound"):
    assert_png_and_pdf(out, stem)
  assert ["Adam", "89.93 ± 0.361", "90.17 ± 1.041", "3", "0, 1, 2", "3 of 200"] in markdown_rows(
      (out / "table1.md").read_text())
  assert r"\begin{tabular}" in (out / "table1.tex").read_text()
  summary = (out / "figures.md").read_text()
  for expected in ("no runs for shampoo (test)", "no runs for adagrad", "no runs on curves",
                   "faces: no runs for kfac", f"{bad}:3: truncated",
                   "mbag: seed(s) 0, 1 stored accuracy as fractions",
                   "4 of 4 run(s) logged wall_time as Unix time",
                   "mlp [theorem]: bound violated in 2 record(s)",
                   "mlp [theorem]: L is an estimate",
                   "4 MBAG run(s), none logged opt/root_error or opt/min_denominator"):
    assert expected in summary, expected


def test_cli_strict_stops_before_writing(tree, tmp_path, capsys):
  out = tmp_path / "out"
  assert cli.main(["--runs", str(tree), "--out", str(out), "--strict"]) == 1
  assert "adagrad-0/metrics.jsonl:3: truncated" in capsys.readouterr().err
  assert not out.exists()


def test_cli_bad_arguments(tmp_path, capsys):
  assert cli.main(["--runs", str(tmp_path / "nope")]) == 2
  assert "not a directory" in capsys.readouterr().err
  assert cli.main(["--runs", str(tmp_path), "--verify", str(tmp_path / "v.json")]) == 2


def test_cli_empty_tree_reports_every_figure_missing(tmp_path):
  out = tmp_path / "out"
  assert cli.main(["--runs", str(tmp_path), "--out", str(out), "--only", "table1",
                   "--only", "theory"]) == 1  # nothing could be produced
  summary = (out / "figures.md").read_text()
  assert "no CIFAR-10 runs (task 'cifar', python -m experiments.cifar): Table I not written" in summary
  assert "Not made: its inputs are not among these runs" in summary
  assert "no theory verification records" in summary


def test_module_entry_point_subprocess(tmp_path):
  """The real command: exit 1 without a traceback, and none of the training code imported."""
  runs = tmp_path / "runs"
  write_run(runs / "a", cifar_config("adam", 0), cifar_records(90.0, False),
            tail="not json at all\n" + json.dumps({"step": 99, "epoch": 9, "wall_time": 1}) + "\n")
  code = ("import sys, runpy; sys.argv = ['paper_figures', '--runs', sys.argv[1], '--only', "
          "'table1'];\ntry:\n  runpy.run_module('paper_figures', run_name='__main__')\n"
          "except SystemExit as e:\n  bad = sorted(m for m in sys.modules if m.split('.')[0] in "
          "('mbag', 'theory', 'experiments', 'jax', 'optax', 'flax'))\n"
          "  print('IMPORTED', bad)\n  raise")
  result = subprocess.run([sys.executable, "-c", code, str(runs)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1, result.stderr
  assert f"{runs / 'a' / 'metrics.jsonl'}:10: invalid JSON" in result.stderr
  assert "Traceback" not in result.stderr
  assert "IMPORTED []" in result.stdout


# ---------------------------------------------------------------- digits stand-in, style


def digits_tree(root):
  for optimizer in ("adam", "mbag"):
    for seed in (0, 1):
      write_run(root / f"{optimizer}-{seed}",
                {"task": "digits_mlp", "dataset": "digits", "optimizer": optimizer, "seed": seed,
                 "num_epochs": 3, "preset": "smoke", "hardware": "CPU"},
                cifar_records(0.8 + 0.01 * seed, fraction=True))
  return root


def test_digits_runs_are_labelled_never_cifar(tmp_path):
  loaded = runs_lib.load_runs(digits_tree(tmp_path / "runs"))
  out = tmp_path / "out"
  (digits_table,) = classification.build_table1(loaded.runs, out)  # one product: the stand-in
  assert "NOT CIFAR-10" in digits_table.title
  assert "no CIFAR-10 runs" in digits_table.missing[0] and "instead of Table I" in digits_table.missing[0]
  markdown = (out / "table_digits.md").read_text()
  assert "Paper (%)" not in markdown and "not CIFAR-10" in markdown
  assert ["MBAG", "80.50 ± 0.707", "2", "0, 1", "3"] in markdown_rows(markdown)
  (figure2,) = classification.build_figure2(loaded.runs, out)
  assert "NOT CIFAR-10" in figure2.title
  assert [p.name for p in figure2.files] == ["figure2_digits_smoke.png", "figure2_digits_smoke.pdf"]
  assert_png_and_pdf(out, "figure2_digits_smoke")


def _line_colors(fig):
  colors = {}
  for ax in fig.axes:
    for line in ax.get_lines():
      if not line.get_label().startswith("_"):
        colors.setdefault(line.get_label(), set()).add(matplotlib.colors.to_hex(line.get_color()))
  return colors


def test_colour_per_optimizer_is_the_same_in_every_figure(tree):
  loaded = runs_lib.load_runs(tree)
  fig2, _ = classification.plot_figure2([r for r in loaded.runs if r.task == "cifar"], "t")
  fig3, _ = autoencoder.plot_figure3([r for r in loaded.runs if r.task == "autoencoder"], "t")
  colors2, colors3 = _line_colors(fig2), _line_colors(fig3)
  assert colors2["MBAG (τ=32)"] == {style.optimizer_style("mbag").color} == colors3["MBAG"]
  assert colors2["Adam"] == {style.optimizer_style("adam").color} == colors3["Adam"]
  assert fig2.axes[3].get_ylabel() == "test accuracy (%)"
  assert fig2.axes[0].get_ylabel() == "training loss (nats per example)\nsoftmax cross-entropy"
  assert fig2.axes[4].get_xlabel() == "wall-clock time (s)"  # no step_time logged; equal speeds
  assert max(fig2.axes[3].get_lines()[0].get_ydata()) > 1  # fractions drawn in percent


def test_theory_figure_marks_violations(tree):
  records = runs_lib.read_verify(tree / "theory" / "verify.json")
  fig = bound.plot_theory(records)
  crosses = [l for ax in fig.axes for l in ax.get_lines() if l.get_label() == "bound violated"]
  assert len(crosses) == 2  # mlp, theorem and practical, T=100
  np.testing.assert_array_equal(crosses[0].get_xdata(), [100, 100])  # two seeds
  ratio = [l for l in fig.axes[4].get_lines() if l.get_linestyle() == "-"][0]
  np.testing.assert_allclose(ratio.get_ydata(), [math.log(10) / 1.0, math.log(100) / 10.0])


def health_records(seed, steps=(10, 20, 30)):
  return [{"step": s, "epoch": 1, "wall_time": float(s), "train_loss": 1.0,
           "opt/root_error": 0.5 * (seed + 1) / s, "opt/min_denominator": 1.0 + seed + s,
           "opt/root_steps": 5} for s in steps]


def test_health_figure_draws_the_mbag_runs_opt_metrics(tmp_path):
  root = tmp_path / "runs"
  base = {"task": "digits_mlp", "dataset": "digits", "preset": "demo", "hardware": "unit-test CPU"}
  for seed in (0, 1):
    write_run(root / f"mbag-{seed}", dict(base, optimizer="mbag", seed=seed), health_records(seed))
  write_run(root / "mbag_n-0", dict(base, optimizer="mbag_n", seed=0),
            [{k: v for k, v in r.items() if k != "opt/root_error"} for r in health_records(3)])
  write_run(root / "adam-0", dict(base, optimizer="adam", seed=0), health_records(5))  # not MBAG
  write_run(root / "mbag-old", dict(base, optimizer="mbag", seed=7),  # before opt/ was logged
            [{"step": 10, "epoch": 1, "wall_time": 1.0, "train_loss": 1.0}])
  runs = runs_lib.load_runs(root).runs
  products = health.build_health_figure(runs, tmp_path / "out")
  assert [p.title for p in products] == ["MBAG numerical health (preset demo)"]
  assert_png_and_pdf(tmp_path / "out", "mbag_health_demo")
  assert products[0].used == ["digits_mlp / digits (scikit-learn 8x8): mbag seeds 0, 1; mbag_n seeds 0"]
  assert "1 MBAG run(s) of this preset logged no opt/ metrics" in products[0].notes[0]
  with style.context():
    fig = health.plot_health([r for r in runs if r.optimizer in health.OPTIMIZERS and r.seed != 7],
                             "test")
  root_error, denominator = fig.axes[0], fig.axes[1]
  labels = {line.get_label(): line for line in root_error.lines}
  mbag_line = labels[style.optimizer_style("mbag").name]
  # mean over the two seeds at every step: 0.5 (1 + 2) / 2 / s
  np.testing.assert_allclose(mbag_line.get_ydata(), [0.75 / s for s in (10, 20, 30)])
  assert style.optimizer_style("mbag_n").name not in labels  # MBAG-N has no roots
  den = {line.get_label(): line for line in denominator.lines}
  np.testing.assert_allclose(den[style.optimizer_style("mbag_n").name].get_ydata(),
                             [4.0 + s for s in (10, 20, 30)])
  assert any(list(line.get_ydata()) == [1.0, 1.0] for line in denominator.lines)  # reference line
  matplotlib.pyplot.close(fig)
  # without MBAG runs that logged them: said, nothing drawn
  empty = health.build_health_figure([r for r in runs if r.seed == 7], tmp_path / "none")
  assert empty[0].files == [] and "none logged opt/root_error" in empty[0].missing[0]


def test_a_diverged_seed_is_shown_as_diverged_not_as_missing(tmp_path):
  diverged = [{"step": 10, "epoch": 1, "wall_time": 1.0, "train_loss": 2.3},
              {"step": 20, "epoch": 1, "wall_time": 2.0, "train_loss": float("nan")}]
  runs = [runs_lib.load_run(write_run(tmp_path / "s0", cifar_config("mbag", 0), diverged)),
          runs_lib.load_run(write_run(tmp_path / "s1", cifar_config("mbag", 1),
                                      cifar_records(90.0, False))),
          runs_lib.load_run(write_run(tmp_path / "a0", cifar_config("adam", 0), diverged))]
  rows, notes = table.table_rows(runs)
  by_name = {r.optimizer: r for r in rows}
  assert by_name["mbag"].diverged == (0,) and by_name["mbag"].seeds == (1,)
  markdown = table.to_markdown(rows, "t", with_paper=False)
  cells = {row[0]: row[1] for row in markdown_rows(markdown)}
  assert cells["MBAG (τ=32)"] == "90.00 ± n/a (1 of 2 seeds diverged)"
  assert cells["Adam"] == "1 of 1 seeds diverged" and "no runs" not in markdown
  assert_columns_line_up(markdown)
  assert f"{tmp_path / 's0' / runs_lib.METRICS_FILE}: diverged at step 20 (training loss not " \
         "finite) before any test accuracy" in notes
