"""Which axes of a parameter form MBAG's mini-blocks: dimension numbers and the default rules.

The convention is optax's ``optax.contrib.MuonDimensionNumbers``: a leaf's axes are named by
what they mean instead of guessed from its rank. For MBAG a leaf has *block axes*, whose entries
share blocks (their product is a row, cut into groups of ``block_size`` when longer), and
*batch axes*, every other axis, each index of which gets blocks of its own (layers, heads, output
units, ``(c_in, c_out)`` pairs), as if ``jax.vmap``-ed over them.

The paper's two rules (Section IV.C) are two instances:

* dense kernel ``(n_in, m_out)``: block axis 0 (the inputs of one output unit, cut into tau),
  batch axis 1;
* conv kernel ``(kh, kw, c_in, c_out)``: block axes (0, 1) (the taps of one ``(c_in, c_out)``
  pair, kept whole), batch axes 2 and 3.

Stock flax attention (``nn.MultiHeadDotProductAttention``, ``nnx.MultiHeadAttention``) is the
dense rule on its projections read as matrices, recognised by the module names ``query``,
``key``, ``value`` and ``out``.

Every default rule and its cap is listed in :func:`default_dimension_numbers`.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import numpy as np

KeyPath = tuple[Any, ...]
Axes = Union[int, Sequence[int]]

# The conv rule keeps all taps of a kernel in one block up to this many taps (7x7 = 49 fits).
CONV_MAX_TAPS = 64
# The conv rule applies to kernels whose spatial extents are odd and at most this.
CONV_MAX_EXTENT = 7
# Stock flax attention's rank-3 projection kernels, by parent module name: their input axes.
# q/k/v kernels are (d, heads, head_dim), the out kernel (heads, head_dim, d).
ATTENTION_INPUT_AXES = {"query": (0,), "key": (0,), "value": (0,), "out": (0, 1)}


class MBAGGroupingWarning(UserWarning):
  """Some leaves were grouped by a rule that had to guess what their axes mean."""


class BlockSpec(NamedTuple):
  """The low-level form of a grouping: how one leaf is cut into mini-blocks.

  Attributes:
    perm: axis permutation applied to the leaf first.
    row_size: length of the contiguous rows of the permuted leaf; must divide its size.
    block_size: size of a block; rows are zero-padded to a multiple of it.
  """

  perm: tuple[int, ...]
  row_size: int
  block_size: int

  def num_blocks(self, shape: Sequence[int]) -> int:
    size = math.prod(shape)
    if size == 0:
      return 0
    return (size // self.row_size) * (-(-self.row_size // self.block_size))


class BlockDimensionNumbers(NamedTuple):
  """How the axes of one parameter form mini-blocks.

  Attributes:
    block_axis: axis or axes whose entries share blocks, flattened in the order given (first
      axis slowest): each row is cut into consecutive groups of ``block_size`` (the last group
      zero-padded; a shorter row is one block). Every axis not listed is a batch axis.
      ``None``: the axes in ``batch_axis`` are batch axes (layers of a scanned stack, heads) and
      the remaining axes are grouped by the default rule of their shape, so a stacked leaf is
      grouped exactly like the unstacked layers.
    batch_axis: axis or axes handled independently. Needed only with ``block_axis=None``;
      otherwise it may list batch axes for clarity and must not overlap ``block_axis``.
    block_size: the size of a block for this leaf; None: the optimizer's ``block_size`` (the
      conv rule keeps small kernels whole, see :func:`default_dimension_numbers`).

  Examples (flax layouts)::

    BlockDimensionNumbers(block_axis=0)             # dense (n_in, m_out): the paper's rule
    BlockDimensionNumbers(block_axis=(0, 1))        # conv (kh, kw, c_in, c_out): the taps
    BlockDimensionNumbers(block_axis=0)             # conv1d (k, c_in, c_out): the taps
    BlockDimensionNumbers(batch_axis=0)             # nn.scan / nnx.vmap stack (layers, ...)
    BlockDimensionNumbers(block_axis=0)             # DenseGeneral (d, heads, head_dim)
    BlockDimensionNumbers(block_axis=(0, 1))        # DenseGeneral (heads, head_dim, d)

  (Stock flax attention's ``query``/``key``/``value``/``out`` kernels get the last two by
  default, see :func:`default_dimension_numbers`.)
  """

  block_axis: Axes | None = None
  batch_axis: Axes = ()
  block_size: int | None = None


class Rule(NamedTuple):
  """A resolved grouping of one leaf.

  Attributes:
    block_axes: the block axes, in flattening order.
    batch_axes: the batch axes, in order.
    block_size: the block size before capping by the row length.
    name: the rule's name in reports and warnings.
    guessed: True if a default had to guess what the axes mean (a warning lists such leaves).
  """

  block_axes: tuple[int, ...]
  batch_axes: tuple[int, ...]
  block_size: int
  name: str
  guessed: bool = False


def path_str(path: KeyPath) -> str:
  """``('params', 'Dense_0', 'kernel')``-style key path as ``params/Dense_0/kernel``."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _name_parts(path: str) -> list[str]:
  parts = path.split("/")
  if len(parts) > 1 and parts[-1] == "value":
    parts = parts[:-1]
  return parts


