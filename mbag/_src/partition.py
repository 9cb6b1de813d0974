"""Cutting parameters into mini-blocks (Section IV.C of the paper) and stacking them in buckets.

Which axes form blocks is decided per leaf by dimension numbers
(:mod:`mbag._src.dimension_numbers`); here a leaf's resolved grouping becomes a
:class:`BlockSpec`: transpose the leaf so that its batch axes come first (in reverse order, so
that the output axis of a kernel leads and a kernel sharded along its outputs keeps that sharding
on the block axis) and its block axes last, read it as rows of ``row_size`` contiguous entries,
pad every row with zeros to a multiple of ``block_size`` and cut it into blocks.

Leaves whose blocks have the same size are stacked into one *bucket* (one ``[n, b, b]``
statistic), so that the update is a few batched operations whatever the number of leaves;
a leaf whose blocks are sharded along a mesh axis keeps a bucket of its own, so that its state is
sharded like the leaf.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mbag._src import dimension_numbers as dims_lib
from mbag._src.dimension_numbers import BlockSpec

Array = jax.Array
KeyPath = dims_lib.KeyPath
# Leaves up to this size are read out of a shared bucket with one gather from a constant index
# array (its kernel is the same for every leaf of a shape, so compilation does not grow with the
# number of leaves); larger leaves are sliced.
GATHER_MAX_SIZE = 1 << 18


@contextlib.contextmanager
def read_back_by_slices():
  """While active (when an update is traced), every leaf of a shared bucket is read back by a
  slice instead of a gather: the two strategies of :func:`buckets_to_tree`, for measuring them
  (``benchmarks/update_speed.py``) and testing both. Not thread-safe."""
  global GATHER_MAX_SIZE
  saved, GATHER_MAX_SIZE = GATHER_MAX_SIZE, 0
  try:
    yield
  finally:
    GATHER_MAX_SIZE = saved


def spec_of_rule(rule: dims_lib.Rule, shape: Sequence[int]) -> BlockSpec:
  """The :class:`BlockSpec` that cuts a leaf of ``shape`` as ``rule`` says."""
  row = math.prod(shape[a] for a in rule.block_axes)
  perm = tuple(reversed(rule.batch_axes)) + tuple(rule.block_axes)
  return BlockSpec(perm=perm, row_size=row, block_size=max(1, min(rule.block_size, row)))


def default_block_spec(shape: Sequence[int], block_size: int, path: str = "") -> BlockSpec:
  """The default grouping's :class:`BlockSpec` for a leaf of this shape (flax layouts).

  See :func:`mbag.default_dimension_numbers` for the rules.
  """
  shape = tuple(shape)
  return spec_of_rule(dims_lib.default_dimension_numbers(path, shape, block_size), shape)


def check_spec(spec: BlockSpec, shape: Sequence[int], where: str) -> None:
  """Raises ValueError if ``spec`` cannot cut a leaf of ``shape``."""
  size = math.prod(shape)
  if sorted(spec.perm) != list(range(len(shape))):
    raise ValueError(f"{where}: perm {spec.perm} is not a permutation of the axes of shape {tuple(shape)}")
  if spec.block_size < 1 or spec.row_size < 1:
    raise ValueError(f"{where}: block_size and row_size must be >= 1, got {spec}")
  if size and size % spec.row_size:
    raise ValueError(f"{where}: row_size {spec.row_size} does not divide the leaf size {size}")


def explicit_spec(x: Array) -> tuple | None:
  """The PartitionSpec of x if it is sharded in explicit mode along some axis, else None."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec is None or all(a is None for a in spec):
    return None
  return tuple(spec) + (None,) * (x.ndim - len(spec))


