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
import queue
import threading
import time
from typing import Any, Callable, Mapping

import numpy as np
from tensorboardX import event_file_writer
from tensorboardX.proto import event_pb2
from tensorboardX.proto import summary_pb2

from experiments import errors

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
  """The records of a ``metrics.jsonl`` file (an unfinished last line, from a kill, is dropped).

  Raises:
    DataError: a line before the last is not JSON (the file was damaged), naming file and line.
  """
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
      raise errors.DataError(f"{path}:{i + 1}: not a JSON object ({e.msg}); the file was "
                             f"damaged (see docs/experiments.md, Reliability)") from None
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


class _Files:
  """The synchronous writes of :class:`MetricWriter` (run in its writer thread).

  ``metrics.jsonl`` is flushed after each record (a killed run keeps whole lines);
  TensorBoard events go through tensorboardX's synchronous ``EventsWriter`` (its
  ``SummaryWriter`` queues to a thread that dies silently on a write error, after which
  ``add_scalar`` blocks forever). Every ``OSError`` is re-raised naming the file.
  """

  def __init__(self, workdir: pathlib.Path, purge_step: int | None):
    self.path = workdir / METRICS_FILE
    tb_dir = workdir / TENSORBOARD_DIR
    tb_dir.mkdir(exist_ok=True)
    self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    self._events = event_file_writer.EventsWriter(str(tb_dir / "events"))
    self.events_path = self._events._file_name  # pylint: disable=protected-access
    if purge_step is not None:  # TensorBoard drops the events from purge_step on
      self._events.write_event(event_pb2.Event(
          step=purge_step, wall_time=time.time(),
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

  def write(self, record: Mapping[str, Any], scalars: Mapping[str, float]) -> None:
    _guard(self.path, lambda: (self._file.write(json.dumps(record) + "\n"), self._file.flush()))
    step, now = record["step"], time.time()
    for tag, value in scalars.items():
      # The proto tensorboardX's summary.scalar builds, without its "NaN or Inf found" warning
      # for every non-finite value: those are data here (a diverged loss, bound/lhs before
      # its first measurement).
      event = event_pb2.Event(step=step, wall_time=now, summary=summary_pb2.Summary(
          value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))]))
      _guard(self.events_path, lambda e=event: self._events.write_event(e))

  def flush(self) -> None:
    _guard(self.path, self._file.flush)
    _guard(self.events_path, self._events.flush)

  def close(self) -> None:
    try:
      self.flush()
    finally:
      self._file.close()
      self._events.close()


def _guard(path, write: Callable[[], Any]) -> None:
  try:
    write()
  except OSError as e:
    raise errors.WriteError(f"{path}: {e.strerror or e}") from None