def leaf_name(path: str) -> str:
  """The leaf's own name in a ``/``-joined path (skipping nnx's trailing ``value``)."""
  return _name_parts(path)[-1]


def module_name(path: str) -> str:
  """The name of the module holding the leaf (``query`` in ``.../attn/query/kernel`` and in
  nnx's ``.../attn/query/kernel/value``); ``""`` for a top-level leaf."""
  parts = _name_parts(path)
  return parts[-2] if len(parts) > 1 else ""


def _axes(x: Axes | None, ndim: int, what: str, where: str) -> tuple[int, ...] | None:
  if x is None:
    return None
  axes = (x,) if isinstance(x, (int, np.integer)) else tuple(x)
  out = []
  for a in axes:
    if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
      raise ValueError(f"{where}: {what} {x!r} names an axis outside a leaf of rank {ndim}")
    out.append(int(a) % ndim)
  if len(set(out)) != len(out):
    raise ValueError(f"{where}: {what} {x!r} repeats an axis")
  return tuple(out)


def _conv_spatial(shape: tuple[int, ...]) -> bool:
  return len(shape) in (4, 5) and all(k % 2 == 1 and k <= CONV_MAX_EXTENT for k in shape[:-2])


def default_dimension_numbers(path: str, shape: Sequence[int], block_size: int,
                              block_size_given: bool = False) -> Rule:
  """The default grouping of a leaf (flax layouts). Rules, in order:

  * ``vector``: rank 0 or 1, or any leaf named ``bias`` or ``scale`` (biases, norm scales,
    attention biases ``(heads, head_dim)``): flattened, consecutive groups of ``block_size``.
  * ``embedding``: rank 2 named ``embedding`` (``nn.Embed``, ``nnx.Embed``) ``(vocab, d)``:
    the features of one token, cut into ``block_size`` (the dense rule on the transposed table,
    as used by a tied output layer).
  * ``dense``: rank 2 ``(n_in, m_out)``: the paper's ``vec(W^T)``. With ``block_size <= n_in``
    the inputs of every output unit cut into groups; with a larger ``block_size`` the kernel
    flattened output by output and cut into consecutive groups (``n_in * m_out``: layer-wise).
  * ``conv``: rank 4 or 5 whose spatial extents (all but the last two axes) are odd and at most
    ``CONV_MAX_EXTENT`` = 7 (``(3, 3, c_in, c_out)``, ``(1, 5, c_in, c_out)``,
    ``(5, 5, 5, c_in, c_out)``): the taps
    of one ``(c_in, c_out)`` pair, one block when there are at most
    ``max(block_size, CONV_MAX_TAPS)`` = ``max(block_size, 64)`` taps, else cut into
    ``block_size`` (an explicit per-leaf block size always cuts).
  * ``attention``: a rank-3 ``kernel`` of a module named ``query``, ``key`` or ``value``
    ``(d, heads, head_dim)`` (stock ``nn.MultiHeadDotProductAttention`` and
    ``nnx.MultiHeadAttention``): block axis 0, the ``d`` inputs of each ``(head, feature)``
    output; a rank-3 ``kernel`` of a module named ``out`` ``(heads, head_dim, d)``: block axes
    (0, 1), the ``heads * head_dim`` inputs of each output. Exactly the ``dense`` rule (both of
    its cases) on ``reshape(d, heads * head_dim)`` and ``reshape(heads * head_dim, d)``. Inside
    a declared stack (``BlockDimensionNumbers(batch_axis=0)``) each layer's kernel gets this rule.
  * ``fallback`` (guessed, warned at ``init``): every other shape (rank 3 such as conv1d,
    stacked dense and other DenseGeneral kernels, 2x2 / 4x4 / 16x16 convs, undeclared scanned
    attention kernels):
    the last axis is taken as the output, all other axes flattened in order are its inputs, cut
    into ``block_size`` (the dense rule on ``reshape(-1, shape[-1])``).

  No default block is larger than ``max(block_size, 64)``.
  """
  shape = tuple(int(d) for d in shape)
  ndim = len(shape)
  last = leaf_name(path)
  if ndim <= 1 or last in ("bias", "scale"):
    return Rule(tuple(range(ndim)), (), block_size, "vector")
  if ndim == 2 and last == "embedding":
    return Rule((1,), (0,), block_size, "embedding")
  if ndim == 2:
    return _dense_on_axes((0,), shape, block_size, "dense")
  if ndim == 3 and last == "kernel":
    inputs = ATTENTION_INPUT_AXES.get(module_name(path))
    if inputs is not None:
      return _dense_on_axes(inputs, shape, block_size, "attention")
  if _conv_spatial(shape):
    spatial = tuple(range(ndim - 2))
    taps = math.prod(shape[:-2])
    size = block_size if block_size_given or taps > max(block_size, CONV_MAX_TAPS) else taps
    return Rule(spatial, (ndim - 2, ndim - 1), size, "conv")
  return Rule(tuple(range(ndim - 1)), (ndim - 1,), block_size, "fallback", guessed=True)


