"""Cutting a pytree into MBAG's mini-blocks and stacking them in buckets (public).

For code that works on the optimizer's own block layout -- a baseline that reuses the grouping
(AdaBlock in experiments/), Theorem 1's tracker (theory/), benchmarks -- rather than on the
optimizer:

* :func:`make_layout` computes the :class:`Layout` a preconditioner builds for a pytree (the same
  dimension numbers and ``fuse_blocks`` as :func:`mbag.scale_by_mbag`);
* :func:`tree_to_buckets` stacks a pytree's blocks into one ``[n, b]`` array per bucket and
  :func:`buckets_to_tree` puts them back (padding dropped);
* :func:`bucket_present_masks` marks the real (unpadded) entries of every bucket;
* :func:`default_block_spec` is the default grouping of one leaf as a :class:`BlockSpec`;
* :func:`read_back_by_slices` switches :func:`buckets_to_tree`'s read-back of small leaves from
  gathers to slices while it is active (to measure or test both).

Example:
  >>> import jax.numpy as jnp
  >>> from mbag import blocks
  >>> tree = {"w": jnp.arange(12.0).reshape(4, 3)}
  >>> layout = blocks.make_layout(tree, block_size=2)
  >>> [b.shape for b in blocks.tree_to_buckets(tree, layout)]
  [(6, 2)]
  >>> bool((blocks.buckets_to_tree(blocks.tree_to_buckets(tree, layout), layout, tree)["w"]
  ...       == tree["w"]).all())
  True
"""

from mbag._src.dimension_numbers import BlockSpec
from mbag._src.partition import Layout
from mbag._src.partition import bucket_present_masks
from mbag._src.partition import buckets_to_tree
from mbag._src.partition import default_block_spec
from mbag._src.partition import make_layout
from mbag._src.partition import read_back_by_slices
from mbag._src.partition import tree_to_buckets

__all__ = ("BlockSpec", "Layout", "bucket_present_masks", "buckets_to_tree",
           "default_block_spec", "make_layout", "read_back_by_slices", "tree_to_buckets")
