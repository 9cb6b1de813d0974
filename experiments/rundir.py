"""The run directory: checked before anything is written, and locked for the run's life.

:func:`prepare` creates ``--workdir`` (or says in one line why it cannot); :class:`RunLock`
holds an exclusive ``flock`` on ``<workdir>/run.lock`` while the run lives, so a second
process on the same directory stops at once (:class:`Locked`, exit status 1) naming the
holder (pid, host, start time and command, which the lock file records).

The kernel drops a ``flock`` when its process dies, however it dies (``kill -9`` included),
so a lock can never outlive its process on one host. The file's text can: a lock file that
still names a holder when the lock is taken belonged to a process that died without
releasing it; the new run says so and takes the directory over. Where the lock is held but
its recorded holder (on this host) is gone, a child process it started still holds the lock:
the message says how to find it (``fuser``) and how to clear the lock by hand.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket
import sys

from absl import logging

from experiments import errors

LOCK_FILE = "run.lock"


class Locked(errors.RunError):
  """Another process holds the run directory."""


def prepare(workdir: os.PathLike | str) -> pathlib.Path:
  """Creates ``workdir`` and checks that the run can write there.

  Raises:
    ConfigError: ``workdir`` is empty or blank (``pathlib`` would read it as the current
      directory), or it (or a parent) is a file.
    RunError: it cannot be created or written (permissions, a read-only file system).
  """
  if isinstance(workdir, str) and not workdir.strip():
    raise errors.ConfigError(f"--workdir={workdir!r} is empty: name the run directory, e.g. "
                             f"--workdir=runs/<name> (use --workdir=. for the current directory)")
  workdir = pathlib.Path(workdir)
  for path in (workdir, *workdir.parents):
    if path.exists() and not path.is_dir():
      raise errors.ConfigError(f"--workdir={workdir}: {path} is a file, not a directory")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise errors.RunError(f"--workdir={workdir}: cannot create the run directory "
                          f"({e.strerror or e})") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise errors.RunError(f"--workdir={workdir}: the run directory is not writable "
                          f"(permissions or a read-only file system)")
  return workdir


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # alive, another user's
  return True


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')} "
          f"({holder.get('command')})")


class RunLock:
  """An exclusive lock on ``<workdir>/run.lock`` from :meth:`acquire` to :meth:`release`.

  A context manager. The file is never deleted (deleting a locked file lets a third process
  lock a new file of the same name while the second still waits on the old one); releasing
  empties it.
  """

  def __init__(self, workdir: os.PathLike | str):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self._fd = None

  def _holder(self) -> dict | None:
    try:
      text = self.path.read_text(encoding="utf-8").strip()
      return json.loads(text) if text else None
    except (OSError, ValueError):
      return None

  def acquire(self) -> "RunLock":
    """Takes the lock or raises :class:`Locked` naming the holder; warns about a stale holder.

    Raises:
      Locked: another live process holds it.
      RunError: the lock file cannot be opened or written.
    """
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
      raise errors.RunError(f"{self.path}: cannot open the run lock ({e.strerror or e})") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise errors.RunError(f"{self.path}: cannot lock the run directory ({e.strerror or e})"
                              ) from None
      holder = self._holder() or {}
      message = (f"{self.path.parent} is in use by another run: {_describe(holder)}. "
                 f"Two runs in one directory would corrupt it; wait for that run, stop it, or "
                 f"use another --workdir.")
      if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
          and not _pid_alive(holder["pid"]):
        message = (f"{self.path} is locked, but its holder pid {holder['pid']} is no longer "
                   f"running: a process it started still holds the lock (`fuser {self.path}` "
                   f"names it). Stop that process; if nothing uses {self.path.parent}, "
                   f"deleting {self.path} clears the lock.")
      raise Locked(message) from None
    stale = self._holder()
    if stale:
      logging.warning("%s: taking over a stale lock of %s, which ended without releasing it",
                      self.path, _describe(stale))
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError as e:
      os.close(fd)
      raise errors.WriteError(f"{self.path}: cannot write the run lock ({e.strerror or e})"
                              ) from None
    self._fd = fd
    return self

  def release(self) -> None:
    """Empties the lock file and drops the lock (the file stays, see the class docstring)."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.ftruncate(fd, 0)
    except OSError:
      pass  # a full or read-only disk: the kernel drops the lock anyway
    finally:
      os.close(fd)

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> bool:
    self.release()
    return False
