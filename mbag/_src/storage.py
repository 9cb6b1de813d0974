"""How MBAG keeps the ``b x b`` blocks of its state: dense, or packed symmetric, and in which dtype.

H (or G) and its root are symmetric, so ``storage="symmetric"`` keeps only the upper triangle of
every block, ``b (b + 1) / 2`` floats instead of ``b^2`` (45 instead of 81 for a 3x3 conv block,
528 instead of 1024 at tau = 32), as a ``[n, b (b + 1) / 2]`` array per bucket
(:func:`mbag.linalg.pack_symmetric`). The block axis stays the leading one, so sharding,
``shard_blocks`` and checkpoints treat both forms alike. Every computation unpacks the blocks it
reads (a gather that XLA fuses into the operation that reads it) and writes back the triangle.

``root_dtype`` is the dtype the root is kept in (the statistics' dtype by default). The root is
only read to form the direction ``R g``, which is computed in the statistics' dtype, so a
bfloat16 root halves its bytes and rounds each entry by at most ``2^-8`` relative (8 significant
bits).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbag._src import linalg

Array = jax.Array
Storage = Literal["dense", "symmetric"]
STORAGES = ("dense", "symmetric")


def check_storage(storage: Any) -> bool:
  """Returns whether ``storage`` is "symmetric"; ValueError unless it is "dense" or "symmetric"."""
  if not isinstance(storage, str) or storage not in STORAGES:
    raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
  return storage == "symmetric"


def float_dtype(name: str, dtype: Any, default) -> np.dtype:
  """``dtype`` as a floating numpy dtype (``default`` for None); ValueError naming ``name``."""
  if dtype is None:
    return jnp.dtype(default)
  if isinstance(dtype, (jax.Array, np.ndarray)) and not isinstance(dtype, np.dtype):
    raise ValueError(
        f"{name} is an array: optax.inject_hyperparams evaluates a callable argument "
        f"(a dtype such as jnp.float32 is callable) as a schedule; pass it as a string "
        f"('float32') or as static: static_args=('{name}',)")
  try:
    dtype = jnp.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"{name} must be a floating dtype, got {dtype!r}") from e
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating dtype, got {dtype!r}")
  return dtype


class BlockStorage(NamedTuple):
  """The resolved storage of one preconditioner.

  Attributes:
    symmetric: blocks kept as packed upper triangles ``[n, b(b+1)/2]`` instead of ``[n, b, b]``.
    dtype: dtype of the statistics and of every computation on them.
    root_dtype: dtype the root is kept in.
  """

  symmetric: bool
  dtype: np.dtype
  root_dtype: np.dtype

  def floats_per_block(self, b: int) -> int:
    return linalg.packed_size(b) if self.symmetric else b * b

  def bytes_per_block(self, b: int, with_root: bool) -> int:
    """Bytes of one block's statistic (and root)."""
    per = self.floats_per_block(b)
    return per * (self.dtype.itemsize + (self.root_dtype.itemsize if with_root else 0))

  def encode(self, A: Array, dtype: Any) -> Array:
    """``[..., b, b]`` symmetric matrices in this storage, cast to ``dtype``."""
    return (linalg.pack_symmetric(A) if self.symmetric else A).astype(dtype)

  def decode(self, X: Array) -> Array:
    """Stored blocks as dense ``[..., b, b]`` matrices in the statistics' dtype."""
    return (linalg.unpack_symmetric(X) if self.symmetric else X).astype(self.dtype)

  def outer(self, w: Array) -> Array:
    """``w w^T`` of ``[..., b]`` vectors, in this storage."""
    return linalg.packed_outer(w) if self.symmetric else w[..., :, None] * w[..., None, :]
