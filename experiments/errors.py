"""The two kinds of failure a run ends with, and the exit status of each (``experiments/cli.py``).

- :class:`ConfigError` (a ``ValueError``): bad flags or config: exit 2. Fix the command line.
- :class:`RunError`: the run cannot go on (data missing or damaged, a disk full or read-only,
  another process on the run directory, a damaged checkpoint with nothing to fall back to, a
  loss that is no longer finite): exit 1. The message says what to do.

Both carry one line meant for the user; the command line prints it without a traceback
(``--verbose`` adds the traceback).
"""

from __future__ import annotations


class ConfigError(ValueError):
  """A bad flag or config value, named with its value (exit status 2)."""


class RunError(RuntimeError):
  """The run stopped for a reason outside the config; the message says what to do (exit status 1)."""


class DataError(RunError):
  """A data file that cannot be read as its format says (truncated, corrupted)."""


class WriteError(RunError):
  """A run file (metrics, TensorBoard events, a checkpoint) could not be written."""


def short(error: BaseException, limit: int = 300) -> str:
  """``Type: first line of the message``, cut at ``limit`` characters (orbax's are kilobytes)."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  return text if len(text) <= limit else text[:limit - 3] + "..."