def _dense_on_axes(inputs: tuple[int, ...], shape: tuple[int, ...], block_size: int,
                   name: str) -> Rule:
  """The ``dense`` rule on the leaf read as the matrix ``(prod(inputs), prod(outputs))``, the
  input axes leading and the output axes (every other axis) trailing, each group in order."""
  outputs = tuple(a for a in range(len(shape)) if a not in inputs)
  if block_size <= math.prod(shape[a] for a in inputs):
    return Rule(inputs, outputs, block_size, name)
  return Rule(outputs + inputs, (), block_size, name)


def _stacked(path: str, shape: tuple[int, ...], batch: tuple[int, ...], block_size: int,
             given: bool) -> Rule:
  rest = tuple(a for a in range(len(shape)) if a not in batch)
  inner = default_dimension_numbers(path, tuple(shape[a] for a in rest), block_size, given)
  block_axes = tuple(rest[a] for a in inner.block_axes)
  batch_axes = batch + tuple(rest[a] for a in inner.batch_axes)
  return Rule(block_axes, batch_axes, inner.block_size, f"stacked {inner.name}", inner.guessed)


def resolve(choice: Any, path: str, shape: Sequence[int], block_size: int) -> Rule:
  """The :class:`Rule` of one leaf from a user's per-leaf choice (None: the default).

  ``choice`` is a :class:`BlockDimensionNumbers`, an ``optax.contrib.MuonDimensionNumbers``
  (its reduction axes are the block axes, cut into ``block_size``), an int (the block size of
  this leaf, default rule) or None.
  """
  shape = tuple(int(d) for d in shape)
  ndim = len(shape)
  where = f"leaf {path or '<root>'} of shape {shape}"
  if choice is None:
    return default_dimension_numbers(path, shape, block_size)
  if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
    if choice < 1:
      raise ValueError(f"{where}: block size {choice} must be >= 1")
    return default_dimension_numbers(path, shape, int(choice), block_size_given=True)
  if type(choice).__name__ == "MuonDimensionNumbers":
    block = _axes(choice.reduction_axis, ndim, "reduction_axis", where)
    output = _axes(choice.output_axis, ndim, "output_axis", where)
    if set(block) & set(output):
      raise ValueError(f"{where}: reduction_axis and output_axis overlap in {choice}")
    batch = tuple(a for a in range(ndim) if a not in block)
    return Rule(block, batch, block_size, "muon")
  if isinstance(choice, BlockDimensionNumbers):
    size = block_size if choice.block_size is None else choice.block_size
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
      raise ValueError(f"{where}: block_size {choice.block_size!r} must be an integer >= 1")
    given = choice.block_size is not None
    batch = _axes(choice.batch_axis, ndim, "batch_axis", where)
    block = _axes(choice.block_axis, ndim, "block_axis", where)
    if block is None:
      return _stacked(path, shape, batch, int(size), given)
    if set(block) & set(batch):
      raise ValueError(f"{where}: block_axis {choice.block_axis!r} and batch_axis "
                       f"{choice.batch_axis!r} overlap")
    rest = tuple(a for a in range(ndim) if a not in block)
    return Rule(block, rest, int(size), "declared")
  raise ValueError(
      f"{where}: dimension numbers must be a BlockDimensionNumbers, a MuonDimensionNumbers, a "
      f"BlockSpec, an int (block size) or None, got {choice!r}")


