"""Reading run directories (``config.json`` + ``metrics.jsonl``) and ``verify.json`` files.

A run directory holds the resolved config of one training run and its metrics as
JSON lines (the contract written by ``experiments``). This module only reads
files; it imports no training code. Every malformed input raises
:class:`MalformedInputError`, whose message names the file and, where there is
one, the line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import pathlib
from typing import Any, Iterator, Sequence

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
VERIFY_FILE = "verify.json"
# A directory holding this (``python -m experiments.ablation``'s summary) or its timings is an
# ablation study: its hundreds of runs are read through the summary, not as figure runs.
ABLATION_SUMMARY_FILE = "ablation_summary.json"
STUDY_SUMMARY_FILE = "study_summary.json"  # the same command's main protocol (paper_figures/study.py)
ABLATION_MARKERS = frozenset({ABLATION_SUMMARY_FILE, STUDY_SUMMARY_FILE, "timings.json",
                              "replaced_runs.jsonl"})

REQUIRED_CONFIG_KEYS = ("task", "dataset", "optimizer", "seed")
REQUIRED_METRIC_KEYS = ("step", "epoch", "wall_time")
# Metrics the figures read: each must be a number (NaN/Infinity allowed) or null when present.
NUMERIC_METRIC_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                       "step_time", "examples_per_sec")
VERIFY_KEYS = ("problem", "T", "seed", "lhs", "rhs", "holds", "L_exact",
               "logdet_ratio", "sum_gamma", "trace_H0_sqrt", "G", "L", "C",
               "eta", "lambda")
_VERIFY_NUMBERS = ("T", "seed", "lhs", "rhs", "logdet_ratio", "sum_gamma",
                   "trace_H0_sqrt", "G", "L", "C", "eta", "lambda")
_VERIFY_BOOLS = ("holds", "L_exact")
# Directories that never hold runs of their own (orbax writes checkpoints/ inside a run).
_PRUNED_DIRS = frozenset({"checkpoints", ".git", "__pycache__"})


class MalformedInputError(ValueError):
  """An input file that cannot be read as the run contract says.

  Attributes:
    path: the offending file.
    line: 1-based line number of the problem, or None when it concerns the whole file.
    reason: what is wrong, in words.
  """

  def __init__(self, path: os.PathLike | str, reason: str, line: int | None = None):
    self.path = pathlib.Path(path)
    self.line = line
    self.reason = reason
    where = f"{self.path}:{line}" if line is not None else f"{self.path}"
    super().__init__(f"{where}: {reason}")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: its directory, resolved config and metric records.

  Attributes:
    path: the run directory.
    config: the parsed ``config.json``.
    records: the parsed lines of ``metrics.jsonl`` in file order (blank lines dropped).
  """

  path: pathlib.Path
  config: dict[str, Any]
  records: tuple[dict[str, Any], ...]

  @property
  def task(self) -> str:
    return str(self.config["task"])

  @property
  def dataset(self) -> str:
    return str(self.config["dataset"])

  @property
  def optimizer(self) -> str:
    return str(self.config["optimizer"])

  @property
  def seed(self) -> int:
    return int(self.config["seed"])

  @property
  def preset(self) -> str:
    """The config preset name (``paper``, ``short``, ``smoke``), "unknown" when not recorded."""
    return str(self.config.get("preset") or "unknown")

  @property
  def hardware(self) -> str:
    """The recorded hardware description as one line, "unknown" when not recorded."""
    return describe_hardware(self.config.get("hardware"))

  @property
  def num_epochs(self) -> int | None:
    """The number of epochs the config asked for, None when not recorded."""
    value = self.config.get("num_epochs")
    return int(value) if _is_number(value) else None

  def block_size(self) -> int | None:
    """``optimizer_config.<optimizer>.block_size`` (tau) when the config has one."""
    section = (self.config.get("optimizer_config") or {}).get(self.optimizer)
    if isinstance(section, dict) and _is_number(section.get("block_size")):
      return int(section["block_size"])
    return None


def describe_hardware(value: Any) -> str:
  """Renders a ``hardware`` config entry (string, list or dict) as one short line."""
  if value is None or value == "":
    return "unknown"
  if isinstance(value, dict):
    for key in ("description", "device", "name"):
      if value.get(key):
        return str(value[key])
    return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
  if isinstance(value, (list, tuple)):
    return ", ".join(str(v) for v in value)
  return str(value)


def group_by_preset(runs: Sequence[Run]) -> list[tuple[str, list[Run], str]]:
  """``(preset, its runs, their hardware joined by "; ")`` per preset, sorted by preset."""
  presets: dict[str, list[Run]] = {}
  for run in runs:
    presets.setdefault(run.preset, []).append(run)
  return [(preset, group, "; ".join(sorted({r.hardware for r in group})))
          for preset, group in sorted(presets.items())]


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def read_json_file(path: pathlib.Path) -> Any:
  """Parses a whole JSON file, turning decode errors into :class:`MalformedInputError`."""
  try:
    text = path.read_text(encoding="utf-8")
  except OSError as e:
    raise MalformedInputError(path, f"cannot read file ({e.strerror or e})") from None
  except UnicodeDecodeError as e:
    raise MalformedInputError(path, f"not UTF-8 text ({e.reason})") from None
  if not text.strip():
    raise MalformedInputError(path, "file is empty")
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    reason = f"invalid JSON ({e.msg}, column {e.colno})"
    if e.pos >= len(text.rstrip()):
      reason = f"truncated JSON ({e.msg}): the file ends before the value closes"
    raise MalformedInputError(path, reason, line=e.lineno) from None


