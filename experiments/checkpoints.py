"""Orbax checkpoints of a run: the training state (arrays) and a small JSON of loop counters.

Checkpoints live in ``<workdir>/checkpoints/<step>/``; the newest ``keep`` are
kept. Saving is synchronous: the training step donates its input buffers, so
the arrays must be written before the next step reuses them.

Each checkpoint's meta holds ``state_sha256``, a SHA-256 of the state's bytes, checked on
restore (flipped bytes would otherwise load silently). :meth:`Checkpointer.restore_newest`
tries the checkpoints newest first: one that cannot be restored (a truncated file, a
missing manifest, ``state/`` or ``meta/`` removed, a wrong checksum) is reported in one line,
moved to ``<workdir>/damaged_checkpoints/<step>``, and the next older one is tried.

A failure is one line; orbax's tracebacks only with ``--verbose`` (``experiments/orbax_output.py``).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import time
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments import errors
from experiments import orbax_output

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"
CHECKSUM_KEY = "state_sha256"


def state_checksum(state: Any) -> str | None:
  """SHA-256 of the leaves' dtypes, shapes and bytes; None when some leaf lives on other
  processes' devices (several processes: no process sees every byte)."""
  leaves = jax.tree.leaves(state)
  if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves):
    return None
  digest = hashlib.sha256()
  for leaf in jax.device_get(leaves):
    leaf = np.ascontiguousarray(leaf)
    digest.update(f"{leaf.dtype}{leaf.shape}".encode())
    digest.update(leaf.view(np.uint8).reshape(-1) if leaf.size else b"")
  return digest.hexdigest()


class Checkpointer:
  """Saves and restores ``(state pytree, meta dict)`` by step.

  Args:
    workdir: the run directory; checkpoints go to ``workdir/checkpoints``.
    keep: how many of the newest checkpoints to keep (>= 1).
  """

  def __init__(self, workdir: os.PathLike | str, *, keep: int = 2):
    if not isinstance(keep, int) or keep < 1:
      raise ValueError(f"config.keep_checkpoints must be an integer >= 1, got {keep!r}")
    orbax_output.quiet_orbax_log()
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
    """Writes checkpoint ``step`` with the state's checksum (no-op if it already exists).

    Raises:
      WriteError: the checkpoint could not be written (a full disk...); the partial
        checkpoint is removed, the older ones are untouched.
    """
    if step in self._manager.all_steps():
      return
    meta = {**meta, CHECKSUM_KEY: state_checksum(state)}
    try:
      with orbax_output.draining_event_loops():
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      for partial in self.directory.glob(f"{step}*"):
        shutil.rmtree(partial, ignore_errors=True)
      if errors.verbose():
        logging.exception("saving checkpoint %s failed", self.directory / str(step))
      # The OS's reason (a full disk) in words; orbax's message names temporary files.
      raise errors.WriteError(f"cannot save checkpoint {self.directory / str(step)}: "
                              f"{errors.describe(e)}") from None

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """``(state, meta)`` of checkpoint ``step``; ``target`` gives the pytree structure and dtypes."""
    with orbax_output.draining_event_loops():
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def _set_aside(self, step: int) -> pathlib.Path:
    """Moves a damaged checkpoint out of the way (a later save of its step would be skipped)."""
    target = self.directory.parent / DAMAGED_DIR / str(step)
    if target.exists():
      target = target.with_name(f"{step}.{int(time.time())}")
    target.parent.mkdir(exist_ok=True)
    os.replace(self.directory / str(step), target)
    self._manager.reload()
    return target

  def restore_newest(self, target: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """``(step, state, meta)`` of the newest checkpoint that restores intact, None if there is none.

    The checkpoints are tried newest first. Once an intact one restores, the damaged newer ones
    are moved to ``damaged_checkpoints/`` and one warning names each of them, why, where it
    went and the checkpoint the run resumes from (``--verbose`` adds each failure's traceback).
    When none restores, nothing is moved.

    Raises:
      RunError: there are checkpoints but none restores intact.
    """
    failed = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, target)
        expected = meta.get(CHECKSUM_KEY)
        if expected is not None and state_checksum(state) not in (None, expected):
          raise errors.DataError("its state does not match the checksum saved with it "
                                 "(flipped bytes)")
      except Exception as e:  # pylint: disable=broad-except
        if errors.verbose():
          logging.exception("checkpoint %s cannot be restored", self.directory / str(step))
        failed.append((step, errors.short(e, 160)))
        continue
      if failed:
        damaged = "; ".join(f"{self.directory / str(bad)} ({why}), moved to {self._set_aside(bad)}"
                            for bad, why in failed)
        logging.warning("damaged checkpoint%s %s; resuming from checkpoint %s, the newest intact "
                        "one", "s" if len(failed) > 1 else "", damaged, self.directory / str(step))
      return step, state, meta
    if failed:
      raise errors.RunError(
          f"no checkpoint of {self.directory} can be restored: "
          f"{'; '.join(f'{s} ({why})' for s, why in failed)}. To start the run over, move the "
          f"run directory away (or use a new --workdir).")
    return None

  def close(self) -> None:
    self._manager.close()
