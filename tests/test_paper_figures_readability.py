"""What makes the figures readable: one look per optimizer, time axes that separate the fast
optimizers, seeds averaged at equal steps, loss units, layouts that fit their legend."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position
from matplotlib import pyplot as plt  # pylint: disable=wrong-import-position

from paper_figures import autoencoder  # pylint: disable=wrong-import-position
from paper_figures import classification  # pylint: disable=wrong-import-position
from paper_figures import health  # pylint: disable=wrong-import-position
from paper_figures import plots  # pylint: disable=wrong-import-position
from paper_figures import runs as runs_lib  # pylint: disable=wrong-import-position
from paper_figures import series  # pylint: disable=wrong-import-position
from paper_figures import style  # pylint: disable=wrong-import-position
from tests.test_paper_figures import write_run  # pylint: disable=wrong-import-position

BASE_OPTIMIZERS = ("adagrad", "adam", "adamw", "kfac", "shampoo", "adablock", "mbag", "mbag_n",
                   "mbag_ema")


# ---------------------------------------------------------------- one look per optimizer


def test_every_optimizer_has_its_own_colour_dash_pattern_and_marker():
  looks = [style.optimizer_style(o) for o in BASE_OPTIMIZERS]
  for field in ("color", "linestyle", "marker"):
    values = [str(getattr(s, field)) for s in looks]
    assert len(set(values)) == len(values), (field, values)
  assert style.optimizer_style("adamw").name == "AdamW"
  # at most one of them dotted (every dash at most 1.5 line widths long): two dotted curves
  # of near colours (AdaGrad's orange, MBAG-EMA's olive) could not be told apart
  dotted = [s.name for s in looks if s.linestyle == ":" or (
      isinstance(s.linestyle, tuple) and max(s.linestyle[1][::2]) <= 1.5)]
  assert len(dotted) == 1, dotted
  # the reference-code baselines: their counterpart's colour, their own (loosely dotted) dashes
  for paper, modern in (("kfac_paper", "kfac"), ("shampoo_paper", "shampoo")):
    assert style.optimizer_style(paper).color == style.optimizer_style(modern).color
    assert style.optimizer_style(paper).linestyle != style.optimizer_style(modern).linestyle
  pairs = {(s.color, str(s.linestyle)) for s in map(style.optimizer_style, style.OPTIMIZER_ORDER)}
  assert len(pairs) == len(style.OPTIMIZER_ORDER)


def test_a_grafted_mbag_is_a_dark_mbag_with_the_donors_dashes():
  mbag, adam = style.optimizer_style("mbag", 32), style.optimizer_style("adam")
  graft = style.optimizer_style("mbag/graft=adam", 32)
  assert graft.name == "MBAG (τ=32, graft=Adam)"
  assert graft.linestyle == adam.linestyle and graft.marker == adam.marker
  r, g, b = matplotlib.colors.to_rgb(mbag.color)
  np.testing.assert_allclose(matplotlib.colors.to_rgb(graft.color),
                             [0.55 * r, 0.55 * g, 0.55 * b], atol=1 / 255)
  assert (graft.color, graft.linestyle) not in {(s.color, s.linestyle) for s in map(
      style.optimizer_style, style.OPTIMIZER_ORDER)}
  assert style.optimizer_style("mbag/graft=adam") == style.optimizer_style("mbag/graft=adam")
  assert style.optimizer_style("mbag/graft=adagrad").linestyle != graft.linestyle
  order = sorted(["mbag_n", "mbag/graft=adam", "adam", "mbag"], key=style.optimizer_sort_key)
  assert order == ["adam", "mbag", "mbag/graft=adam", "mbag_n"]


def test_loss_labels_say_what_the_loss_is():
  assert style.loss_label("autoencoder", "digits") == (
      "training loss (nats per image)\nbinary cross-entropy summed over 64 pixels")
  assert "625 pixels" in style.loss_label("autoencoder", "faces", "test")
  assert style.loss_label("cifar", "cifar10", "test").startswith("test loss (nats per example)")


# ---------------------------------------------------------------- time


def timed_records(step_times, *, every=10, compile_time=2.0, loss0=50.0):
  """Records every ``every`` steps; the first interval also compiled (its first step)."""
  records, wall = [], compile_time
  for k, step_time in enumerate(step_times):
    step = every * (k + 1)
    timed = every - (1 if k == 0 else 0)
    wall += step_time * timed + 0.3  # + evaluation / logging, not training
    record = {"step": step, "epoch": k + 1, "wall_time": wall, "step_time": step_time,
              "train_loss": loss0 / (k + 1)}
    if k == 0:
      record["compile_time"] = compile_time
    records.append(record)
  return records


def load(tmp_path, name, optimizer, seed, records, task="autoencoder", dataset="digits"):
  return runs_lib.load_run(write_run(tmp_path / name, {
      "task": task, "dataset": dataset, "optimizer": optimizer, "seed": seed, "preset": "t",
      "hardware": "unit-test CPU"}, records))


def test_train_clock_sums_step_times_without_compilation_and_evaluation(tmp_path):
  run = load(tmp_path, "r", "adam", 0, timed_records([0.1, 0.2, 0.2]))
  # 9 timed steps (step 1 compiled) at 0.1 s, then 10 at 0.2 s twice; the 0.3 s per record
  # of evaluation and the compilation are not in it.
  np.testing.assert_allclose(series.train_clock(run), [0.9, 2.9, 4.9])
  resumed = timed_records([0.1, 0.2]) + [
      {"step": 30, "epoch": 3, "wall_time": 1.0, "step_time": 0.5, "compile_time": 1.0,
       "train_loss": 1.0}]
  np.testing.assert_allclose(series.train_clock(load(tmp_path, "s", "adam", 0, resumed)),
                             [0.9, 2.9, 2.9 + 9 * 0.5])
  no_step_time = [{k: v for k, v in r.items() if k != "step_time"} for r in timed_records([0.1])]
  assert series.train_clock(load(tmp_path, "u", "adam", 0, no_step_time)) is None


def test_a_slow_first_interval_is_found_and_explained(tmp_path):
  kfac = load(tmp_path, "k", "kfac", 0, timed_records([0.3, 0.002, 0.002, 0.003]))
  assert series.slow_start(kfac) == series.SlowStart(
      first_step=2, last_step=10, seconds=pytest.approx(2.7), ratio=pytest.approx(120.0))
  assert series.slow_start(load(tmp_path, "a", "adam", 0, timed_records([0.003, 0.002, 0.002]))) is None
  (note,) = series.slow_start_notes([kfac], lambda o: o.upper())
  assert note.startswith("KFAC starts late: its steps 2-10 took 2.7 s, 120x its usual step time")
  assert "kfac-jax compiles a second step program" in note


def test_seeds_are_averaged_at_equal_steps_so_a_late_seed_makes_no_saw_tooth():
  # Two seeds with the same losses per step, the second compiled 1 s longer and starts later.
  steps = np.array([10.0, 20.0, 30.0])
  loss = np.array([50.0, 30.0, 20.0])
  early, late = np.array([1.0, 1.1, 1.2]), np.array([2.0, 2.1, 2.2])
  band = series.seed_band_in_time([(steps, early, loss), (steps, late, loss)])
  np.testing.assert_allclose(band.x, [1.5, 1.6, 1.7])  # the mean time at each step
  np.testing.assert_allclose(band.mean, loss)
  # over the union of the times instead, the late seed's 50 enters at t = 2 and the mean jumps
  union = series.seed_band([(early, loss), (late, loss)])
  assert np.any(np.diff(union.mean) > 0)


def test_time_axis_is_logarithmic_when_speeds_differ(tmp_path):
  fast = load(tmp_path, "f", "adam", 0, timed_records([0.001] * 5))
  same = load(tmp_path, "m", "mbag", 0, timed_records([0.002] * 5))
  slow = load(tmp_path, "s", "adablock", 0, timed_records([0.05] * 5))
  axis = plots.time_axis([fast, slow])
  assert axis.attr == "train" and axis.log and axis.unit == "s"
  assert axis.label == "time in training steps (s, log scale)"
  assert not plots.time_axis([fast, same]).log  # 2x apart: linear
  no_step_time = load(tmp_path, "w", "adam", 1, [
      {k: v for k, v in r.items() if k != "step_time"} for r in timed_records([0.001] * 5)])
  assert plots.time_axis([fast, no_step_time]).attr == "wall"


def test_legend_columns_fit_the_width_in_even_rows():
  labels = ["MBAG-EMA (τ=32)"] * 8
  assert plots.legend_columns(labels, 11.0) == 8
  assert plots.legend_columns(labels, 9.0) == 4  # 7 would fit: two rows of 4
  assert plots.legend_columns(labels, 1.0) == 1


# ---------------------------------------------------------------- the figures


def test_figure3_with_one_data_set_is_one_row_as_wide_as_its_legend(tmp_path):
  runs = [load(tmp_path, f"{o}-{seed}", o, seed,
               timed_records([step] * 6, compile_time=1.0 + seed, loss0=60.0 - seed))
          for o, step in (("adam", 0.0003), ("mbag", 0.0008), ("kfac", 0.001))
          for seed in (0, 1)]
  runs[4] = load(tmp_path, "kfac-0b", "kfac", 0, timed_records([0.3, 0.001, 0.001, 0.001, 0.001]))
  with style.context():
    fig, missing = autoencoder.plot_figure3(runs, "t")
  iteration_ax, time_ax = fig.axes[:2]
  assert not missing and len(fig.axes) == 2
  assert iteration_ax.get_position().y0 == pytest.approx(time_ax.get_position().y0)  # one row
  assert time_ax.get_xscale() == "log" and "64 pixels" in time_ax.get_ylabel()
  (legend,) = fig.subfigs[0].legends
  fig.draw_without_rendering()
  assert legend.get_window_extent().width <= fig.bbox.width
  notes = fig.subfigs[1].texts[0].get_text()
  assert "KFAC starts late: its steps 2-10 took 2.7 s" in notes
  assert "Time in training steps" in notes
  plt.close(fig)


def test_figure2_time_row_separates_the_fast_optimizers(tmp_path):
  runs = []
  for optimizer, step in (("adam", 0.0002), ("mbag", 0.0005), ("adablock", 0.02)):
    records = timed_records([step] * 4)
    for record in records:
      record.update(test_loss=1.0 / record["epoch"], test_accuracy=90.0,
                    train_accuracy=95.0)
    runs.append(load(tmp_path, optimizer, optimizer, 0, records, task="digits_mlp"))
  with style.context():
    fig, _ = classification.plot_figure2(runs, "t")
  time_ax = fig.axes[4]
  assert time_ax.get_xscale() == "log"
  ends = {line.get_label(): line.get_xdata()[-1] for line in time_ax.get_lines()}
  # each optimizer ends at its own time in training steps: 39 steps at its step time
  assert ends["Adam"] == pytest.approx(39 * 0.0002)
  assert ends["MBAG"] == pytest.approx(39 * 0.0005)
  assert math.log10(ends["AdaBlock"] / ends["Adam"]) == pytest.approx(2.0)
  plt.close(fig)


def test_health_denominators_a_millionth_above_one_read_as_plain_numbers(tmp_path):
  records = [{"step": s, "epoch": 1, "wall_time": float(s), "train_loss": 1.0,
              "opt/root_error": 1.1, "opt/min_denominator": 1.0 + 1e-6 * (s % 3)}
             for s in range(10, 100, 10)]
  with style.context():
    fig = health.plot_health([load(tmp_path, "m", "mbag", 0, records)], "t")
  denominator = fig.axes[1]
  low, high = denominator.get_ylim()
  assert low <= 0.99 and high >= 1.01  # the reference 1 +- 1 %, not a 1e-6 window
  assert denominator.yaxis.get_major_formatter().get_useOffset() is False  # no "1e-6+1"
  labels = [t.get_text() for t in fig.legends[0].get_texts()]
  assert labels[0] == "MBAG" and labels[-2:] == [m for _, _, m in health.METRICS.values()]
  plt.close(fig)