def per_leaf_choices(dimension_numbers: Any, tree: Any) -> list[Any]:
  """One choice per leaf of ``tree`` (in flatten order) from the ``dimension_numbers`` argument.

  Accepted forms: None; one spec for every leaf (``BlockDimensionNumbers``,
  ``MuonDimensionNumbers``, ``BlockSpec``, int); a pytree of specs / None with the structure of
  the params or a prefix of it; a callable ``(key_path, shape) -> spec | None``.
  """
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  if dimension_numbers is None:
    return [None] * len(leaves)
  if _is_spec(dimension_numbers):
    return [dimension_numbers] * len(leaves)
  if callable(dimension_numbers):
    return [dimension_numbers(path, tuple(np.shape(leaf))) for path, leaf in leaves]
  if isinstance(dimension_numbers, (jax.Array, np.ndarray)):
    raise ValueError(
        "dimension_numbers is an array: under optax.inject_hyperparams a callable or a dtype is "
        "evaluated as a schedule; pass static_args=('dimension_numbers', 'statistics_dtype')")
  try:
    per_subtree = jax.tree.map(
        lambda spec, sub: jax.tree.map(lambda _: _Box(spec), sub),
        dimension_numbers, tree, is_leaf=lambda x: x is None or _is_spec(x))
  except ValueError as e:
    raise ValueError(f"dimension_numbers as a pytree must have the structure of the params (or "
                     f"a prefix of it), with specs or None as leaves: {e}") from None
  return [box.value for box in jax.tree.leaves(per_subtree, is_leaf=lambda x: isinstance(x, _Box))]


class _Box:
  """Holds a spec (possibly None or a tuple) as a single pytree leaf."""

  def __init__(self, value):
    self.value = value


def _is_spec(x: Any) -> bool:
  return (isinstance(x, (BlockDimensionNumbers, BlockSpec))
          or type(x).__name__ == "MuonDimensionNumbers"
          or (isinstance(x, (int, np.integer)) and not isinstance(x, bool)))


def dimension_numbers_by_path(
    rules: Sequence[tuple[str, Any]]) -> Callable[[KeyPath, tuple[int, ...]], Any]:
  """A ``dimension_numbers`` callable from ``(regex, spec)`` rules, first match wins.

  Each regex is matched (``re.search``) against the leaf's ``/``-joined key path, e.g.
  ``params/layers/attn/query/kernel``; leaves no rule matches get the default rule.

  Example:
    >>> import mbag
    >>> dims = mbag.dimension_numbers_by_path([
    ...     ("layers/", mbag.BlockDimensionNumbers(batch_axis=0)),       # nn.scan stack
    ...     ("(query|key|value)/kernel", mbag.BlockDimensionNumbers(block_axis=0)),
    ... ])
  """
  compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

  def choose(path: KeyPath, shape: tuple[int, ...]):
    del shape
    name = path_str(path)
    for pattern, spec in compiled:
      if pattern.search(name):
        return spec
    return None

  return choose


def warn_guessed(rows: Sequence[tuple[str, tuple[int, ...], str]]) -> None:
  """One warning listing every leaf whose grouping was guessed: path, shape and rule used."""
  if not rows:
    return
  listed = "; ".join(f"{p or '<root>'} {s}: {r}" for p, s, r in rows[:20])
  more = f" and {len(rows) - 20} more" if len(rows) > 20 else ""
  warnings.warn(
      f"mbag: {len(rows)} parameter(s) have shapes whose axes the default grouping cannot know "
      f"and were grouped by the fallback rule (last axis = outputs, the other axes = their "
      f"inputs, cut into block_size): {listed}{more}. Declare their axes with "
      f"dimension_numbers=, e.g. mbag.BlockDimensionNumbers(batch_axis=0) for a scanned stack "
      f"or block_axis=0 for a conv1d kernel (see docs/grouping.md); print(mbag.describe(params, "
      f"tx)) shows the layout.", MBAGGroupingWarning, stacklevel=4)
