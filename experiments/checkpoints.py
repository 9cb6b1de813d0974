"""Orbax checkpoints of a run: the training state (arrays) and a small JSON of loop counters.

Checkpoints live in ``<workdir>/checkpoints/<step>/``; the newest ``keep`` are
kept. Saving is synchronous: the training step donates its input buffers, so
the arrays must be written before the next step reuses them.
"""

from __future__ import annotations

import logging as std_logging
import os
import pathlib
from typing import Any

from absl import logging
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


class _QuietOrbax(std_logging.Filter):
  """Drops orbax's INFO chatter (a dozen lines per save) from the absl log; keeps its warnings."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def _quiet_orbax() -> None:
  absl_logger = logging.get_absl_logger()
  if not any(isinstance(f, _QuietOrbax) for f in absl_logger.filters):
    absl_logger.addFilter(_QuietOrbax())


class Checkpointer:
  """Saves and restores ``(state pytree, meta dict)`` by step.

  Args:
    workdir: the run directory; checkpoints go to ``workdir/checkpoints``.
    keep: how many of the newest checkpoints to keep (>= 1).
  """

  def __init__(self, workdir: os.PathLike | str, *, keep: int = 2):
    if not isinstance(keep, int) or keep < 1:
      raise ValueError(f"config.keep_checkpoints must be an integer >= 1, got {keep!r}")
    _quiet_orbax()
    self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, None when there is none."""
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes checkpoint ``step`` (no-op if it already exists)."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """``(state, meta)`` of checkpoint ``step``; ``target`` gives the pytree structure and dtypes."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def close(self) -> None:
    self._manager.close()