class MetricWriter:
  """Appends records to ``<workdir>/metrics.jsonl`` and scalars to TensorBoard under ``<workdir>/tensorboard``.

  The files are written by a thread behind a bounded queue, so a write that fails or hangs
  (a full disk, a dead network file system) cannot hang the run: a failed write is raised
  by the next call as :class:`experiments.errors.WriteError` naming the file and the error;
  a call that waits on the writer (a full queue, :meth:`flush`) gives up after
  ``timeout_secs``, or at once when ``should_stop()`` turns true (a stop signal), with a
  :class:`WriterStuck`.

  Args:
    workdir: the run directory.
    resume_step: when resuming from a checkpoint at this step, the records after
      it are removed from ``metrics.jsonl`` and TensorBoard is told to discard
      events from ``resume_step + 1`` on (``purge_step``), so the curves continue
      without a duplicated step.
    enabled: False for the processes of a multi-process run other than process 0: nothing
      is written, :meth:`write` only returns the record (and :attr:`record_steps` stays empty).
    timeout_secs: how long a call waits on the writer thread.
    should_stop: polled while waiting; true stops the wait.
    files: ``(workdir, purge_step) -> files`` with ``write``, ``flush``, ``close``
      (tests inject failing ones).

  Attributes:
    record_steps: the ``step`` of every record in ``metrics.jsonl``, in order (those kept on
      resuming, then those written); a checkpoint saves them so that a resume can check the
      file (``experiments.resume.check_metrics``).
  """

  QUEUE_SIZE = 64
  _POLL_SECS = 0.05

  def __init__(self, workdir: os.PathLike | str, *, resume_step: int | None = None,
               enabled: bool = True, timeout_secs: float = 60.0,
               should_stop: Callable[[], Any] = lambda: False, files=_Files):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / METRICS_FILE
    self.enabled = enabled
    self.record_steps: list[int] = []
    self._timeout = timeout_secs
    self._should_stop = should_stop
    self._error: BaseException | None = None
    self._thread = None
    if not enabled:
      return
    try:
      if resume_step is None:
        self.path.write_text("", encoding="utf-8")
      else:
        truncate_records(self.path, resume_step)
      self.record_steps = [r["step"] for r in read_records(self.path)]
      self._files = files(self.workdir, None if resume_step is None else resume_step + 1)
    except OSError as e:
      raise errors.WriteError(f"{getattr(e, 'filename', None) or self.path}: cannot write the "
                              f"run's metrics ({e.strerror or e})") from None
    self._queue: queue.Queue = queue.Queue(self.QUEUE_SIZE)
    self._thread = threading.Thread(target=self._work, name="metric-writer", daemon=True)
    self._thread.start()

  def _work(self) -> None:
    while True:
      kind, payload = self._queue.get()
      try:
        if kind == "write":
          self._files.write(*payload)
        elif kind == "flush":
          self._files.flush()
        else:
          self._files.close()
      except BaseException as e:  # pylint: disable=broad-except
        self._error = e  # raised by the main thread's next call
        return
      if kind != "write":
        payload.set()
      if kind == "close":
        return

  def _raise_if_failed(self) -> None:
    if self._error is not None:
      error = self._error
      if isinstance(error, errors.WriteError):
        raise errors.WriteError(str(error))
      raise errors.WriteError(f"{self.path}: the metrics writer failed: {errors.short(error)}")

  def _waited(self, started: float, what: str) -> None:
    """Raises :class:`WriterStuck` when the wait for ``what`` must end."""
    if self._should_stop():
      raise WriterStuck(f"{self.path}: the metrics writer was still busy ({what}) when the run "
                        f"was asked to stop")
    if time.monotonic() - started > self._timeout:
      raise WriterStuck(f"{self.path}: the metrics writer did not finish {what} within "
                        f"{self._timeout:g} s (a hung or full file system?)")

  def _put(self, item, what: str) -> None:
    started = time.monotonic()
    while True:
      self._raise_if_failed()
      try:
        self._queue.put(item, timeout=self._POLL_SECS)
        return
      except queue.Full:
        self._waited(started, what)

  def _wait(self, done: threading.Event, what: str) -> None:
    started = time.monotonic()
    while not done.wait(self._POLL_SECS):
      self._raise_if_failed()
      self._waited(started, what)
    self._raise_if_failed()

  def write(self, step: int, epoch: int, wall_time: float, scalars: Mapping[str, Any]) -> dict:
    """Queues one record (written and flushed by the writer thread) and returns it.

    Raises:
      WriteError: an earlier write failed, or the writer is stuck (:class:`WriterStuck`).
    """
    record = {"step": int(step), "epoch": int(epoch), "wall_time": float(wall_time)}
    tb = {}
    for key, value in scalars.items():
      if key in record:
        raise ValueError(f"metric name {key!r} is reserved")
      value = _to_python(value)
      record[key] = value
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        tb[tensorboard_tag(key)] = value
    if not self.enabled:
      return record
    tb["perf/wall_time"] = record["wall_time"]
    self._put(("write", (record, tb)), f"writing the record of step {step}")
    self.record_steps.append(record["step"])
    return record

  @property
  def num_records(self) -> int:
    """How many records ``metrics.jsonl`` has (kept on resuming and written)."""
    return len(self.record_steps)

  def flush(self) -> None:
    """Waits until every queued record is written and flushed (TensorBoard included).

    Raises:
      WriteError: a write failed, or the writer is stuck (:class:`WriterStuck`).
    """
    if self.enabled:
      done = threading.Event()
      self._put(("flush", done), "flushing")
      self._wait(done, "flushing")

  def close(self) -> None:
    """Flushes and closes the files; raises like :meth:`flush` (a stuck thread is left behind)."""
    if self.enabled and self._thread is not None:
      thread, self._thread = self._thread, None
      done = threading.Event()
      if thread.is_alive():
        self._put(("close", done), "closing")
        self._wait(done, "closing")
      self._raise_if_failed()


class WriterStuck(errors.WriteError):
  """The metrics writer thread did not finish in time, or a stop signal came while waiting."""


def is_finite(value: Any) -> bool:
  """True for finite numbers (and for non-numbers, which are not checked)."""
  value = _to_python(value)
  return not isinstance(value, float) or math.isfinite(value)
