"""MBAG: Mini-Block Adaptive Gradient optimizers for optax.

Public API: the optimizers :func:`mbag`, :func:`mbag_ema`, :func:`mbag_n`, their
preconditioners for ``optax.chain``, their options (:class:`MBAGOptions`, :class:`Graft`), the
grouping into mini-blocks (dimension numbers, :func:`describe`), the state and its diagnostics,
and the submodules :mod:`mbag.linalg` (batched linear algebra), :mod:`mbag.blocks` (the block
layout, for code working on it) and :mod:`mbag.algorithms` (the variants, for writing your own
and running it with :func:`scale_by_block_preconditioner`).
"""

from mbag import algorithms
from mbag import blocks
from mbag import linalg
from mbag._src.alias import mbag
from mbag._src.alias import mbag_ema
from mbag._src.alias import mbag_n
from mbag._src.describe import LayoutReport
from mbag._src.describe import LeafRow
from mbag._src.describe import describe
from mbag._src.dimension_numbers import BlockDimensionNumbers
from mbag._src.dimension_numbers import BlockSpec
from mbag._src.dimension_numbers import MBAGGroupingWarning
from mbag._src.dimension_numbers import default_dimension_numbers
from mbag._src.dimension_numbers import dimension_numbers_by_path
from mbag._src.engine import scale_by_block_preconditioner
from mbag._src.graft import Graft
from mbag._src.options import MBAGOptions
from mbag._src.sharding import bytes_per_device
from mbag._src.state import MBAGDiagnostics
from mbag._src.state import ScaleByMBAGState
from mbag._src.state import find_mbag_state
from mbag._src.transform import scale_by_mbag
from mbag._src.transform import scale_by_mbag_ema
from mbag._src.transform import scale_by_mbag_n

__version__ = "0.1.0"

__all__ = (
    "BlockDimensionNumbers",
    "BlockSpec",
    "Graft",
    "LayoutReport",
    "LeafRow",
    "MBAGDiagnostics",
    "MBAGGroupingWarning",
    "MBAGOptions",
    "ScaleByMBAGState",
    "algorithms",
    "blocks",
    "bytes_per_device",
    "default_dimension_numbers",
    "describe",
    "dimension_numbers_by_path",
    "find_mbag_state",
    "linalg",
    "mbag",
    "mbag_ema",
    "mbag_n",
    "scale_by_block_preconditioner",
    "scale_by_mbag",
    "scale_by_mbag_ema",
    "scale_by_mbag_n",
)

# Moved to mbag.blocks (a documented submodule for code that works on the block layout); the
# old top-level names still work, with a DeprecationWarning naming the new place.
_MOVED_TO_BLOCKS = ("Layout", "bucket_present_masks", "buckets_to_tree", "default_block_spec",
                    "make_layout", "tree_to_buckets")


def __getattr__(name: str):
  if name in _MOVED_TO_BLOCKS:
    import warnings  # pylint: disable=import-outside-toplevel
    warnings.warn(f"mbag.{name} moved to mbag.blocks.{name}", DeprecationWarning, stacklevel=2)
    return getattr(blocks, name)
  raise AttributeError(f"module 'mbag' has no attribute {name!r}")
