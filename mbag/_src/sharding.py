"""Sharding the block axis of MBAG's state over mesh axes: the ``shard_blocks`` option.

Without the option the state follows the parameters (``partition.like_blocks``): a leaf
sharded along its leading axis gives statistics sharded along the block axis, a replicated
leaf gives replicated statistics. ``shard_blocks`` shards the ``[n, b, b]`` statistics and
roots over the named mesh axes whatever the parameters' sharding, e.g. over the data axis
when the parameters are replicated (data parallelism, ZeRO-style): each device keeps and
updates ``ceil(n / k)`` blocks of every bucket, ``k`` the product of the axes' sizes.

Rules:

* The mesh is the one set by ``jax.set_mesh`` when ``init`` / ``update`` run (or are traced).
* The block count of a bucket is padded with zero blocks up to a multiple of ``k``. A zero
  block is what the library already uses for padded coordinates (absent everywhere): it stays
  zero under every update, its root is zero and it adds nothing to the diagnostics. Per device
  this is never more than the replicated state (``ceil(n / k) <= n``).
* Explicit axes (``AxisType.Explicit``) use ``jax.sharding.reshard``; the directions come back
  with the block sharding of the gradient (replicated for a replicated gradient), so the
  update has the gradient's sharding. Auto axes use ``jax.lax.with_sharding_constraint``; the
  directions are constrained to be replicated (the data-parallel case).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

Array = jax.Array
# A mesh axis name, several names (their product shards the block axis), or None.
ShardBlocks = Union[str, Sequence[str], None]


class BlockSharding(NamedTuple):
  """The resolved ``shard_blocks`` of one trace.

  Attributes:
    axes: the mesh axis names.
    size: the product of their sizes (block counts are padded to a multiple of it).
    explicit: True for explicit axes (``reshard``), False for auto axes (sharding constraints).
  """

  axes: tuple[str, ...]
  size: int
  explicit: bool

  def spec(self, ndim: int) -> P:
    axis = self.axes[0] if len(self.axes) == 1 else self.axes
    return P(axis, *([None] * (ndim - 1)))


def normalize(shard_blocks: Any) -> tuple[str, ...] | None:
  """Checks ``shard_blocks`` when the transformation is built; returns a tuple of axis names.

  The axes are checked against the mesh as well if one is already set.

  Raises:
    ValueError: not a name or a sequence of distinct names, or a name the current mesh lacks.
  """
  if shard_blocks is None:
    return None
  axes = (shard_blocks,) if isinstance(shard_blocks, str) else shard_blocks
  try:
    axes = tuple(axes)
  except TypeError:
    axes = None
  if not axes or any(not isinstance(a, str) or not a for a in axes) or len(set(axes)) != len(axes):
    raise ValueError(f"shard_blocks must be a mesh axis name or a sequence of distinct axis "
                     f"names, got {shard_blocks!r}")
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    _check_axes(axes, mesh)
  return axes


def _check_axes(axes: tuple[str, ...], mesh) -> None:
  unknown = [a for a in axes if a not in mesh.axis_names]
  if unknown:
    raise ValueError(f"shard_blocks={axes!r} names mesh axis {unknown[0]!r}, which the current "
                     f"mesh does not have (its axes: {tuple(mesh.axis_names)})")


def resolve(axes: tuple[str, ...]) -> BlockSharding:
  """The :class:`BlockSharding` of ``axes`` on the mesh set now (at trace time).

  Raises:
    ValueError: no mesh is set, an axis is missing from it, is manual (inside ``shard_map``),
      or the axes mix explicit and auto types.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    raise ValueError(f"shard_blocks={axes!r} needs a mesh with these axes, but no mesh is set: "
                     f"call the optimizer's init and update under `with jax.set_mesh(mesh):`")
  _check_axes(axes, mesh)
  types = {mesh.axis_types[mesh.axis_names.index(a)] for a in axes}
  if AxisType.Manual in types:
    raise ValueError(f"shard_blocks={axes!r}: the axes are manual here (inside shard_map); "
                     f"use shard_blocks only outside shard_map")
  if len(types) > 1:
    raise ValueError(f"shard_blocks={axes!r} mixes explicit and auto mesh axes; use axes of "
                     f"one type")
  size = math.prod(mesh.shape[a] for a in axes)
  return BlockSharding(axes, size, types == {AxisType.Explicit})


def padded_count(n: int, sharding: BlockSharding | None) -> int:
  """``n`` rounded up to a multiple of the axes' size (``n`` when not sharding)."""
  if sharding is None:
    return n
  return -(-n // sharding.size) * sharding.size


def pad_mask(mask: np.ndarray, sharding: BlockSharding | None) -> np.ndarray:
  """``[n, b]`` present mask padded with absent blocks to the padded count."""
  extra = padded_count(mask.shape[0], sharding) - mask.shape[0]
  return np.concatenate([mask, np.zeros((extra, mask.shape[1]), bool)]) if extra else mask


def _replicated_if_sharded(x: Array) -> Array:
  spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
  if spec is not None and any(a is not None for a in spec):
    return jax.sharding.reshard(x, P())
  return x


def shard(x: Array, sharding: BlockSharding) -> Array:
  """Pads ``[n, ...]`` with zero blocks and shards the block axis over the axes."""
  extra = padded_count(x.shape[0], sharding) - x.shape[0]
  if extra:
    if sharding.explicit:
      x = _replicated_if_sharded(x)  # padding a sharded axis would need an uneven sharding
    x = jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1))
  spec = sharding.spec(x.ndim)
  if sharding.explicit:
    return jax.sharding.reshard(x, spec)
  return jax.lax.with_sharding_constraint(x, spec)


def unshard(x: Array, n: int, like: Array, sharding: BlockSharding) -> Array:
  """Inverse of :func:`shard`: the first ``n`` blocks, sharded like ``like`` (explicit mode).

  ``like`` is the unpadded ``[n, b]`` gradient blocks; in auto mode the result is replicated.
  """
  if not sharding.explicit:
    return jax.lax.with_sharding_constraint(x, P())[:n]
  target = getattr(jax.typeof(like).sharding, "spec", P())
  if x.shape[0] == n:
    return jax.sharding.reshard(x, target)
  x = jax.sharding.reshard(x, P())[:n]
  return x if all(a is None for a in target) else jax.sharding.reshard(x, target)


def check_state(stats: Sequence[Array], counts: Sequence[int], axes: tuple[str, ...] | None,
                sharding: BlockSharding | None) -> None:
  """Raises ValueError when the state's block counts do not fit the gradient and mesh now."""
  for i, (S, n) in enumerate(zip(stats, counts)):
    expected = padded_count(n, sharding)
    if S.shape[0] != expected:
      raise ValueError(
          f"MBAG state bucket {i} has {S.shape[0]} blocks but the gradient gives {n} blocks "
          f"({expected} with shard_blocks={axes!r} on the current mesh): the state was made "
          f"by init with another shard_blocks or mesh size, or for other parameters")


def bytes_per_device(tree: Any) -> int:
  """Bytes of ``tree``'s arrays on its busiest device: the sum over leaves of the largest
  addressable shard (a replicated leaf counts whole, a leaf split 8 ways an eighth).

  E.g. ``bytes_per_device(mbag.find_mbag_state(state))`` for the statistics and roots a device
  holds.
  """
  return sum(max(s.data.nbytes for s in x.addressable_shards) for x in jax.tree.leaves(tree))