def read_config(path: pathlib.Path) -> dict[str, Any]:
  """Reads a run's ``config.json`` and checks the keys every run must have.

  Args:
    path: path of the ``config.json``.

  Returns:
    The parsed config dict.

  Raises:
    MalformedInputError: unreadable, not a JSON object, or missing one of
      ``task``, ``dataset``, ``optimizer``, ``seed`` (or a non-integer seed).
  """
  config = read_json_file(path)
  if not isinstance(config, dict):
    raise MalformedInputError(path, f"expected a JSON object, got {type(config).__name__}")
  missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
  if missing:
    raise MalformedInputError(path, f"missing required key(s) {', '.join(missing)}")
  seed = config["seed"]
  if not _is_number(seed) or int(seed) != seed:
    raise MalformedInputError(path, f"'seed' is {seed!r}, expected an integer")
  return config


def _check_record(path: pathlib.Path, lineno: int, record: Any) -> dict[str, Any]:
  if not isinstance(record, dict):
    raise MalformedInputError(
        path, f"expected a JSON object, got {type(record).__name__}", line=lineno)
  missing = [k for k in REQUIRED_METRIC_KEYS if k not in record]
  if missing:
    raise MalformedInputError(path, f"missing required key(s) {', '.join(missing)}",
                              line=lineno)
  for key in REQUIRED_METRIC_KEYS + NUMERIC_METRIC_KEYS:
    value = record.get(key)
    if value is None and key not in REQUIRED_METRIC_KEYS:
      continue  # absent or null: not measured at this step
    if not _is_number(value):
      raise MalformedInputError(
          path, f"'{key}' is {json.dumps(value)}, expected a number", line=lineno)
  for key in REQUIRED_METRIC_KEYS:
    if not math.isfinite(record[key]):
      raise MalformedInputError(path, f"'{key}' is {record[key]}, expected a finite number",
                                line=lineno)
  return record


def read_metrics(path: pathlib.Path) -> list[dict[str, Any]]:
  """Reads ``metrics.jsonl``: one JSON object per line with ``step``, ``epoch``, ``wall_time``.

  Blank lines are skipped; ``null`` metric values mean "not measured"; ``NaN`` and
  ``Infinity`` are kept (a diverged run is data). Keys other than the required ones
  and ``NUMERIC_METRIC_KEYS`` are carried along unchecked (other tools' extras).

  Args:
    path: path of the ``metrics.jsonl``.

  Returns:
    The records in file order.

  Raises:
    MalformedInputError: naming the line that is not valid JSON (``truncated``
      when the last line stops mid-object), not an object, lacks a required key,
      or holds a non-numeric metric; or the file has no records at all.
  """
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise MalformedInputError(path, f"cannot read file ({e.strerror or e})") from None
  lines = raw.split(b"\n")
  last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
  records = []
  for index, line in enumerate(lines):
    lineno = index + 1
    if not line.strip():
      continue
    try:
      record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as e:
      raise MalformedInputError(path, f"not UTF-8 text ({e.reason})", line=lineno) from None
    except json.JSONDecodeError as e:
      if index == last and not raw.endswith(b"\n"):
        reason = (f"truncated: the last line ends before its JSON object closes ({e.msg}); "
                  "was the run interrupted while writing?")
      else:
        reason = f"invalid JSON ({e.msg}, column {e.colno})"
      raise MalformedInputError(path, reason, line=lineno) from None
    records.append(_check_record(path, lineno, record))
  if not records:
    raise MalformedInputError(path, "no metric records (the run logged nothing)")
  return records


def load_run(run_dir: os.PathLike | str) -> Run:
  """Reads one run directory.

  Args:
    run_dir: a directory holding ``config.json`` and ``metrics.jsonl``.

  Returns:
    The :class:`Run`.

  Raises:
    MalformedInputError: a file is missing or malformed.
  """
  run_dir = pathlib.Path(run_dir)
  for name in (CONFIG_FILE, METRICS_FILE):
    if not (run_dir / name).is_file():
      raise MalformedInputError(run_dir / name, "missing: a run directory needs "
                                f"both {CONFIG_FILE} and {METRICS_FILE}")
  config = read_config(run_dir / CONFIG_FILE)
  records = read_metrics(run_dir / METRICS_FILE)
  return Run(path=run_dir, config=config, records=tuple(records))


def _walk(root: pathlib.Path) -> Iterator[tuple[pathlib.Path, list[str], list[str]]]:
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _PRUNED_DIRS)
    yield pathlib.Path(dirpath), dirnames, filenames


