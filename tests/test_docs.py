"""The documentation cannot go stale: README.md and every page under docs/ (found by pattern).

- every ```python block runs (the blocks of a page in order, in one namespace, in a scratch
  directory with the repository on the path); blocks assert what they show;
- every command of every ```bash block has a smoke form (``tests/docs_commands.py``), which CI
  runs (``python -m tests.docs_commands``);
- every relative link points to a file that exists.
"""

import pathlib
import re

import pytest

from tests import docs_commands

ROOT = docs_commands.ROOT
PAGES = docs_commands.pages()
PYTHON_PAGES = [p for p in PAGES if docs_commands.code_blocks(p.read_text(encoding="utf-8"), "python")]


def _id(page: pathlib.Path) -> str:
  return str(page.relative_to(ROOT))


def test_the_pages_are_found_by_pattern():
  names = [_id(p) for p in PAGES]
  assert names[0] == "README.md"
  for page in ("docs/optimizer.md", "docs/grouping.md", "docs/numerics.md", "docs/theory.md",
               "docs/experiments.md", "docs/performance.md", "docs/multi-device.md"):
    assert page in names
  assert "README.md" in map(_id, PYTHON_PAGES)  # the README's example is executed


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_id)
def test_python_examples_run(page, monkeypatch, capsys, tmp_path):
  monkeypatch.chdir(tmp_path)  # what an example writes (runs/...) stays out of the repository
  namespace = {"__name__": f"docs_{page.stem}"}
  for line, code in docs_commands.code_blocks(page.read_text(encoding="utf-8"), "python"):
    try:
      exec(compile(code, f"{_id(page)}:{line}", "exec"), namespace)  # pylint: disable=exec-used
    except Exception as e:
      raise AssertionError(f"the ```python block at {_id(page)}:{line} failed: "
                           f"{type(e).__name__}: {e}") from e
  if page.name == "README.md":  # its example trains: the printed loss went down from log(10)
    loss = float(re.search(r"loss (\d+\.\d+)", capsys.readouterr().out).group(1))
    assert loss < 1.5


def test_every_command_has_a_smoke_form():
  seen, problems = set(), []
  for page in PAGES:
    for line, code in docs_commands.code_blocks(page.read_text(encoding="utf-8"), "bash"):
      for words in docs_commands.commands(code):
        seen.add(words[0] if words[0] not in ("python", "python3") else words[2])
        why = docs_commands.unknown_commands(words)
        if why:
          problems.append(f"{_id(page)}:{line}: {' '.join(words)}: {why}")
  assert not problems, "\n".join(problems)
  # the commands of the pages today: the entry points, the demo, the figures, theory, benchmarks
  assert {"make", "pip", "experiments.cifar", "experiments.autoencoder", "examples.demo",
          "paper_figures", "theory.verify", "benchmarks.update_speed"} <= seen


def test_smoke_rewrites():
  argv = ["-m", "experiments.cifar", "--config=experiments/configs/cifar.py:paper",
          "--config.optimizer=mbag", "--data_dir=~/data", "--workdir=runs/x"]
  assert docs_commands.smoke_argv(argv, "/fake") == [
      "-m", "experiments.cifar", "--config=experiments/configs/cifar.py:smoke",
      "--config.optimizer=mbag", "--data_dir=/fake", "--workdir=runs/x"]
  assert docs_commands.smoke_argv(["-m", "examples.demo"], "/fake") == [
      "-m", "examples.demo", "--seeds", "1", "--epochs", "1", "--optimizers", "adam,mbag"]
  loop = "for opt in adam mbag kfac; do for seed in 0 1 2; do\n  echo $opt $seed\ndone; done\n"
  assert docs_commands.reduce_loops(loop) == (
      "for opt in adam; do for seed in 0; do\n  echo $opt $seed\ndone; done\n")
  background = "for i in 0 1; do\n  python -m x --process_id=$i &\ndone; wait\n"
  assert docs_commands.reduce_loops(background) == background  # processes that need each other
  assert docs_commands.commands("python -m a \\\n    --b=1  # note\nfor i in 0 1; do x & done; wait\n") == [
      ["python", "-m", "a", "--b=1"], ["for", "i", "in", "0", "1"], ["x"], ["done"], ["wait"]]
  assert "unknown program" in docs_commands.unknown_commands(["curl", "x"])
  assert "no smoke arguments" in docs_commands.unknown_commands(["python", "-m", "nope"])


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_relative_links_exist(page):
  text = page.read_text(encoding="utf-8")
  broken = [target for target in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"[a-z]+://|#|mailto:", target)
            and not (page.parent / target.split("#")[0]).exists()]
  assert not broken, f"{_id(page)}: broken links {broken}"
