"""The MBAG variants as data, for writing your own (public).

An :class:`Algorithm` is what makes a variant itself -- how a bucket of blocks' statistic is
updated from their gradients, which root of it is kept, how the direction is formed -- as small
pure functions; :func:`mbag.scale_by_block_preconditioner` runs any of them with the shared
machinery (blocks, buckets, roots in chunks, guards, sharding, grafting, diagnostics).
docs/optimizer.md, "Writing your own variant", has a worked example.
"""

from mbag._src.algorithms import MBAG
from mbag._src.algorithms import MBAG_EMA
from mbag._src.algorithms import MBAG_N
from mbag._src.algorithms import Algorithm
from mbag._src.algorithms import BlockUpdate
from mbag._src.algorithms import StepContext
from mbag._src.algorithms import ema_update
from mbag._src.algorithms import inverse_direction
from mbag._src.algorithms import inverse_sqrt_root
from mbag._src.algorithms import root_direction
from mbag._src.algorithms import sherman_morrison_update
from mbag._src.algorithms import sqrt_root

__all__ = ("MBAG", "MBAG_EMA", "MBAG_N", "Algorithm", "BlockUpdate", "StepContext",
           "ema_update", "inverse_direction", "inverse_sqrt_root", "root_direction",
           "sherman_morrison_update", "sqrt_root")
