"""``mbag.describe(params, tx)``: the block layout an optimizer builds, leaf by leaf.

The MBAG preconditioners report the layout they make when ``init`` runs under
:func:`describe` (a context variable, so any ``optax`` wrapper around them, such as
``chain``, ``masked`` or ``inject_hyperparams``, is seen through); ``init`` is only
traced (``jax.eval_shape``), no memory is allocated.
"""

from __future__ import annotations

import contextvars
import math
import warnings
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

_RECORDER: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "mbag_layout_recorder", default=None)


class Recorded(NamedTuple):
  """What one preconditioner's ``init`` reports."""

  algorithm: str  # the preconditioner's name (Algorithm.name), e.g. "scale_by_mbag"
  layout: Any
  params: Any
  bytes_per_block: Any  # b -> bytes of one block's statistic (and root) as stored
  block_size: int


def record(entry: Recorded) -> None:
  recorder = _RECORDER.get()
  if recorder is not None:
    recorder.append(entry)


class LeafRow(NamedTuple):
  """One leaf of a :class:`LayoutReport`.

  Attributes:
    path: ``/``-joined key path.
    shape: the leaf's shape.
    rule: the grouping rule (``dense``, ``conv``, ``vector``, ``embedding``, ``stacked ...``,
      ``declared``, ``muon``, ``block_spec``; ``fallback`` when it had to guess).
    num_blocks: number of blocks.
    block_size: size of a block.
    state_bytes: bytes of this leaf's statistics (and roots).
    guessed: whether the rule had to guess what the axes mean.
  """

  path: str
  shape: tuple[int, ...]
  rule: str
  num_blocks: int
  block_size: int
  state_bytes: int
  guessed: bool


class LayoutReport(NamedTuple):
  """The layout of every MBAG preconditioner in an optimizer; ``str()`` gives a table.

  Attributes:
    preconditioners: names of the preconditioners found (``scale_by_mbag`` ...).
    rows: one :class:`LeafRow` per leaf and preconditioner.
    num_params: number of parameters.
    state_bytes: bytes of the whole optimizer state (statistics, roots, momentum, counters).
    adam_state_bytes: bytes of ``optax.adam``'s state for the same parameters.
  """

  preconditioners: tuple[str, ...]
  rows: tuple[LeafRow, ...]
  num_params: int
  state_bytes: int
  adam_state_bytes: int

  def __str__(self) -> str:
    head = ("path", "shape", "rule", "blocks x size", "state")
    body = [(r.path or "<root>", str(r.shape), r.rule + (" (guessed)" if r.guessed else ""),
             f"{r.num_blocks} x {r.block_size}", _bytes(r.state_bytes)) for r in self.rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
             for line in [head] + body]
    per = lambda b: b / max(self.num_params, 1)  # noqa: E731
    lines.append(
        f"{self.num_params:,} parameters ({', '.join(self.preconditioners)}); optimizer state "
        f"{_bytes(self.state_bytes)} ({per(self.state_bytes):.1f} bytes/parameter), Adam's "
        f"{_bytes(self.adam_state_bytes)} ({per(self.adam_state_bytes):.1f} bytes/parameter): "
        f"{self.state_bytes / max(self.adam_state_bytes, 1):.1f}x")
    return "\n".join(lines)


def _bytes(n: int) -> str:
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if n >= scale:
      return f"{n / scale:.1f} {unit}"
  return f"{n} B"


def _tree_bytes(tree: Any) -> int:
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def describe(params: Any, tx: optax.GradientTransformation) -> LayoutReport:
  """The block layout that ``tx`` builds for ``params``: per leaf the grouping rule, the number
  and size of its blocks and the bytes of its statistics, and the optimizer state's total
  against Adam's. ``print()`` it for a table.

  Args:
    params: the parameters (arrays or ``jax.ShapeDtypeStruct``s).
    tx: an optimizer containing one or more MBAG preconditioners (``mbag.mbag``,
      ``optax.chain(mbag.scale_by_mbag(...), ...)``, ...).

  Raises:
    ValueError: ``tx`` contains no MBAG preconditioner.

  Example:
    >>> import jax.numpy as jnp, mbag
    >>> report = mbag.describe({"w": jnp.zeros((64, 10))}, mbag.mbag(1e-3))
    >>> report.rows[0].rule, report.rows[0].num_blocks, report.rows[0].block_size
    ('dense', 20, 32)
  """
  token = _RECORDER.set([])
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # the table marks guessed leaves itself
      state = jax.eval_shape(tx.init, params)
    recorded = _RECORDER.get()
  finally:
    _RECORDER.reset(token)
  if not recorded:
    raise ValueError("describe: the optimizer contains no MBAG preconditioner (mbag.mbag, "
                     "mbag.mbag_ema, mbag.mbag_n or their scale_by_* transformations)")
  rows = []
  for entry in recorded:
    leaves = jax.tree_util.tree_leaves(entry.params)
    layout = entry.layout
    for i, leaf in enumerate(leaves):
      spec, shape = layout.specs[i], tuple(np.shape(leaf))
      n = 0 if spec is None else spec.num_blocks(shape)
      b = 0 if spec is None else spec.block_size
      rows.append(LeafRow(layout.paths[i], shape, layout.rules[i] or "empty", n, b,
                          n * entry.bytes_per_block(b) if n else 0, layout.guessed[i]))
  num_params = sum(math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params))
  adam = jax.eval_shape(optax.adam(1e-3).init, params)
  return LayoutReport(tuple(e.algorithm for e in recorded), tuple(rows),
                      num_params, _tree_bytes(state), _tree_bytes(adam))
