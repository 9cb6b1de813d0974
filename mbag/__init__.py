"""MBAG: Mini-Block Adaptive Gradient optimizers for optax.

Public API: the optimizers :func:`mbag`, :func:`mbag_ema`, :func:`mbag_n`, their
preconditioners for ``optax.chain``, the grouping into mini-blocks (dimension numbers,
:func:`describe`), and :mod:`mbag.linalg`.
"""

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
from mbag._src.partition import Layout
from mbag._src.partition import bucket_present_masks
from mbag._src.partition import buckets_to_tree
from mbag._src.partition import default_block_spec
from mbag._src.partition import make_layout
from mbag._src.partition import tree_to_buckets
from mbag._src.sharding import bytes_per_device
from mbag._src.transform import MBAGDiagnostics
from mbag._src.transform import ScaleByMBAGState
from mbag._src.transform import find_mbag_state
from mbag._src.transform import scale_by_mbag
from mbag._src.transform import scale_by_mbag_ema
from mbag._src.transform import scale_by_mbag_n

__version__ = "0.1.0"

__all__ = (
    "BlockDimensionNumbers",
    "BlockSpec",
    "LayoutReport",
    "LeafRow",
    "MBAGGroupingWarning",
    "Layout",
    "MBAGDiagnostics",
    "ScaleByMBAGState",
    "bucket_present_masks",
    "buckets_to_tree",
    "bytes_per_device",
    "default_block_spec",
    "default_dimension_numbers",
    "describe",
    "dimension_numbers_by_path",
    "find_mbag_state",
    "linalg",
    "make_layout",
    "mbag",
    "mbag_ema",
    "mbag_n",
    "scale_by_mbag",
    "scale_by_mbag_ema",
    "scale_by_mbag_n",
    "tree_to_buckets",
)
