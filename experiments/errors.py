"""The two kinds of failure a run ends with, and the exit status of each (``experiments/cli.py``).

- :class:`ConfigError` (a ``ValueError``): bad flags or config: exit 2. Fix the command line.
- :class:`RunError`: the run cannot go on (data missing or damaged, a disk full or read-only,
  another process on the run directory, a damaged checkpoint with nothing to fall back to, a
  loss that is no longer finite): exit 1. The message says what to do.

Both carry one line meant for the user; the command line prints it without a traceback
(``--verbose`` adds the traceback, see :func:`set_verbose`).
"""

from __future__ import annotations

import os
import re

_verbose = False


def set_verbose(verbose: bool) -> None:
  """Whether tracebacks are shown (``--verbose``), those the libraries log included (orbax's)."""
  global _verbose  # pylint: disable=global-statement
  _verbose = bool(verbose)


def verbose() -> bool:
  """See :func:`set_verbose` (False unless the command line asked for tracebacks)."""
  return _verbose


class ConfigError(ValueError):
  """A bad flag or config value, named with its value (exit status 2)."""


class RunError(RuntimeError):
  """The run stopped for a reason outside the config; the message says what to do (exit status 1)."""


class DataError(RunError):
  """A data file that cannot be read as its format says (truncated, corrupted)."""


class WriteError(RunError):
  """A run file (metrics, TensorBoard events, a checkpoint) could not be written."""


def short(error: BaseException, limit: int = 300) -> str:
  """``Type: first line of the message``, at most ``limit`` characters (orbax's are kilobytes),
  cut between words so that no path is cut in the middle."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  if len(text) <= limit:
    return text
  cut = text.rfind(" ", 0, limit - 4)
  return text[:cut if cut > 0 else limit - 4].rstrip(" :,;") + " ..."


# tensorstore (orbax's storage) ends the message of a failed file operation with the errno.
_TENSORSTORE_ERRNO = re.compile(r"\[os_error_code='?(\d+)'?\]")


def describe(error: BaseException, limit: int = 300) -> str:
  """What went wrong, in words, for a one-line message: the operating system's reason when the
  error (or one it was raised from) is an ``OSError`` or carries tensorstore's
  ``[os_error_code=N]`` (``No space left on device``), else :func:`short`.

  The OS reason is what the user can act on; orbax's own message around it names temporary
  files deep inside the checkpoint and runs to kilobytes (``--verbose`` shows it).
  """
  seen = set()
  cause: BaseException | None = error
  while cause is not None and id(cause) not in seen:
    seen.add(id(cause))
    if isinstance(cause, OSError) and (cause.strerror or cause.errno):
      reason = cause.strerror or os.strerror(cause.errno)
      return f"{reason}: {cause.filename}" if cause.filename else reason
    match = _TENSORSTORE_ERRNO.search(str(cause))
    if match:
      return os.strerror(int(match.group(1)))
    cause = cause.__cause__ or cause.__context__
  return short(error, limit)
