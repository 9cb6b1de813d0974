"""The main job (``make demo`` = ``python -m examples.demo``) on a reduced budget: runs, table, figures."""

import json

from examples import demo


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
  assert "| adam      |" in printed and "| mbag      |" in printed and "1.00x" in printed
  assert "4 runs in" in printed
  # The digits stand-ins of Figure 2 and Figure 3 and the summary saying what was missing.
  figures = out / "figures"
  assert (figures / "figures.md").is_file()
  assert any(p.name.startswith("figure2_digits_demo") and p.stat().st_size > 0
             for p in figures.glob("*.png"))
  assert any(p.name.startswith("figure3_demo_autoencoder") and p.stat().st_size > 0
             for p in figures.glob("*.png"))
