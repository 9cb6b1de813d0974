"""The block machinery every MBAG variant shares, written once.

:func:`scale_by_block_preconditioner` runs an :class:`~mbag._src.algorithms.Algorithm`: it cuts
the gradient into mini-blocks (dimension numbers, :mod:`mbag._src.partition`), stacks blocks of
equal size into buckets, zeroes a gradient with a NaN/Inf (the statistics then stay exactly as
they were), lets the algorithm update each bucket's statistic, recomputes the roots every
``root_interval`` steps in chunks written in place (a block whose new root is not finite keeps
its old one), forms the directions, optionally grafts them onto a diagonal method's step sizes
(:mod:`mbag._src.graft`), shards the state (``shard_blocks``) and keeps the diagnostics.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbag._src import algorithms as algorithms_lib
from mbag._src import describe as describe_lib
from mbag._src import dimension_numbers as dims_lib
from mbag._src import graft as graft_lib
from mbag._src import linalg
from mbag._src import options as options_lib
from mbag._src import partition
from mbag._src import sharding as sharding_lib
from mbag._src.state import MBAGDiagnostics
from mbag._src.state import ScaleByMBAGState

Array = jax.Array


def _no_info() -> tuple[Array, Array, Array]:
  """``(residual, error, steps)`` of no root computed."""
  return jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32), jnp.zeros([], jnp.int32)


def _worst_info(a, b) -> tuple[Array, Array, Array]:
  """The worst of two ``(residual, error, steps)`` summaries (entrywise maximum)."""
  return tuple(jnp.maximum(x, y) for x, y in zip(a, b))


def _masked_identity(mask: np.ndarray, scale) -> Array:
  m = jnp.asarray(mask, jnp.float32)
  return (m[:, :, None] * m[:, None, :]) * jnp.eye(mask.shape[-1], dtype=jnp.float32) * scale


def _initial_diagnostics() -> MBAGDiagnostics:
  # Distinct buffers for every field, so that the state can be donated to a jitted step.
  zero_f = lambda: jnp.zeros([], jnp.float32)  # noqa: E731
  zero_i = lambda: jnp.zeros([], jnp.int32)  # noqa: E731
  return MBAGDiagnostics(
      root_residual=zero_f(), root_error=zero_f(), root_steps=zero_i(),
      min_denominator=jnp.ones([], jnp.float32), num_nonfinite_grads=zero_i(),
      num_root_fallbacks=zero_i(), num_skipped_blocks=zero_i())


def _bucket_block_counts(layout: partition.Layout, tree: Any) -> list[tuple[int, ...]]:
  """Per bucket, the number of blocks of each of its leaves (in order)."""
  leaves = jax.tree_util.tree_leaves(tree)
  return [tuple(layout.specs[i].num_blocks(np.shape(leaves[i])) for i in bucket)
          for bucket in layout.buckets]


def scale_by_block_preconditioner(
    algorithm: algorithms_lib.Algorithm,
    *,
    block_size: int,
    initial_accumulator_value: Any,
    root_interval: Any = 50,
    newton_schulz_steps: Any = 5,
    root_warmup_steps: Any = 0,
    dimension_numbers: Any = None,
    graft: Any = None,
    hyperparameters: Mapping[str, Any] | None = None,
    options: options_lib.MBAGOptions | None = None,
) -> optax.GradientTransformation:
  """A mini-block preconditioner running ``algorithm`` (the engine of every MBAG variant).

  ``g -> p`` per mini-block, with the statistic, root and direction of ``algorithm`` (see
  :mod:`mbag.algorithms`); everything else -- blocks, buckets, roots in chunks, non-finite
  guards, sharding, grafting, diagnostics -- is done here, the same way for every variant.

  Args:
    algorithm: the variant, e.g. ``mbag.algorithms.MBAG`` (Algorithm 1) or your own.
    block_size: tau (static: a Python int).
    initial_accumulator_value: lambda > 0 (``algorithm.initial`` turns it into ``S_0``, ``R_0``).
    root_interval: T_sqr; the root is recomputed at steps ``t % root_interval == 0``.
    newton_schulz_steps: T_NS.
    root_warmup_steps: also recompute the root at every step ``t <= root_warmup_steps``.
    dimension_numbers: which axes of each leaf form blocks (see :func:`mbag.scale_by_mbag`).
    graft: None, "adam", "rmsprop", "adagrad" or an :class:`mbag.Graft`: rescale the directions
      to a diagonal method's step sizes (:mod:`mbag._src.graft`).
    hyperparameters: the algorithm's own hyperparameters by name (``ctx.hyperparameters``).
    options: the engineering options (:class:`mbag.MBAGOptions`).

  Returns:
    An ``optax.GradientTransformation`` with state :class:`mbag.ScaleByMBAGState`.
  """
  options = options_lib.MBAGOptions() if options is None else options
  hyperparameters = dict(hyperparameters or {})
  options_lib.check_int("block_size", block_size, 1)
  options_lib.check("initial_accumulator_value", initial_accumulator_value, lambda v: v > 0, "> 0")
  options_lib.check_int("root_interval", root_interval, 1)
  options_lib.check_int("newton_schulz_steps", newton_schulz_steps, 1)
  options_lib.check_int("root_warmup_steps", root_warmup_steps, 0)
  block_size = options_lib.static_int("block_size", block_size)
  graft = graft_lib.resolve(graft)
  store = options.block_storage()
  uses_root = algorithm.root is not None
  if not uses_root:
    options.check_unused_root_options(algorithm.name)
  missing = sorted(set(algorithm.hyperparameters) - set(hyperparameters))
  if missing:
    raise ValueError(f"{algorithm.name} needs the hyperparameter(s) {missing}: pass "
                     f"hyperparameters={{{', '.join(repr(m) + ': ...' for m in missing)}}}")
  shard_axes = sharding_lib.normalize(options.shard_blocks)

  def layout_of(tree):
    return partition.make_layout(tree, block_size, dimension_numbers, options.fuse_blocks)

  def block_sharding():
    return None if shard_axes is None else sharding_lib.resolve(shard_axes)

  def init_fn(params):
    layout = layout_of(params)
    dims_lib.warn_guessed(layout.guessed_leaves(params))
    describe_lib.record(describe_lib.Recorded(
        algorithm.name, layout, params, lambda b: store.bytes_per_block(b, uses_root), block_size))
    masks = partition.bucket_present_masks(params, layout)
    lam = jnp.asarray(initial_accumulator_value, store.dtype)
    stat_scale, root_scale = algorithm.initial(lam)
    bs = block_sharding()
    # The statistics of a leaf sharded along its blocks are sharded the same way, unless
    # shard_blocks says where they go (padded with absent blocks to a multiple of the axes).
    blocks = partition.tree_to_buckets(params, layout) if bs is None else None

    def identities(scale, dtype):
      if bs is not None:
        return tuple(sharding_lib.shard(
            store.encode(_masked_identity(sharding_lib.pad_mask(m, bs), scale), dtype), bs)
            for m in masks)
      return tuple(partition.like_blocks(store.encode(_masked_identity(m, scale), dtype), b)
                   for m, b in zip(masks, blocks))

    stats = identities(stat_scale, store.dtype)
    roots = identities(root_scale, store.root_dtype) if uses_root else ()
    graft_state = ()
    if graft is not None:  # in the gradient blocks' form (the graft runs after unsharding)
      like = blocks if blocks is not None else partition.tree_to_buckets(params, layout)
      graft_state = tuple(partition.like_blocks(jnp.zeros(m.shape, store.dtype), b)
                          for m, b in zip(masks, like))
    if not layout.buckets:  # no leaves: a fixed leaf, whatever the (placeholder) params
      stats, roots = jnp.zeros([0], store.dtype), jnp.zeros([0], store.dtype)
      graft_state = () if graft is None else jnp.zeros([0], store.dtype)
    return ScaleByMBAGState(jnp.zeros([], jnp.int32), stats, roots, _initial_diagnostics(),
                            jnp.zeros([], bool), graft_state)

  def bucket_root(S, old, ctx):
    """New root of one bucket's blocks (or of a chunk of them): (root, (residual, error,
    steps), fallbacks), blocks whose root is not finite keeping ``old`` bit for bit."""
    root, info = algorithm.root(store.decode(S), ctx)
    ok = jnp.all(jnp.isfinite(root), axis=(-2, -1)) & jnp.isfinite(info.residual)
    # A block that falls back keeps its stored root bit for bit (also in a lower root_dtype).
    new = store.encode(root, old.dtype)
    new = jnp.where(ok.reshape(ok.shape + (1,) * (old.ndim - 1)), new, old)

    def worst(x):
      return jnp.max(jnp.where(ok, x, 0.0), initial=0.0).astype(jnp.float32)

    info = (worst(info.residual), worst(info.relative_error), jnp.asarray(info.steps, jnp.int32))
    return new, info, jnp.sum(~ok).astype(jnp.int32)

  def chunked_bucket_root(S, old, ctx):
    """:func:`bucket_root` over chunks of at most ``chunk`` blocks, written in place into
    ``old``: the root's temporaries (several times the root's size when taken at once) are
    then one chunk's, which also keeps the steady step's temporary memory small."""
    b = old.shape[-1] if not store.symmetric else linalg.packed_block_size(S.shape[-1])
    n = S.shape[0]
    chunk = options.root_chunk_blocks(b, n, sharded=shard_axes is not None
                                      or partition.explicit_spec(S) is not None)
    if chunk >= n:
      return bucket_root(S, old, ctx)

    def body(i, carry):
      roots, info, fb = carry
      new, info_i, fb_i = bucket_root(
          jax.lax.dynamic_slice_in_dim(S, i * chunk, chunk),
          jax.lax.dynamic_slice_in_dim(roots, i * chunk, chunk), ctx)
      roots = jax.lax.dynamic_update_slice_in_dim(roots, new, i * chunk, 0)
      return roots, _worst_info(info, info_i), fb + fb_i

    full = n // chunk
    roots, info, fb = jax.lax.fori_loop(0, full, body, (old, _no_info(), jnp.zeros([], jnp.int32)))
    if n % chunk:
      new, info_r, fb_r = bucket_root(S[full * chunk:], roots[full * chunk:], ctx)
      roots = jax.lax.dynamic_update_slice_in_dim(roots, new, full * chunk, 0)
      info, fb = _worst_info(info, info_r), fb + fb_r
    return roots, info, fb

  def compute_roots(stats, old_roots, ctx):
    new_roots, info, fallbacks = [], _no_info(), jnp.zeros([], jnp.int32)
    for S, old in zip(stats, old_roots):
      new, info_i, fb = chunked_bucket_root(S, old, ctx)
      new_roots.append(new)
      info, fallbacks = _worst_info(info, info_i), fallbacks + fb
    return tuple(new_roots), info, fallbacks

  def step(grads, state, ctx):
    """The algorithm's statistics, roots and directions for the (finite-guarded) block grads."""
    diag = state.diagnostics
    stats, updates = [], []
    skipped, min_den = diag.num_skipped_blocks, jnp.full([], jnp.inf, jnp.float32)
    used = []  # the gradients the directions are formed from
    for S, g in zip(state.stats, grads):
      update = algorithm.update(S, g, ctx)
      # A block whose statistic could not be updated contributes no direction either,
      # so that an overflowing gradient cannot reach the momentum.
      used.append(jnp.where(update.ok[:, None], g, 0.0))
      skipped = skipped + jnp.sum(~update.ok).astype(jnp.int32)
      if update.denominator is not None:
        # A non-positive denominator (H no longer positive definite) stays visible; a NaN one
        # (an overflowing block, skipped and counted) would hide every other block's.
        den = jnp.where(jnp.isnan(update.denominator), jnp.inf, update.denominator)
        min_den = jnp.minimum(min_den, jnp.min(den, initial=jnp.inf).astype(jnp.float32))
      stats.append(update.statistic.astype(S.dtype))
      updates.append(update)

    roots, fallbacks, root_due = state.roots, diag.num_root_fallbacks, state.root_due
    root_info = (diag.root_residual, diag.root_error, diag.root_steps)
    if uses_root:
      scheduled = ((ctx.count % root_interval == 0) | (ctx.count <= root_warmup_steps)
                   | state.root_due)
      root_due = scheduled & ~ctx.finite
      roots, root_info, n_fb = jax.lax.cond(
          ctx.finite & scheduled,
          lambda s, r: compute_roots(s, r, ctx),
          lambda s, r: (tuple(r), root_info, jnp.zeros([], jnp.int32)),
          tuple(stats), tuple(roots))
      fallbacks = fallbacks + n_fb
    dense_roots = [store.decode(R) for R in roots] if uses_root else [None] * len(used)
    directions = [algorithm.direction(u, R, g) for u, R, g in zip(updates, dense_roots, used)]

    min_den = jnp.where(jnp.isinf(min_den), 1.0, min_den)  # no Sherman-Morrison this step
    diagnostics = diag._replace(
        root_residual=root_info[0], root_error=root_info[1], root_steps=root_info[2],
        min_denominator=min_den, num_root_fallbacks=fallbacks, num_skipped_blocks=skipped,
        num_nonfinite_grads=diag.num_nonfinite_grads + (~ctx.finite).astype(jnp.int32))
    new_state = state._replace(count=ctx.count, stats=tuple(stats), roots=tuple(roots),
                               diagnostics=diagnostics, root_due=root_due)
    return directions, used, new_state

  def update_fn(updates, state, params=None):
    del params
    layout = layout_of(updates)
    blocks = partition.tree_to_buckets(updates, layout)
    bs = block_sharding()
    count = optax.safe_int32_increment(state.count)
    if not isinstance(state.stats, tuple):  # the state of parameters without leaves
      if blocks:
        raise ValueError("MBAG state was made by init for parameters without leaves")
      return updates, state._replace(count=count)
    sharding_lib.check_state(state.stats, [b.shape[0] for b in blocks], shard_axes, bs)
    grads = [g.astype(store.dtype) for g in blocks]
    # A NaN/Inf anywhere in the gradient: the gradient counts as zero, so statistics and roots
    # stay exactly as they were and the direction is zero (the momentum that follows coasts).
    # The flag is reduced per bucket and materialised: a global reduction read directly inside
    # every bucket's loop was duplicated there by XLA (measured 2-6x slower on ResNet-56), and
    # a lax.cond around the whole step copied the state (2x slower).
    flags = jnp.stack([jnp.all(jnp.isfinite(g)) for g in grads]) if grads else jnp.ones([1], bool)
    finite = jax.lax.optimization_barrier(jnp.all(jax.lax.optimization_barrier(flags)))
    grads = [jnp.where(finite, g, 0.0) for g in grads]
    if bs is not None:
      grads = [sharding_lib.shard(g, bs) for g in grads]
    ctx = algorithms_lib.StepContext(store, finite, count, hyperparameters, newton_schulz_steps,
                                     options)
    directions, grads, new_state = step(grads, state, ctx)
    if bs is not None:
      directions = [sharding_lib.unshard(d, b.shape[0], b, bs) for d, b in zip(directions, blocks)]
    if graft is not None:
      if bs is not None:
        grads = [sharding_lib.unshard(g, b.shape[0], b, bs) for g, b in zip(grads, blocks)]
      # Adam's bias correction counts the steps whose gradient was finite (the others left
      # the moments as they were).
      t = count - new_state.diagnostics.num_nonfinite_grads
      grafted = [graft_lib.graft_bucket(p, g, v, graft, t, finite, c) for p, g, v, c in zip(
          directions, grads, state.graft, _bucket_block_counts(layout, updates))]
      directions = [p for p, _ in grafted]
      new_state = new_state._replace(graft=tuple(v for _, v in grafted))
    new_updates = partition.buckets_to_tree(directions, layout, updates)
    new_updates = jax.tree_util.tree_map(
        lambda n, u: n.astype(jax.dtypes.canonicalize_dtype(u.dtype)), new_updates, updates)
    return new_updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)