def _block_axis(permuted_spec: tuple, permuted_shape: tuple, row_size: int):
  """Mesh axis that the block axis inherits, or None if the layout cannot keep the sharding.

  The rows of a leaf are its trailing axes (their product is row_size); the block axis
  merges the leading ones. A sharded leading-most axis carries over; any other sharded axis
  does not, and the leaf is then resharded to replicated before cutting.
  """
  k, prod = len(permuted_shape), 1
  while k > 0 and prod < row_size:
    k -= 1
    prod *= permuted_shape[k]
  if prod != row_size or any(a is not None for a in permuted_spec[k:]):
    return False
  lead = permuted_spec[:k]
  if any(a is not None for a in lead[1:]):
    return False
  return lead[0] if lead else None


def block_axis_sharding(x: Array, spec: BlockSpec):
  """``(ok, axis)``: whether x's explicit sharding survives cutting, and the block axis's mesh axis."""
  leaf_spec = explicit_spec(x)
  if leaf_spec is None:
    return True, None
  permuted = tuple(leaf_spec[a] for a in spec.perm)
  shape = tuple(x.shape[a] for a in spec.perm)
  axis = _block_axis(permuted, shape, spec.row_size)
  return axis is not False, (None if axis is False else axis)


def like_blocks(matrices: Array, blocks: Array) -> Array:
  """Gives ``[n, ...]`` matrices (dense or packed) the block-axis sharding of ``[n, b]`` blocks
  (explicit mode)."""
  spec = explicit_spec(blocks)
  if spec is None:
    return matrices
  return jax.sharding.reshard(
      matrices, jax.sharding.PartitionSpec(spec[0], *([None] * (matrices.ndim - 1))))


