"""The main job (``make demo`` = ``python -m examples.demo``) on a reduced budget: runs, table, figures."""

import json

from examples import demo
from tests.test_paper_figures import assert_columns_line_up
from tests.test_paper_figures import markdown_rows


def test_demo_trains_both_tasks_prints_the_table_and_draws_figures(tmp_path, capsys):
  out = tmp_path / "demo"
  status = demo.main(["--optimizers", "adam,mbag", "--seeds", "1", "--epochs", "1", "--out", str(out)])
  assert status == 0
  for run in ("adam/seed_0", "mbag/seed_0", "autoencoder/adam/seed_0", "autoencoder/mbag/seed_0"):
    config = json.loads((out / run / "config.json").read_text())
    assert config["optimizer"] == run.split("/")[-2] and config["seed"] == 0
    assert config["num_epochs"] == 1
    records = [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == 1 and records[-1]["test_loss"] > 0
  printed = capsys.readouterr().out
  rows = {row[0]: row for row in markdown_rows(printed)}
  assert rows["adam"][-1] == "1.00x" and rows["mbag"][-1].endswith("x")
  assert "4 runs in" in printed
  # What the demo does not make is said once, with why; nothing reads "not produced".
  assert printed.count("Not made by the demo") == 1 and "not produced" not in printed
  # The digits stand-ins of Figure 2 and Figure 3 and the summary saying what was missing.
  figures = out / "figures"
  assert (figures / "figures.md").is_file()
  assert any(p.name.startswith("figure2_digits_demo") and p.stat().st_size > 0
             for p in figures.glob("*.png"))
  assert any(p.name.startswith("figure3_demo_autoencoder") and p.stat().st_size > 0
             for p in figures.glob("*.png"))
  # --table-only reads the same numbers back from the run directories
  assert demo.main(["--optimizers", "adam,mbag", "--seeds", "1", "--out", str(out),
                    "--table-only"]) == 0
  again = capsys.readouterr().out
  assert markdown_rows(again) == markdown_rows(printed) and "runs in" not in again


def test_table_columns_are_as_wide_as_their_widest_cell(capsys):
  summary = lambda loss, acc: {"test_accuracy": acc, "test_loss": 0.33, "train_loss": loss,  # noqa: E731
                               "step_time": 1.5e-4}
  results = {"adam": [summary(0.0059, 0.91), summary(0.0081, 0.92)],  # "0.006905 ± 0.0011"-long
             "mbag_n": [summary(0.1, 0.9), summary(0.2, 0.8)]}
  demo.print_table("classification", results)
  printed = capsys.readouterr().out
  assert_columns_line_up(printed)
  rows = {row[0]: row for row in markdown_rows(printed)}
  assert rows["optimizer"] == ["optimizer", "test_accuracy", "test_loss", "train_loss",
                               "step time", "vs adam"]
  assert rows["adam"][3] == "0.007 ± 0.0016" and rows["adam"][4:] == ["0.15 ms", "1.00x"]
  assert rows["mbag_n"][1] == "0.85 ± 0.071"
