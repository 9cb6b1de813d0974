"""Grouping parameters into mini-blocks (Section IV.C of the paper).

A leaf is cut into blocks by a :class:`BlockSpec`: transpose its axes, read it
as rows of ``row_size`` contiguous entries, pad every row with zeros to a
multiple of ``block_size`` and cut it into blocks. The default specs
(flax layouts) are:

* 4-D conv kernel ``(kh, kw, c_in, c_out)``: one block per ``(c_out, c_in)``
  pair holding its ``kh*kw`` taps (``block_size`` is ignored).
* 2-D dense kernel ``(n_in, m_out)``: ``vec(W^T)`` of the paper. With
  ``block_size <= n_in`` the inputs of every output neuron are cut into
  consecutive groups (``block_size == n_in``: one group per output neuron);
  with a larger ``block_size`` the kernel is flattened output by output and cut
  into consecutive groups (``block_size == n_in * m_out``: one group).
* every other leaf: flattened and cut into consecutive groups.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
KeyPath = tuple[Any, ...]
# A user's grouping: (key path, shape) -> BlockSpec, a block size, or None for the default.
Grouping = Callable[[KeyPath, tuple[int, ...]], "BlockSpec | int | None"]


class BlockSpec(NamedTuple):
  """How one leaf is cut into mini-blocks.

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


def default_block_spec(shape: Sequence[int], block_size: int) -> BlockSpec:
  """The paper's grouping for a leaf of this shape (flax layouts)."""
  shape = tuple(shape)
  size = max(math.prod(shape), 1)
  if len(shape) == 4:
    kh, kw = shape[0], shape[1]
    return BlockSpec(perm=(3, 2, 0, 1), row_size=kh * kw, block_size=kh * kw)
  if len(shape) == 2:
    n_in = shape[0]
    if block_size <= n_in:
      return BlockSpec(perm=(1, 0), row_size=n_in, block_size=block_size)
    return BlockSpec(perm=(1, 0), row_size=size, block_size=min(block_size, size))
  return BlockSpec(perm=tuple(range(len(shape))), row_size=size, block_size=min(block_size, size))


def check_spec(spec: BlockSpec, shape: Sequence[int], where: str) -> None:
  """Raises ValueError if ``spec`` cannot cut a leaf of ``shape``."""
  size = math.prod(shape)
  if sorted(spec.perm) != list(range(len(shape))):
    raise ValueError(f"{where}: perm {spec.perm} is not a permutation of the axes of shape {tuple(shape)}")
  if spec.block_size < 1 or spec.row_size < 1:
    raise ValueError(f"{where}: block_size and row_size must be >= 1, got {spec}")
  if size and size % spec.row_size:
    raise ValueError(f"{where}: row_size {spec.row_size} does not divide the leaf size {size}")


def _explicit_spec(x: Array) -> tuple | None:
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
  leaf_spec = _explicit_spec(x)
  if leaf_spec is None:
    return True, None
  permuted = tuple(leaf_spec[a] for a in spec.perm)
  shape = tuple(x.shape[a] for a in spec.perm)
  axis = _block_axis(permuted, shape, spec.row_size)
  return axis is not False, (None if axis is False else axis)


def like_blocks(matrices: Array, blocks: Array) -> Array:
  """Gives ``[n, b, b]`` matrices the block-axis sharding of ``[n, b]`` blocks (explicit mode)."""
  spec = _explicit_spec(blocks)
  if spec is None:
    return matrices
  return jax.sharding.reshard(matrices, jax.sharding.PartitionSpec(spec[0], None, None))


def _reshape(x: Array, shape, axis) -> Array:
  if axis is None and _explicit_spec(x) is None:
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
  block_spec = _explicit_spec(blocks)
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
      With fusion, a bucket holds all leaves of one block size; without, one leaf.
    block_sizes: block size of each bucket.
  """

  specs: tuple[BlockSpec | None, ...]
  buckets: tuple[tuple[int, ...], ...]
  block_sizes: tuple[int, ...]


def make_layout(
    tree: Any, block_size: int, grouping: Grouping | None = None, fuse: bool = False
) -> Layout:
  """Computes the block layout of a pytree of arrays (or ShapeDtypeStructs)."""
  leaves_with_path = jax.tree_util.tree_leaves_with_path(tree)
  specs: list[BlockSpec | None] = []
  for path, leaf in leaves_with_path:
    shape = tuple(np.shape(leaf))
    if math.prod(shape) == 0:
      specs.append(None)
      continue
    choice = grouping(path, shape) if grouping is not None else None
    if choice is None:
      spec = default_block_spec(shape, block_size)
    elif isinstance(choice, BlockSpec):
      spec = choice
    elif isinstance(choice, (int, np.integer)):
      spec = default_block_spec(shape, int(choice))
    else:
      raise ValueError(
          f"grouping returned {choice!r} for {jax.tree_util.keystr(path)}; expected a BlockSpec, an int or None")
    check_spec(spec, shape, f"leaf {jax.tree_util.keystr(path)}")
    specs.append(spec)
  buckets: list[list[int]] = []
  sizes: list[int] = []
  for i, spec in enumerate(specs):
    if spec is None:
      continue
    if fuse and spec.block_size in sizes:
      buckets[sizes.index(spec.block_size)].append(i)
    else:
      buckets.append([i])
      sizes.append(spec.block_size)
  return Layout(tuple(specs), tuple(tuple(b) for b in buckets), tuple(sizes))


def tree_to_buckets(tree: Any, layout: Layout) -> list[Array]:
  """Stacks the blocks of a pytree into one ``[n, b]`` array per bucket."""
  leaves = jax.tree_util.tree_leaves(tree)
  out = []
  for bucket in layout.buckets:
    parts = [to_blocks(leaves[i], layout.specs[i]) for i in bucket]
    out.append(parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0))
  return out


def buckets_to_tree(buckets: Sequence[Array], layout: Layout, like: Any) -> Any:
  """Inverse of :func:`tree_to_buckets`; empty leaves come back as zeros of their shape."""
  leaves, treedef = jax.tree_util.tree_flatten(like)
  out: list[Any] = [jnp.zeros(np.shape(l), getattr(l, "dtype", jnp.float32)) for l in leaves]
  for blocks, bucket in zip(buckets, layout.buckets):
    start = 0
    for i in bucket:
      spec, shape = layout.specs[i], np.shape(leaves[i])
      n = spec.num_blocks(shape)
      out[i] = from_blocks(blocks[start:start + n], spec, shape)
      start += n
  return jax.tree_util.tree_unflatten(treedef, out)


def bucket_present_masks(tree: Any, layout: Layout) -> list[np.ndarray]:
  """Per bucket, the ``[n, b]`` mask of real (unpadded) entries."""
  leaves = jax.tree_util.tree_leaves(tree)
  return [np.concatenate([present_mask(layout.specs[i], np.shape(leaves[i])) for i in bucket])
          for bucket in layout.buckets]
