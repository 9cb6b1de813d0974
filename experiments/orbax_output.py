"""What orbax prints, kept to what a user needs: a failed checkpoint is one line (checkpoints.py).

Two sources of noise, each stopped here:

- orbax's log: a dozen INFO lines per save, and, when a save fails, one traceback per worker
  thread (each logs the exception that stopped it, then re-raises it to the caller, which
  reports it). :func:`quiet_orbax_log` keeps orbax's warnings and drops both, the tracebacks
  only without ``--verbose`` (:func:`experiments.errors.verbose`).
- tensorstore's ``RuntimeError: Event loop is closed``, printed by ``sys.unraisablehook`` dozens
  of times after a failed restore or save, some of the time: orbax runs each operation in a fresh
  event loop (``asyncio_utils.run_sync``: ``run_until_complete``, then ``close``); when one array
  fails, the ``gather`` over the arrays raises at once and the loop is closed while the other
  arrays' reads or writes still run; each then completes from a tensorstore thread into the
  closed loop (``call_soon_threadsafe``). Under :func:`draining_event_loops` the loops orbax
  creates let those operations end first, in the open loop, as ``asyncio.run`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging as std_logging
import sys
from typing import Iterator

from absl import logging

from experiments import errors


class _QuietOrbax(std_logging.Filter):
  """Drops orbax's records below WARNING, and those with a traceback unless ``--verbose``."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if "orbax" not in record.pathname:
      return True
    if record.exc_info and not errors.verbose():
      return False
    return record.levelno >= std_logging.WARNING


def quiet_orbax_log() -> None:
  """Installs :class:`_QuietOrbax` on the absl logger (once)."""
  absl_logger = logging.get_absl_logger()
  if not any(isinstance(f, _QuietOrbax) for f in absl_logger.filters):
    absl_logger.addFilter(_QuietOrbax())


class DrainingEventLoop(asyncio.SelectorEventLoop):
  """An event loop that lets its pending tasks end before it closes (see the module docstring).

  Tasks still running after ``DRAIN_SECS`` (a hung file system) are cancelled, as
  ``asyncio.run`` does; their exceptions are retrieved, since the first one was already
  raised to the caller.
  """

  DRAIN_SECS = 30.0  # local reads and writes end in milliseconds

  def close(self) -> None:
    if not self.is_closed() and not self.is_running():
      pending = asyncio.all_tasks(self)
      if pending:
        _, hung = self.run_until_complete(asyncio.wait(pending, timeout=self.DRAIN_SECS))
        for task in hung:
          task.cancel()
        if hung:
          self.run_until_complete(asyncio.wait(hung, timeout=1.0))
        for task in pending:
          if task.done() and not task.cancelled():
            task.exception()
    super().close()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):

  def new_event_loop(self) -> asyncio.AbstractEventLoop:
    return DrainingEventLoop()


@contextlib.contextmanager
def draining_event_loops() -> Iterator[None]:
  """The event loops created meanwhile (by orbax, in any thread) are :class:`DrainingEventLoop`.

  Left as they are: a policy other than asyncio's default (a user's uvloop), and Python 3.14+,
  where event loop policies are deprecated.
  """
  if sys.version_info >= (3, 14):
    yield
    return
  previous = asyncio.get_event_loop_policy()
  if type(previous) is not asyncio.DefaultEventLoopPolicy:  # pylint: disable=unidiomatic-typecheck
    yield
    return
  asyncio.set_event_loop_policy(_DrainingPolicy())
  try:
    yield
  finally:
    asyncio.set_event_loop_policy(previous)
