"""What a study records about itself: the commands that made its runs, the machine, replaced runs.

- Every command that produced runs is one record of the summary's ``commands`` list (id,
  command line, start and end time, git commit and whether the tree had changes, hardware,
  workers), appended and never overwritten (:func:`merge_commands`).
- A finished run whose stored config differs from the one the study would run now, or an
  unfinished run of another config that is restarted, is *replaced*: before its files go, it
  is logged with its old result and what changed in ``<study>/replaced_runs.jsonl``
  (append-only), which the summary repeats (:func:`log_replaced`).
- Each run's ``result.json`` carries its ``session`` (the command's id, the hardware, the
  number of workers sharing the machine, the load average at its start and end), so that
  timings are compared only within one machine and session.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import uuid
from typing import Any, Mapping, Sequence

REPLACED_FILE = "replaced_runs.jsonl"
# Files of a run directory (experiments.train and the study's runner).
RUN_FILES = ("result.json", "metrics.jsonl", "config.json", "log.txt")
RUN_DIRS = ("checkpoints", "tensorboard")
# Keys config.json has besides the config (experiments.train._write_run_config).
_ADDED_KEYS = frozenset({"hardware", "num_params", "steps_per_epoch", "dataset_source",
                         "num_train", "num_test", "jax_version", "command", "theorem_1"})
_UNUSED_KEYS = frozenset({"learning_rates", "num_seeds"})


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def hardware() -> str:
  """E.g. ``x86_64 CPU, 2 cores, jax 0.10.2, python 3.12.3``."""
  import jax  # pylint: disable=import-outside-toplevel
  return (f"{platform.machine()} CPU, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"python {platform.python_version()}")


def load_average() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def git_state(cwd: os.PathLike | str | None = None) -> dict[str, Any]:
  """``{"commit": HEAD or None, "dirty": whether tracked files differ from it}``."""
  def git(*args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()
  try:
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}


def command_record(module: str, argv: Sequence[str] | None = None, **extra) -> dict[str, Any]:
  """The record of ``python -m module argv[1:]`` (see the module docstring); ``extra`` adds
  fields (workers, benchmarks)."""
  argv = sys.argv if argv is None else argv
  return {"id": uuid.uuid4().hex[:12], "command": " ".join(["python -m", module, *argv[1:]]),
          "started": now(), "finished": None, **git_state(), "hardware": hardware(),
          "load_average_at_start": load_average(), **extra}


def merge_commands(earlier: Mapping[str, Any], command: Mapping[str, Any] | str | None
                   ) -> list[dict[str, Any]]:
  """The earlier summary's commands with ``command`` appended (or updated, same id).

  An earlier summary of the old format (one ``command`` string) gives its command as the first
  record, marked ``"recorded": "as the last command of an older summary"``.
  """
  commands = [dict(c) for c in earlier.get("commands", [])]
  if not commands and earlier.get("command"):
    commands.append({"command": earlier["command"], "started": None,
                     "recorded": "as the last command of an older summary"})
  if command is None:
    return commands
  if isinstance(command, str):
    command = {"command": command, "started": now()}
  command = dict(command)
  for i, c in enumerate(commands):
    if command.get("id") is not None and c.get("id") == command["id"]:
      commands[i] = command
      return commands
  return commands + [command]


# ----------------------------------------------------------------------------- replaced runs


def config_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any],
                       neutral: Mapping[str, Any] | None = None) -> list[str]:
  """The fields (dotted) of ``wanted`` that ``stored`` (a run's config.json) has otherwise.

  A field ``stored`` lacks counts as equal when ``wanted`` has its ``neutral`` value (a field
  the training loop added later, with the value that changes nothing). Not compared: the keys
  the loop adds to config.json (hardware, ...), the fields that do not change a run whose
  ``learning_rate`` is resolved (``learning_rates``, ``num_seeds``), and the hyperparameters of
  optimizers other than ``wanted["optimizer"]``.
  """
  neutral = neutral or {}
  out = []
  optimizer = wanted.get("optimizer")

  def walk(a, b, prefix):
    for key, value in b.items():
      name = f"{prefix}{key}"
      if not prefix and key in _ADDED_KEYS | _UNUSED_KEYS:
        continue
      if prefix == "optimizer_config." and key != optimizer:
        continue  # another optimizer's hyperparameters do not change this run
      if key not in a:
        if not (not prefix and key in neutral and neutral[key] == value):
          out.append(name)
        continue
      if isinstance(value, Mapping) and isinstance(a[key], Mapping):
        walk(a[key], value, name + ".")
      elif _normal(a[key]) != _normal(value):
        out.append(name)

  walk(stored, wanted, "")
  return out


def _normal(value):
  return json.loads(json.dumps(value))


def neutral_fields() -> dict[str, Any]:
  """The training loop's fields that older configs lack, with their neutral values."""
  from experiments import train  # pylint: disable=import-outside-toplevel
  return dict(getattr(train, "_NEUTRAL_FIELDS", {}))


def log_replaced(root: pathlib.Path, record: Mapping[str, Any]) -> None:
  """Appends ``record`` (with the time) to ``<root>/replaced_runs.jsonl``."""
  root.mkdir(parents=True, exist_ok=True)
  with open(root / REPLACED_FILE, "a", encoding="utf-8") as f:
    f.write(json.dumps({"time": now(), **record}, default=float) + "\n")


def read_replaced(root: pathlib.Path) -> list[dict[str, Any]]:
  path = root / REPLACED_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def replace_run(root: pathlib.Path, workdir: pathlib.Path, reason: str,
                old_result: Mapping[str, Any] | None, changed: Sequence[str] = (),
                command_id: str | None = None) -> None:
  """Logs the run in ``workdir`` as replaced (its old result, what changed, why), then clears it."""
  metrics = workdir / "metrics.jsonl"
  records = (sum(1 for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip())
             if metrics.exists() else 0)
  log_replaced(root, {"run": str(workdir.relative_to(root)) if workdir.is_relative_to(root)
                      else str(workdir), "reason": reason, "changed": list(changed),
                      "old_result": dict(old_result) if old_result else None,
                      "old_metric_records": records, "command_id": command_id})
  for name in RUN_FILES:
    (workdir / name).unlink(missing_ok=True)
  for name in RUN_DIRS:
    shutil.rmtree(workdir / name, ignore_errors=True)