def find_run_dirs(root: os.PathLike | str) -> list[pathlib.Path]:
  """Directories under ``root`` (itself included) holding ``config.json`` or ``metrics.jsonl``.

  The search does not descend into a run directory once found, nor into ``checkpoints/``,
  nor into an ablation study's directory (see :data:`ABLATION_MARKERS`).
  """
  found = []
  for dirpath, dirnames, filenames in _walk(pathlib.Path(root)):
    if ABLATION_MARKERS & set(filenames):
      dirnames[:] = []
      continue
    if CONFIG_FILE in filenames or METRICS_FILE in filenames:
      found.append(dirpath)
      dirnames[:] = []
  return sorted(found)


def find_ablation_summaries(root: os.PathLike | str) -> list[pathlib.Path]:
  """Every ``ablation_summary.json`` under ``root``."""
  return sorted(d / ABLATION_SUMMARY_FILE for d, _, files in _walk(pathlib.Path(root))
                if ABLATION_SUMMARY_FILE in files)


def find_study_summaries(root: os.PathLike | str) -> list[pathlib.Path]:
  """Every ``study_summary.json`` under ``root``."""
  return sorted(d / STUDY_SUMMARY_FILE for d, _, files in _walk(pathlib.Path(root))
                if STUDY_SUMMARY_FILE in files)


def find_verify_files(root: os.PathLike | str) -> list[pathlib.Path]:
  """Every ``verify.json`` under ``root``."""
  return sorted(d / VERIFY_FILE for d, _, files in _walk(pathlib.Path(root))
                if VERIFY_FILE in files)


@dataclasses.dataclass
class LoadResult:
  """Runs read from a tree, plus the inputs that were skipped and why.

  Attributes:
    runs: the runs that were read, in path order.
    problems: one :class:`MalformedInputError` per skipped run directory.
    duplicates: messages about runs skipped because another run had the same
      task, dataset, preset, optimizer and seed.
  """

  runs: list[Run]
  problems: list[MalformedInputError]
  duplicates: list[str]


def load_runs(root: os.PathLike | str, *, strict: bool = False) -> LoadResult:
  """Reads every run directory under ``root``.

  A malformed run is skipped and recorded in ``problems`` (or, with ``strict``,
  raised). When two runs share task, dataset, preset, optimizer and seed, the
  first in path order is kept and the other recorded in ``duplicates``.

  Args:
    root: the directory to search.
    strict: raise the first :class:`MalformedInputError` instead of skipping.

  Returns:
    A :class:`LoadResult`.
  """
  runs, problems, duplicates = [], [], []
  seen: dict[tuple, pathlib.Path] = {}
  for run_dir in find_run_dirs(root):
    try:
      run = load_run(run_dir)
    except MalformedInputError as e:
      if strict:
        raise
      problems.append(e)
      continue
    key = (run.task, run.dataset, run.preset, run.optimizer, run.seed)
    if key in seen:
      duplicates.append(f"{run.path}: same task/dataset/preset/optimizer/seed as "
                        f"{seen[key]}; kept {seen[key]}, skipped this one")
      continue
    seen[key] = run.path
    runs.append(run)
  return LoadResult(runs=runs, problems=problems, duplicates=duplicates)


def read_verify(path: os.PathLike | str) -> list[dict[str, Any]]:
  """Reads a theory ``verify.json``: a list of records, one per (problem, T, seed[, setting]).

  Args:
    path: the file.

  Returns:
    The records; each has at least the keys in ``VERIFY_KEYS`` (``setting``
    defaults to "theorem" when absent).

  Raises:
    MalformedInputError: not a JSON list, or a record lacks a key or has a value
      of the wrong type (the message gives the record's index).
  """
  path = pathlib.Path(path)
  data = read_json_file(path)
  if not isinstance(data, list):
    raise MalformedInputError(path, f"expected a JSON list of records, got {type(data).__name__}")
  if not data:
    raise MalformedInputError(path, "no records")
  records = []
  for i, record in enumerate(data):
    if not isinstance(record, dict):
      raise MalformedInputError(path, f"record {i}: expected an object, got {type(record).__name__}")
    missing = [k for k in VERIFY_KEYS if k not in record]
    if missing:
      raise MalformedInputError(path, f"record {i}: missing key(s) {', '.join(missing)}")
    for key in _VERIFY_NUMBERS:
      if not _is_number(record[key]):
        raise MalformedInputError(
            path, f"record {i}: '{key}' is {json.dumps(record[key])}, expected a number")
    for key in _VERIFY_BOOLS:
      if not isinstance(record[key], bool):
        raise MalformedInputError(
            path, f"record {i}: '{key}' is {json.dumps(record[key])}, expected true or false")
    records.append({"setting": "theorem", **record})
  return records


def read_verify_files(paths: Sequence[pathlib.Path], *, strict: bool = False
                      ) -> tuple[list[dict[str, Any]], list[MalformedInputError]]:
  """Reads several ``verify.json`` files; returns (records, problems), skipping bad files."""
  records, problems = [], []
  for path in paths:
    try:
      records.extend({**r, "source": str(path)} for r in read_verify(path))
    except MalformedInputError as e:
      if strict:
        raise
      problems.append(e)
  return records, problems
