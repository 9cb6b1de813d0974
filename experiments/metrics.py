"""The metric files of a run: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events.

Every record has ``step`` (optimizer steps done), ``epoch`` (the 1-based epoch the
step belongs to) and ``wall_time`` (seconds since the run first started,
continued across resumptions) plus the metrics of that moment, e.g.
``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
``step_time``, ``examples_per_sec``. Non-finite values are written as the JSON
extensions ``NaN`` / ``Infinity`` (a diverged run is data).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Mapping

import numpy as np
import tensorboardX

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
REQUIRED_KEYS = ("step", "epoch", "wall_time")
# metrics.jsonl key prefix -> TensorBoard tag prefix ("train_loss" -> "train/loss").
_TAG_GROUPS = ("train_", "test_")


def tensorboard_tag(key: str) -> str:
  """The TensorBoard tag of a metric: ``train_loss`` -> ``train/loss``, ``step_time`` -> ``perf/step_time``."""
  if "/" in key:
    return key
  for prefix in _TAG_GROUPS:
    if key.startswith(prefix):
      return f"{prefix[:-1]}/{key[len(prefix):]}"
  return f"perf/{key}"


def _to_python(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.item() if np.ndim(value) == 0 else value.tolist()
  if hasattr(value, "item") and not isinstance(value, (int, float, str, bool)):
    value = value.item()
  return value


def read_records(path: os.PathLike | str) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` file (an unfinished last line, from a kill, is dropped)."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  records = []
  lines = path.read_text(encoding="utf-8").splitlines()
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break  # the process died while writing the last line
      raise ValueError(f"{path}:{i + 1}: not a JSON object ({e.msg})") from None
  return records


def truncate_records(path: os.PathLike | str, last_step: int) -> int:
  """Keeps the records with ``step <= last_step`` (a resumed run rewrites what follows).

  Returns:
    The number of records dropped.
  """
  path = pathlib.Path(path)
  records = read_records(path)
  kept = [r for r in records if r["step"] <= last_step]
  if path.exists():  # rewritten whole: also drops a half-written last line
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)
  return len(records) - len(kept)


class MetricWriter:
  """Appends records to ``<workdir>/metrics.jsonl`` and scalars to TensorBoard under ``<workdir>/tensorboard``.

  Args:
    workdir: the run directory.
    resume_step: when resuming from a checkpoint at this step, the records after
      it are removed from ``metrics.jsonl`` and TensorBoard is told to discard
      events from ``resume_step + 1`` on (``purge_step``), so the curves continue
      without a duplicated step.
    enabled: False for the processes of a multi-process run other than process 0: nothing
      is written, :meth:`write` only returns the record.
  """

  def __init__(self, workdir: os.PathLike | str, *, resume_step: int | None = None,
               enabled: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / METRICS_FILE
    self.enabled = enabled
    self._file = self._tb = None
    if not enabled:
      return
    if resume_step is None:
      self.path.write_text("", encoding="utf-8")
    else:
      truncate_records(self.path, resume_step)
    self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    purge = None if resume_step is None else resume_step + 1
    self._tb = tensorboardX.SummaryWriter(str(self.workdir / TENSORBOARD_DIR), purge_step=purge)

  def write(self, step: int, epoch: int, wall_time: float, scalars: Mapping[str, Any]) -> dict:
    """Writes one record (flushed at once, so a killed run keeps whole lines) and returns it."""
    record = {"step": int(step), "epoch": int(epoch), "wall_time": float(wall_time)}
    for key, value in scalars.items():
      if key in record:
        raise ValueError(f"metric name {key!r} is reserved")
      value = _to_python(value)
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        record[key] = value
        if self.enabled:
          self._tb.add_scalar(tensorboard_tag(key), value, global_step=int(step))
      else:
        record[key] = value
    if not self.enabled:
      return record
    self._tb.add_scalar("perf/wall_time", record["wall_time"], global_step=int(step))
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    return record

  def flush(self) -> None:
    if self.enabled:
      self._file.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tb.close()


def is_finite(value: Any) -> bool:
  """True for finite numbers (and for non-numbers, which are not checked)."""
  value = _to_python(value)
  return not isinstance(value, float) or math.isfinite(value)
