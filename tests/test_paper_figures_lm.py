"""paper_figures for the character language model: loss curves (mean over seeds) and final table.

One test draws hand-written records (the numbers checked by hand); one trains the Shakespeare
``smoke`` preset for real (on a generated sdist) and reads its runs back through the command.
"""

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from paper_figures import cli  # pylint: disable=wrong-import-position
from paper_figures import language_model  # pylint: disable=wrong-import-position
from paper_figures import runs as runs_lib  # pylint: disable=wrong-import-position
from paper_figures import style  # pylint: disable=wrong-import-position
from tests.test_paper_figures import assert_png_and_pdf  # pylint: disable=wrong-import-position
from tests.test_paper_figures import write_run  # pylint: disable=wrong-import-position

# optimizer -> seed -> the evaluation loss at steps 10, 20 (nats/token)
LOSSES = {"adamw": {0: (3.0, 2.0), 1: (3.2, 2.4)}, "mbag": {0: (3.1, 2.2), 1: (2.9, 2.1)}}


def lm_records(losses, seconds_per_step):
  records = []
  for step, loss in zip((10, 20), losses):
    records.append({"step": step, "epoch": 1, "wall_time": seconds_per_step * step,
                    "train_loss": loss + 0.1})
    records.append({"step": step, "epoch": 1, "wall_time": seconds_per_step * step + 0.5,
                    "test_loss": loss, "test_bits_per_char": loss / math.log(2)})
  return records


def test_validation_curves_and_table_are_the_mean_over_seeds(tmp_path):
  root = tmp_path / "runs"
  for optimizer, seeds in LOSSES.items():
    for seed, losses in seeds.items():
      write_run(root / f"{optimizer}-{seed}",
                {"task": "char_lm", "dataset": "shakespeare-val", "optimizer": optimizer,
                 "seed": seed, "preset": "reference", "hardware": "unit-test CPU"},
                lm_records(losses, 0.1 if optimizer == "adamw" else 0.3))
  runs = runs_lib.load_runs(root).runs
  products = language_model.build_language_model(runs, tmp_path / "out")
  assert [p.title for p in products] == ["Language model (shakespeare-val, preset reference)"]
  assert_png_and_pdf(tmp_path / "out", "lm_shakespeare-val_reference")
  markdown = (tmp_path / "out" / "lm_shakespeare-val_reference.md").read_text()
  # adamw: final 2.0 and 2.4 -> 2.20 ± 0.283; in bits / ln 2: 3.17 ± 0.408
  assert "| AdamW | 2.20 ± 0.283 | 3.17 ± 0.408 | 0, 1 | 20 |" in markdown
  assert "| MBAG | 2.15 ± 0.071 | 3.10 ± 0.102 | 0, 1 | 20 |" in markdown
  assert "final validation loss (nats/token)" in markdown
  with style.context():
    fig, missing = language_model.plot_loss(runs, "t")
  assert not missing
  steps, wall = fig.axes
  assert steps.get_ylabel() == "validation loss (nats/token)"
  lines = {line.get_label(): line for line in steps.get_lines()}
  np.testing.assert_allclose(lines["AdamW"].get_xdata(), [10, 20])
  np.testing.assert_allclose(lines["AdamW"].get_ydata(), [3.1, 2.2])  # mean over the seeds
  np.testing.assert_allclose(lines["MBAG"].get_ydata(), [3.0, 2.15])
  timed = {line.get_label(): line for line in wall.get_lines()}
  np.testing.assert_allclose(timed["AdamW"].get_xdata(), [1.5, 2.5])  # seconds of the evals
  assert "wall-clock" in wall.get_xlabel()
  matplotlib.pyplot.close(fig)


def test_smoke_runs_of_the_shakespeare_preset_give_the_figure_and_table(tmp_path, monkeypatch):
  from experiments import train  # pylint: disable=import-outside-toplevel
  from experiments.configs import shakespeare as config_lib  # pylint: disable=import-outside-toplevel
  from experiments.data import shakespeare  # pylint: disable=import-outside-toplevel
  from experiments.data import testing  # pylint: disable=import-outside-toplevel
  fake = testing.write_shakespeare(str(tmp_path / "data"), chars_per_play=3200)
  monkeypatch.setattr(shakespeare, "SHA256", fake.sha256)
  finals = {}
  for optimizer in ("adamw", "mbag"):
    config = config_lib.get_config("smoke")
    config.optimizer = optimizer
    config.num_epochs = 1
    workdir = tmp_path / "runs" / optimizer
    train.run(config, workdir, tmp_path / "data")
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    finals[optimizer] = [r for r in records if "test_loss" in r][-1]
  out = tmp_path / "figures"
  assert cli.main(["--runs", str(tmp_path / "runs"), "--out", str(out),
                   "--only", "language_model"]) == 0
  assert_png_and_pdf(out, "lm_shakespeare_smoke")
  markdown = (out / "lm_shakespeare_smoke.md").read_text()
  for optimizer, final in finals.items():
    name = style.optimizer_style(optimizer).name
    assert (f"| {name} | {final['test_loss']:.2f} ± n/a | {final['test_bits_per_char']:.2f} ± "
            f"n/a | 0 | {final['step']} |") in markdown
    assert final["test_bits_per_char"] == pytest.approx(final["test_loss"] / math.log(2))
  assert "final test loss (nats/token)" in markdown
  assert "Language model (shakespeare, preset smoke)" in (out / "figures.md").read_text()