def _reshape(x: Array, shape, axis) -> Array:
  if axis is None and explicit_spec(x) is None:
    return x.reshape(shape)
  shape = tuple(shape)
  if -1 in shape:
    known = math.prod(d for d in shape if d != -1)
    shape = tuple(x.size // known if d == -1 else d for d in shape)
  out = jax.sharding.PartitionSpec(axis, *([None] * (len(shape) - 1)))
  return jax.lax.reshape(x, shape, out_sharding=out)


def to_blocks(x: Array, spec: BlockSpec) -> Array:
  """Cuts a leaf into ``[num_blocks, block_size]`` (zero padding).

  Under explicit sharding, a leaf sharded along its leading (after ``perm``) axis gives blocks
  sharded along the block axis; other shardings are gathered first.
  """
  ok, axis = block_axis_sharding(x, spec)
  if not ok:
    x = jax.sharding.reshard(x, jax.sharding.PartitionSpec())
  y = jnp.transpose(x, spec.perm)
  rows = _reshape(y, (-1, spec.row_size), axis)
  pad = -spec.row_size % spec.block_size
  if pad:
    rows = jnp.pad(rows, ((0, 0), (0, pad)))
  return _reshape(rows, (-1, spec.block_size), axis)


def from_blocks(blocks: Array, spec: BlockSpec, shape: Sequence[int]) -> Array:
  """Inverse of :func:`to_blocks`: drops the padding and restores ``shape``."""
  block_spec = explicit_spec(blocks)
  axis = block_spec[0] if block_spec is not None else None
  padded_row = spec.row_size + (-spec.row_size % spec.block_size)
  rows = _reshape(blocks, (-1, padded_row), axis)[:, : spec.row_size]
  permuted_shape = tuple(shape[a] for a in spec.perm)
  return jnp.transpose(_reshape(rows, permuted_shape, axis), np.argsort(spec.perm))


def present_mask(spec: BlockSpec, shape: Sequence[int]) -> np.ndarray:
  """``[num_blocks, block_size]`` numpy bool: True for real (unpadded) entries."""
  pad = -spec.row_size % spec.block_size
  rows = math.prod(shape) // spec.row_size if math.prod(shape) else 0
  row = np.concatenate([np.ones(spec.row_size, bool), np.zeros(pad, bool)])
  return np.tile(row, (rows, 1)).reshape(-1, spec.block_size)


class Layout(NamedTuple):
  """Where every leaf's blocks live in the optimizer state.

  Attributes:
    specs: one BlockSpec per leaf (None for empty leaves), in tree-flatten order.
    buckets: per bucket, the leaf indices whose blocks it stacks, in order.
    block_sizes: block size of each bucket.
    rules: per leaf, the name of the grouping rule used ("" for empty leaves).
    paths: per leaf, the ``/``-joined key path.
    guessed: per leaf, whether the rule had to guess what the axes mean.
  """

  specs: tuple[BlockSpec | None, ...]
  buckets: tuple[tuple[int, ...], ...]
  block_sizes: tuple[int, ...]
  rules: tuple[str, ...] = ()
  paths: tuple[str, ...] = ()
  guessed: tuple[bool, ...] = ()

  def guessed_leaves(self, tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """``(path, shape, rule)`` of every leaf whose grouping was guessed."""
    leaves = jax.tree_util.tree_leaves(tree)
    return [(p, tuple(np.shape(leaves[i])), r) for i, (p, r, g) in
            enumerate(zip(self.paths, self.rules, self.guessed)) if g]


def _blocks_sharded(leaf: Any, spec: BlockSpec) -> bool:
  """Whether the blocks of ``leaf`` are sharded along a mesh axis (explicit sharding)."""
  try:
    ok, axis = block_axis_sharding(leaf, spec)
  except (TypeError, AttributeError, ValueError):  # e.g. a ShapeDtypeStruct without sharding
    return False
  return ok and axis is not None


def make_layout(tree: Any, block_size: int, dimension_numbers: Any = None,
                fuse: bool | None = None, *, grouping: Any = None) -> Layout:
  """Computes the block layout of a pytree of arrays (or ShapeDtypeStructs).

  Args:
    tree: the parameters (or gradients).
    block_size: tau, the default block size.
    dimension_numbers: per-leaf grouping (see :func:`mbag.scale_by_mbag`): None, one spec for
      every leaf, a pytree of specs, or a callable ``(key_path, shape) -> spec | None``; a spec
      is a :class:`mbag.BlockDimensionNumbers`, an ``optax.contrib.MuonDimensionNumbers``, a
      :class:`BlockSpec` or an int (block size).
    fuse: None (default): one bucket per block size, except that a leaf whose blocks are
      sharded along a mesh axis keeps its own; True: one bucket per block size; False: one
      bucket per leaf.
    grouping: deprecated, the older name of ``dimension_numbers``.
  """
  if grouping is not None:
    if dimension_numbers is not None:
      raise ValueError("give dimension_numbers or grouping (its older name), not both")
    warnings.warn("mbag: the `grouping=` argument is deprecated; use `dimension_numbers=` "
                  "(same values)", DeprecationWarning, stacklevel=2)
    dimension_numbers = grouping
  leaves_with_path = jax.tree_util.tree_leaves_with_path(tree)
  choices = dims_lib.per_leaf_choices(dimension_numbers, tree)
  specs: list[BlockSpec | None] = []
  rules, paths, guessed = [], [], []
  for (path, leaf), choice in zip(leaves_with_path, choices):
    shape = tuple(np.shape(leaf))
    name = dims_lib.path_str(path)
    paths.append(name)
    if math.prod(shape) == 0:
      specs.append(None)
      rules.append("")
      guessed.append(False)
      continue
    if isinstance(choice, BlockSpec):
      spec, rule_name, was_guessed = choice, "block_spec", False
    else:
      rule = dims_lib.resolve(choice, name, shape, block_size)
      spec, rule_name, was_guessed = spec_of_rule(rule, shape), rule.name, rule.guessed
    check_spec(spec, shape, f"leaf {name or '<root>'}")
    specs.append(spec)
    rules.append(rule_name)
    guessed.append(was_guessed)
  buckets: list[list[int]] = []
  keys: list[Any] = []
  for i, spec in enumerate(specs):
    if spec is None:
      continue
    own = fuse is False or (fuse is None and _blocks_sharded(leaves_with_path[i][1], spec))
    key = ("leaf", i) if own else ("size", spec.block_size)
    if key in keys:
      buckets[keys.index(key)].append(i)
    else:
      buckets.append([i])
      keys.append(key)
  sizes = tuple(specs[b[0]].block_size for b in buckets)
  return Layout(tuple(specs), tuple(tuple(b) for b in buckets), sizes, tuple(rules),
                tuple(paths), tuple(guessed))


def tree_to_buckets(tree: Any, layout: Layout) -> list[Array]:
  """Stacks the blocks of a pytree into one ``[n, b]`` array per bucket."""
  leaves = jax.tree_util.tree_leaves(tree)
  out = []
  for bucket in layout.buckets:
    parts = [to_blocks(leaves[i], layout.specs[i]) for i in bucket]
    out.append(parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0))
  return out


def _gather_index(spec: BlockSpec, shape: tuple[int, ...], start: int) -> np.ndarray:
  """For each entry of a leaf, its flat index in a bucket whose blocks start at ``start``."""
  n = spec.num_blocks(shape)
  flat = np.arange(n * spec.block_size, dtype=np.int64).reshape(n, spec.block_size)
  padded_row = spec.row_size + (-spec.row_size % spec.block_size)
  rows = flat.reshape(-1, padded_row)[:, : spec.row_size]
  permuted = rows.reshape(tuple(shape[a] for a in spec.perm))
  index = np.transpose(permuted, np.argsort(spec.perm)) + start * spec.block_size
  dtype = np.int32 if index.size == 0 or index.max() < 2**31 else np.int64
  # np.array, not np.ascontiguousarray: the latter makes a scalar leaf's index 1-D, and the
  # gathered update of a shape-() parameter then came back with shape (1,).
  return np.array(index, dtype=dtype, order="C")


def buckets_to_tree(buckets: Sequence[Array], layout: Layout, like: Any) -> Any:
  """Inverse of :func:`tree_to_buckets`; empty leaves come back as zeros of their shape.

  A leaf of a shared, unsharded bucket is read with one gather from a constant index array when
  it has at most ``GATHER_MAX_SIZE`` entries: XLA compiles one kernel per distinct slice, and a
  gather's kernel is shared by all leaves of a shape, so compile time stays flat in the number
  of leaves.
  """
  leaves, treedef = jax.tree_util.tree_flatten(like)
  # Canonical dtypes: float64 NumPy leaves with x64 disabled are float32 arrays in JAX (asking
  # for float64 zeros would warn that it is truncated).
  out: list[Any] = [jnp.zeros(np.shape(l), jax.dtypes.canonicalize_dtype(
      getattr(l, "dtype", jnp.float32))) for l in leaves]
  for blocks, bucket in zip(buckets, layout.buckets):
    shared = len(bucket) > 1 and explicit_spec(blocks) is None
    flat = blocks.reshape(-1) if shared else None
    start = 0
    for i in bucket:
      spec, shape = layout.specs[i], tuple(np.shape(leaves[i]))
      n = spec.num_blocks(shape)
      if shared and math.prod(shape) <= GATHER_MAX_SIZE:
        out[i] = flat.at[_gather_index(spec, shape, start)].get(mode="promise_in_bounds")
      else:
        out[i] = from_blocks(blocks[start:start + n], spec, shape)
      start += n
  return jax.tree_util.tree_unflatten(treedef, out)


def bucket_present_masks(tree: Any, layout: Layout) -> list[np.ndarray]:
  """Per bucket, the ``[n, b]`` mask of real (unpadded) entries."""
  leaves = jax.tree_util.tree_leaves(tree)
  return [np.concatenate([present_mask(layout.specs[i], np.shape(leaves[i])) for i in bucket])
          for bucket in layout.buckets]
