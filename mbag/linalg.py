"""Batched linear algebra used by MBAG (public)."""

from mbag._src.linalg import RootInfo
from mbag._src.linalg import guarded_sherman_morrison
from mbag._src.linalg import matrix_root
from mbag._src.linalg import newton_schulz
from mbag._src.linalg import pack_symmetric
from mbag._src.linalg import packed_block_size
from mbag._src.linalg import packed_outer
from mbag._src.linalg import packed_size
from mbag._src.linalg import sherman_morrison
from mbag._src.linalg import sherman_morrison_with_denominator
from mbag._src.linalg import unpack_symmetric

__all__ = ("RootInfo", "guarded_sherman_morrison", "matrix_root", "newton_schulz",
           "pack_symmetric", "packed_block_size", "packed_outer", "packed_size",
           "sherman_morrison", "sherman_morrison_with_denominator", "unpack_symmetric")
