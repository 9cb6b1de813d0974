"""The learning-rate sweep: scores per (optimizer, learning rate), divergence, the best, strict JSON."""

import json
import math

from experiments import sweep
from experiments.configs import digits


def _strict(text):
  def refuse(constant):
    raise ValueError(f"non-standard JSON constant {constant}")
  return json.loads(text, parse_constant=refuse)


def test_sweep_scores_runs_marks_divergence_and_picks_the_best(tmp_path):
  config = digits.get_config("smoke")
  config.num_epochs = 1
  results = sweep.sweep(config, tmp_path, ["adam"], [1e-2, 1e-3, 1e30], "test_loss")
  scores = results["adam"]
  assert set(scores) == {"0.01", "0.001", "1e+30"}
  assert math.isinf(scores["1e+30"])  # parameters ~1e30: the loss stops being finite
  assert all(math.isfinite(scores[lr]) and scores[lr] > 0 for lr in ("0.01", "0.001"))
  # The score is the final record's test loss of the run written under <workdir>/<opt>/lr_<lr>.
  for lr in ("0.01", "0.001"):
    records = (tmp_path / "adam" / f"lr_{lr}" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["test_loss"] == scores[lr]
  expected = min(("0.01", "0.001"), key=scores.get)
  assert sweep.best(results) == {"adam": expected}

  report = sweep.write_report(tmp_path / "sweep.json", "test_loss", results, "cmd")
  on_disk = _strict((tmp_path / "sweep.json").read_text())
  assert on_disk == report
  assert on_disk["results"]["adam"]["1e+30"] is None
  assert on_disk["best"] == {"adam": expected} and on_disk["metric"] == "test_loss"


def test_the_printed_table_sizes_columns_to_their_content():
  results = {"adam": {"0.001": 0.30312, "0.01": math.inf},
             "mbag/graft=adam": {"0.001": 0.29, "0.01": 0.2612345}}
  lines = sweep.format_table(results, [1e-3, 1e-2], sweep.best(results)).splitlines()
  pipes = {tuple(i for i, c in enumerate(line) if c == "|") for line in lines}
  assert len(pipes) == 1  # the pipes of every row at the same places: the columns line up
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
  assert cells[0] == ["optimizer", "0.001", "0.01", "best"]
  assert cells[2] == ["adam", "0.3031", "inf", "0.001"]
  assert cells[3] == ["mbag/graft=adam", "0.29", "0.2612", "0.01"]
