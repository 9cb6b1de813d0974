"""The MBAG preconditioners as optax GradientTransformations (Algorithms 1 and 2, MBAG-N).

All three share one engine: cut the gradient into mini-blocks, update one
``b x b`` statistic per block, occasionally recompute a root from it, and
multiply each gradient block by its root (or, for MBAG-N, by the statistic).
"""

from __future__ import annotations

import numbers
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbag._src import describe as describe_lib
from mbag._src import dimension_numbers as dims_lib
from mbag._src import linalg
from mbag._src import partition
from mbag._src import sharding as sharding_lib
from mbag._src import storage as storage_lib

Array = jax.Array
RootMethod = Literal["newton_schulz", "eigh"]
_ROOT_METHODS = ("newton_schulz", "eigh")


class MBAGDiagnostics(NamedTuple):
  """Numerical health of the preconditioner, kept in the state (all scalars).

  Attributes:
    root_residual: [] float32. Largest relative residual over all blocks of the
      root computed last (``||X^2 - H||_F/||H||_F`` for Algorithm 1,
      ``||Y G Y - I||_F/||I||_F`` for Algorithm 2); 0 before the first root.
      Dominated by the large eigenvalues: it can be tiny while small ones are wrong.
    root_error: [] float32. Largest ``||I - Y X||_F`` over blocks of the last root
      (see :class:`mbag.linalg.RootInfo`): ~ the worst relative error of the root over
      eigen-directions. ~1 means some direction has not converged.
    root_steps: [] int32. Newton-Schulz iterations used by the last root (0: eigh or none yet).
    min_denominator: [] float32. Smallest Sherman-Morrison denominator
      ``1 + g^T H g`` of the last step; >= 1 while H is positive definite
      (always 1 for Algorithm 2, which has none).
    num_nonfinite_grads: [] int32. Steps whose gradient had a NaN or Inf (treated as zero).
    num_root_fallbacks: [] int32. Blocks whose new root was not finite and kept the previous one.
    num_skipped_blocks: [] int32. Block statistic updates skipped because they would
      overflow or (Sherman-Morrison) had a non-positive denominator.
  """

  root_residual: Array
  root_error: Array
  root_steps: Array
  min_denominator: Array
  num_nonfinite_grads: Array
  num_root_fallbacks: Array
  num_skipped_blocks: Array


class ScaleByMBAGState(NamedTuple):
  """State of :func:`scale_by_mbag`, :func:`scale_by_mbag_ema` and :func:`scale_by_mbag_n`.

  Attributes:
    count: [] int32. Number of updates so far (t).
    stats: per bucket, [n, b, b] float32: H_t = G_t^{-1} (Algorithm 1, MBAG-N)
      or the EMA statistic G_t (Algorithm 2); with ``storage="symmetric"`` the packed upper
      triangles, [n, b(b+1)/2]. Padded coordinates are zero.
    roots: per bucket, [n, b, b] (or [n, b(b+1)/2]) float32, or ``root_dtype``: the root in
      use, H^{1/2} or G^{-1/2}; empty for MBAG-N.
    diagnostics: MBAGDiagnostics.
    root_due: [] bool. A scheduled root was skipped (non-finite gradient): the next step with
      a finite gradient computes it.

  For parameters without leaves (and for ``optax.tree.map_params``' placeholder) ``stats`` and
  ``roots`` are a single empty ``[0]`` array instead of tuples, so that the state's structure
  never depends on the parameters' beyond the number of buckets.
  """

  count: Array
  stats: tuple[Array, ...] | Array
  roots: tuple[Array, ...] | Array
  diagnostics: MBAGDiagnostics
  root_due: Array

  def dense_stats(self) -> tuple[Array, ...]:
    """The statistics as ``[n, b, b]`` matrices, whatever the storage."""
    if not isinstance(self.stats, tuple):
      return ()
    return tuple(_dense(S, S.dtype) for S in self.stats)

  def dense_roots(self) -> tuple[Array, ...]:
    """The roots as ``[n, b, b]`` matrices in the statistics' dtype, whatever the storage and
    ``root_dtype``."""
    if not isinstance(self.roots, tuple):
      return ()
    return tuple(_dense(R, S.dtype) for R, S in zip(self.roots, self.stats))


def _dense(x: Array, dtype) -> Array:
  x = linalg.unpack_symmetric(x) if x.ndim == 2 else x
  return x if x.dtype == dtype else x.astype(dtype)


def _is_concrete_number(x: Any) -> bool:
  return isinstance(x, (numbers.Number, np.ndarray, np.generic)) or (
      isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer))


def _check(name: str, value: Any, ok, expected: str) -> None:
  """Raises ValueError naming ``name`` if a concrete ``value`` fails ``ok``."""
  if value is None or not _is_concrete_number(value):
    return
  v = np.asarray(value)
  if v.ndim != 0 or not np.isfinite(v) or not ok(v.item()):
    raise ValueError(f"{name} must be {expected}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
  if value is None or not _is_concrete_number(value):
    return
  v = np.asarray(value)
  if v.ndim != 0 or not np.issubdtype(v.dtype, np.integer) and not float(v).is_integer():
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  if int(v) < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def validate_hyperparameters(
    *, block_size=None, initial_accumulator_value=None, momentum=None, decay=None,
    root_interval=None, newton_schulz_steps=None, root_method=None,
    newton_schulz_tolerance=None, newton_schulz_max_steps=None, root_warmup_steps=None,
    learning_rate=None,
) -> None:
  """Checks MBAG hyperparameters at construction; raises ValueError naming the bad one."""
  _check_int("block_size", block_size, 1)
  _check("initial_accumulator_value", initial_accumulator_value, lambda v: v > 0, "> 0")
  _check("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  _check("decay", decay, lambda v: 0 < v < 1, "in (0, 1)")
  _check_int("root_interval", root_interval, 1)
  _check_int("newton_schulz_steps", newton_schulz_steps, 1)
  _check_int("newton_schulz_max_steps", newton_schulz_max_steps, 1)
  _check_int("root_warmup_steps", root_warmup_steps, 0)
  _check("newton_schulz_tolerance", newton_schulz_tolerance, lambda v: v > 0, "> 0 or None")
  if not callable(learning_rate):
    _check("learning_rate", learning_rate, lambda v: v >= 0, "a finite number >= 0 or a schedule")
  if root_method is not None and root_method not in _ROOT_METHODS:
    raise ValueError(f"root_method must be one of {_ROOT_METHODS}, got {root_method!r}")


def _static_block_size(block_size: Any) -> int:
  if isinstance(block_size, jax.core.Tracer):
    raise ValueError(
        "block_size is traced (optax.inject_hyperparams makes every number a hyperparameter "
        "array): it fixes the shapes of the state, pass it as static, e.g. "
        "optax.inject_hyperparams(mbag.mbag, static_args=('block_size',))")
  return int(np.asarray(block_size))


# Default size of one chunk of a root computation, by backend: a chunk's dense float32 blocks
# take at most this many bytes (on CPU 512 blocks of 32 x 32, 6472 of 9 x 9). Measured on
# ResNet-56 on a 2-core CPU (docs/performance.md): 2 MiB chunks keep the update's temporary
# buffer at 22 MB (whole buckets: 251 MB) and take the root step from 339-410 ms to 186-222 ms;
# 8 MiB chunks already bring back page faults. Accelerators get larger chunks (not measured).
ROOT_CHUNK_BYTES = {"cpu": 1 << 21}
ROOT_CHUNK_BYTES_ACCELERATOR = 1 << 26


def _root_chunk_blocks(root_chunk_size: int | None, b: int, n: int, *, sharded: bool) -> int:
  """Blocks per chunk of a bucket's root computation (``n``: the whole bucket at once).

  None (default): chunks of ``ROOT_CHUNK_BYTES`` of dense blocks, except for a bucket whose
  blocks are sharded (``shard_blocks`` or an explicitly sharded leaf), which is taken whole so
  that every device computes its own blocks' roots without slicing across devices.
  """
  if root_chunk_size == 0 or (root_chunk_size is None and sharded):
    return n
  if root_chunk_size is None:
    limit = ROOT_CHUNK_BYTES.get(jax.default_backend(), ROOT_CHUNK_BYTES_ACCELERATOR)
    return max(1, limit // (4 * b * b))
  return int(root_chunk_size)


def _no_info() -> tuple[Array, Array, Array]:
  """``(residual, error, steps)`` of no root computed."""
  return jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32), jnp.zeros([], jnp.int32)


def _worst_info(a, b) -> tuple[Array, Array, Array]:
  """The worst of two ``(residual, error, steps)`` summaries (entrywise maximum)."""
  return tuple(jnp.maximum(x, y) for x, y in zip(a, b))


def _masked_identity(mask: np.ndarray, scale) -> Array:
  m = jnp.asarray(mask, jnp.float32)
  return (m[:, :, None] * m[:, None, :]) * jnp.eye(mask.shape[-1], dtype=jnp.float32) * scale


def _block_preconditioner(
    algorithm: Literal["inverse", "ema", "inverse_direct"],
    *,
    block_size: int,
    initial_accumulator_value,
    decay=None,
    root_interval=50,
    newton_schulz_steps=5,
    root_method: RootMethod = "newton_schulz",
    newton_schulz_tolerance: float | None = None,
    newton_schulz_max_steps: int = 100,
    root_warmup_steps: int = 0,
    dimension_numbers: Any = None,
    grouping: Any = None,
    fuse_blocks: bool | None = None,
    statistics_dtype=None,
    shard_blocks: sharding_lib.ShardBlocks = None,
    storage: storage_lib.Storage = "dense",
    root_dtype=None,
    root_chunk_size: int | None = None,
) -> optax.GradientTransformation:
  """The engine behind the three public preconditioners."""
  if dimension_numbers is not None and grouping is not None:
    raise ValueError("dimension_numbers and grouping are two names of the same argument; "
                     "give only dimension_numbers")
  dimension_numbers = grouping if dimension_numbers is None else dimension_numbers
  validate_hyperparameters(
      block_size=block_size, initial_accumulator_value=initial_accumulator_value,
      decay=decay, root_interval=root_interval, newton_schulz_steps=newton_schulz_steps,
      root_method=root_method, newton_schulz_tolerance=newton_schulz_tolerance,
      newton_schulz_max_steps=newton_schulz_max_steps, root_warmup_steps=root_warmup_steps)
  block_size = _static_block_size(block_size)
  if root_chunk_size is not None and (
      isinstance(root_chunk_size, bool) or not isinstance(root_chunk_size, (int, np.integer))
      or root_chunk_size < 0):
    raise ValueError(
        f"root_chunk_size must be None or a Python integer >= 0 (it fixes the loop's slices; "
        f"with optax.inject_hyperparams pass it in static_args), got {root_chunk_size!r}")
  statistics_dtype = storage_lib.float_dtype("statistics_dtype", statistics_dtype, jnp.float32)
  store = storage_lib.BlockStorage(
      storage_lib.check_storage(storage), statistics_dtype,
      storage_lib.float_dtype("root_dtype", root_dtype, statistics_dtype))
  if fuse_blocks not in (None, True, False):
    raise ValueError(f"fuse_blocks must be None, True or False, got {fuse_blocks!r}")
  uses_root = algorithm != "inverse_direct"
  shard_axes = sharding_lib.normalize(shard_blocks)
  root_kind = "inv_sqrt" if algorithm == "ema" else "sqrt"

  def layout_of(tree):
    return partition.make_layout(tree, block_size, dimension_numbers, fuse_blocks)

  def block_sharding():
    return None if shard_axes is None else sharding_lib.resolve(shard_axes)

  def init_fn(params):
    layout = layout_of(params)
    dims_lib.warn_guessed(layout.guessed_leaves(params))
    describe_lib.record(describe_lib.Recorded(
        algorithm, layout, params, lambda b: store.bytes_per_block(b, uses_root), block_size))
    masks = partition.bucket_present_masks(params, layout)
    lam = jnp.asarray(initial_accumulator_value, statistics_dtype)
    stat_scale = lam if algorithm == "ema" else 1.0 / lam
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

    stats = identities(stat_scale, statistics_dtype)
    roots = identities(jax.lax.rsqrt(lam), store.root_dtype) if uses_root else ()
    if not layout.buckets:  # no leaves: a fixed leaf, whatever the (placeholder) params
      stats, roots = jnp.zeros([0], statistics_dtype), jnp.zeros([0], statistics_dtype)
    # Distinct buffers for every field, so that the state can be donated to a jitted step.
    zero_f = lambda: jnp.zeros([], jnp.float32)  # noqa: E731
    zero_i = lambda: jnp.zeros([], jnp.int32)  # noqa: E731
    diagnostics = MBAGDiagnostics(
        root_residual=zero_f(), root_error=zero_f(), root_steps=zero_i(),
        min_denominator=jnp.ones([], jnp.float32), num_nonfinite_grads=zero_i(),
        num_root_fallbacks=zero_i(), num_skipped_blocks=zero_i())
    return ScaleByMBAGState(jnp.zeros([], jnp.int32), stats, roots, diagnostics,
                            jnp.zeros([], bool))

  def bucket_root(S, old):
    """New root of one bucket's blocks (or of a chunk of them): (root, (residual, error,
    steps), fallbacks), blocks whose root is not finite keeping ``old`` bit for bit."""
    root, info = linalg.matrix_root(
        store.decode(S), root_kind, method=root_method, num_steps=newton_schulz_steps,
        tolerance=newton_schulz_tolerance, max_steps=newton_schulz_max_steps)
    ok = jnp.all(jnp.isfinite(root), axis=(-2, -1)) & jnp.isfinite(info.residual)
    # A block that falls back keeps its stored root bit for bit (also in a lower root_dtype).
    new = store.encode(root, old.dtype)
    new = jnp.where(ok.reshape(ok.shape + (1,) * (old.ndim - 1)), new, old)

    def worst(x):
      return jnp.max(jnp.where(ok, x, 0.0), initial=0.0).astype(jnp.float32)

    info = (worst(info.residual), worst(info.relative_error), jnp.asarray(info.steps, jnp.int32))
    return new, info, jnp.sum(~ok).astype(jnp.int32)

  def chunked_bucket_root(S, old):
    """:func:`bucket_root` over chunks of at most ``chunk`` blocks, written in place into
    ``old``: the root's temporaries (several times the root's size when taken at once) are
    then one chunk's, which also keeps the steady step's temporary memory small."""
    b = S.shape[-1] if not store.symmetric else linalg.packed_block_size(S.shape[-1])
    n = S.shape[0]
    chunk = _root_chunk_blocks(root_chunk_size, b, n, sharded=shard_axes is not None
                               or partition.explicit_spec(S) is not None)
    if chunk >= n:
      return bucket_root(S, old)

    def body(i, carry):
      roots, info, fb = carry
      new, info_i, fb_i = bucket_root(
          jax.lax.dynamic_slice_in_dim(S, i * chunk, chunk),
          jax.lax.dynamic_slice_in_dim(roots, i * chunk, chunk))
      roots = jax.lax.dynamic_update_slice_in_dim(roots, new, i * chunk, 0)
      return roots, _worst_info(info, info_i), fb + fb_i

    full = n // chunk
    roots, info, fb = jax.lax.fori_loop(0, full, body, (old, _no_info(), jnp.zeros([], jnp.int32)))
    if n % chunk:
      new, info_r, fb_r = bucket_root(S[full * chunk:], roots[full * chunk:])
      roots = jax.lax.dynamic_update_slice_in_dim(roots, new, full * chunk, 0)
      info, fb = _worst_info(info, info_r), fb + fb_r
    return roots, info, fb

  def compute_roots(stats, old_roots):
    new_roots, info, fallbacks = [], _no_info(), jnp.zeros([], jnp.int32)
    for S, old in zip(stats, old_roots):
      new, info_i, fb = chunked_bucket_root(S, old)
      new_roots.append(new)
      info, fallbacks = _worst_info(info, info_i), fallbacks + fb
    return tuple(new_roots), info, fallbacks

  def update_fn(updates, state, params=None):
    del params
    layout = layout_of(updates)
    blocks = partition.tree_to_buckets(updates, layout)
    bs = block_sharding()
    if not isinstance(state.stats, tuple):  # the state of parameters without leaves
      if blocks:
        raise ValueError("MBAG state was made by init for parameters without leaves")
      return updates, state._replace(count=optax.safe_int32_increment(state.count))
    sharding_lib.check_state(state.stats, [b.shape[0] for b in blocks], shard_axes, bs)
    grads = [g.astype(statistics_dtype) for g in blocks]
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
    directions, new_state = _step(grads, state, optax.safe_int32_increment(state.count), finite)
    if bs is not None:
      directions = [sharding_lib.unshard(d, b.shape[0], b, bs) for d, b in zip(directions, blocks)]
    new_updates = partition.buckets_to_tree(directions, layout, updates)
    new_updates = jax.tree_util.tree_map(lambda n, u: n.astype(u.dtype), new_updates, updates)
    return new_updates, new_state

  def _step(grads, state, count, finite):
    diag = state.diagnostics
    stats, directions, min_den = [], [], jnp.full([], jnp.inf, jnp.float32)
    skipped = diag.num_skipped_blocks
    for i, (S, g) in enumerate(zip(state.stats, grads)):
      if algorithm == "ema":
        ok = jnp.all(jnp.isfinite(g * g), axis=-1)
        g = jnp.where(ok[:, None], g, 0.0)
        a = jnp.where(ok & finite, jnp.asarray(decay, S.dtype), 1.0)
        a = a.reshape(a.shape + (1,) * (S.ndim - 1))
        S_new = a * S + (1.0 - a) * store.outer(g)
      else:
        u = jnp.einsum("nij,nj->ni", store.decode(S), g)
        den, w, ok = linalg.rank_one_factor(u, g)
        if store.symmetric:
          # Materialise w ([n, b], small): otherwise XLA recomputes it, gathers and all, inside
          # the fused update of every packed entry (measured 2.7x slower at b = 9).
          w = jax.lax.optimization_barrier(w)
        S_new = S - store.outer(w)
        min_den = jnp.minimum(min_den, jnp.min(den, initial=jnp.inf).astype(jnp.float32))
        g = jnp.where(ok[:, None], g, 0.0)
        if algorithm == "inverse_direct":
          # H_t g = H_{t-1} g / (1 + g^T H_{t-1} g): no second pass over H needed.
          directions.append(jnp.where(ok[:, None], u, 0.0) / jnp.where(ok, den, 1.0)[:, None])
      # A block whose statistic could not be updated contributes no direction either,
      # so that an overflowing gradient cannot reach the momentum.
      grads[i] = g
      skipped = skipped + jnp.sum(~ok).astype(jnp.int32)
      stats.append(S_new.astype(S.dtype))

    roots = state.roots
    root_info = (diag.root_residual, diag.root_error, diag.root_steps)
    fallbacks = diag.num_root_fallbacks
    root_due = state.root_due
    if uses_root:
      scheduled = (count % root_interval == 0) | (count <= root_warmup_steps) | root_due
      is_root_step = finite & scheduled
      root_due = scheduled & ~finite
      roots, root_info, n_fb = jax.lax.cond(
          is_root_step, compute_roots,
          lambda s, r: (tuple(r), root_info, jnp.zeros([], jnp.int32)),
          tuple(stats), tuple(roots))
      fallbacks = fallbacks + n_fb
      directions = [jnp.einsum("nij,nj->ni", store.decode(R), g) for R, g in zip(roots, grads)]

    min_den = jnp.where(jnp.isinf(min_den), 1.0, min_den)  # no Sherman-Morrison this step
    diagnostics = diag._replace(
        root_residual=root_info[0], root_error=root_info[1], root_steps=root_info[2],
        min_denominator=min_den, num_root_fallbacks=fallbacks, num_skipped_blocks=skipped,
        num_nonfinite_grads=diag.num_nonfinite_grads + (~finite).astype(jnp.int32))
    return directions, ScaleByMBAGState(count, tuple(stats), tuple(roots), diagnostics, root_due)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_mbag(
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    root_interval: int = 50,
    newton_schulz_steps: int = 5,
    root_method: RootMethod = "newton_schulz",
    *,
    newton_schulz_tolerance: float | None = None,
    newton_schulz_max_steps: int = 100,
    root_warmup_steps: int = 0,
    dimension_numbers: Any = None,
    grouping: Any = None,
    fuse_blocks: bool | None = None,
    statistics_dtype=None,
    shard_blocks: sharding_lib.ShardBlocks = None,
    storage: storage_lib.Storage = "dense",
    root_dtype=None,
    root_chunk_size: int | None = None,
) -> optax.GradientTransformation:
  r"""MBAG preconditioner (Algorithm 1): ``g -> H_t^{1/2} g`` per mini-block.

  .. math::
    H_t = H_{t-1} - \frac{H_{t-1} g_t g_t^T H_{t-1}}{1 + g_t^T H_{t-1} g_t},\quad
    H_0 = I/\lambda,\qquad
    p_t = R_t g_t,\quad R_t = \begin{cases}\sqrt{H_t} & t \equiv 0 \pmod{T_{sqr}}\\
    R_{t-1} & \text{otherwise}\end{cases},\quad R_0 = \lambda^{-1/2} I.

  ``H_t`` is the exact inverse of ``G_t = lambda I + sum_s g_s g_s^T`` (full-matrix
  AdaGrad statistics restricted to each block), kept by Sherman-Morrison.

  A gradient containing NaN or Inf is treated as zero: the statistics stay
  exactly as they were, the returned direction is zero and
  ``diagnostics.num_nonfinite_grads`` grows. A root that comes back non-finite
  for a block keeps that block's previous root.

  Args:
    block_size: tau, the size of a mini-block (small conv kernels keep their ``kh*kw`` taps
      whole, see :func:`mbag.default_dimension_numbers`); must be static (a Python int).
    initial_accumulator_value: lambda > 0.
    root_interval: T_sqr; the root is recomputed when ``t % root_interval == 0``.
    newton_schulz_steps: T_NS, iterations of the coupled Newton-Schulz iteration.
    root_method: "newton_schulz" (paper) or "eigh" (exact reference).
    newton_schulz_tolerance: if set, Newton-Schulz iterates until
      ``max ||I - Y_k X_k||_F <= tolerance`` (up to ``newton_schulz_max_steps``)
      instead of a fixed ``newton_schulz_steps``.
    newton_schulz_max_steps: cap on iterations with a tolerance.
    root_warmup_steps: also recompute the root at every step ``t <= root_warmup_steps``.
      0 (default) is the paper's algorithm, whose first ``root_interval - 1``
      steps use ``lambda^{-1/2} I`` (momentum SGD with a ``lambda^{-1/2}``-times larger step).
    dimension_numbers: which axes of each leaf form blocks (default: the paper's rules,
      :func:`mbag.default_dimension_numbers`). One spec for every leaf, a pytree of specs (or
      None) with the params' structure or a prefix of it, or a callable
      ``(key_path, shape) -> spec | None`` (e.g. :func:`mbag.dimension_numbers_by_path`).
      A spec is a :class:`mbag.BlockDimensionNumbers`, an ``optax.contrib.MuonDimensionNumbers``
      (block = its reduction axes), an int (this leaf's block size, default rule) or a low-level
      :class:`mbag.BlockSpec`. Leaves whose grouping the defaults had to guess are listed in
      one warning at ``init``; ``print(mbag.describe(params, tx))`` shows the whole layout.
    grouping: the older name of ``dimension_numbers`` (same values); give one of them.
    fuse_blocks: None (default): leaves with blocks of equal size share one stacked
      statistic (a bucket), so that the update is a few batched operations whatever the
      number of leaves (compile time stays near Adam's), except that a leaf whose blocks are
      sharded along a mesh axis keeps a bucket of its own and its state stays sharded like it.
      True: buckets by block size only. False: one bucket per leaf.
    statistics_dtype: dtype of H and of every computation (None: float32, also for bf16 params).
    shard_blocks: None (default: the state follows the parameters' sharding), or a mesh
      axis name or names over which the block axis of the statistics and roots is sharded
      whatever the parameters' sharding: e.g. the data axis with replicated parameters
      (data parallelism, ZeRO-style). Needs a mesh set by ``jax.set_mesh`` when init and
      update run; block counts are padded with zero blocks to a multiple of the axes' size.
      Explicit and auto mesh axes both work; see ``mbag/_src/sharding.py`` for the rules.
    storage: "dense" (default): each block a ``b x b`` matrix. "symmetric": H and the root
      keep only their upper triangles, ``b (b + 1) / 2`` floats per block (45 instead of 81 for
      3x3 conv blocks, 528 instead of 1024 at tau = 32); same results to float32 rounding.
      See ``mbag/_src/storage.py`` and docs/performance.md for what it costs.
    root_dtype: dtype the root is kept in (None: ``statistics_dtype``). ``"bfloat16"`` halves
      the root's bytes; the direction ``R g`` is still computed in ``statistics_dtype``.
    root_chunk_size: blocks per chunk when the roots are recomputed (a loop over chunks, each
      written in place). None (default): chunks of 2 MiB of dense blocks on CPU (64 MiB on
      accelerators), so that the root's temporaries are a chunk's instead of several times the
      whole root's; the steady step's temporary buffer, which XLA sizes for the root's branch
      too, shrinks with them (ResNet-56: 251 MB -> 22 MB, docs/performance.md). A bucket whose
      blocks are sharded is taken whole. 0: every bucket at once. Same roots either way (each
      block's root is its own); must be static under ``optax.inject_hyperparams``.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleByMBAGState`.

  Example:
    >>> import jax.numpy as jnp, optax, mbag
    >>> tx = optax.chain(mbag.scale_by_mbag(block_size=2, root_interval=1), optax.scale(-0.1))
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([1.0, 0.0, 0.0])}, state)

  References:
    Lee, "MBAG: A Scalable Mini-Block Adaptive Gradient Method for Deep Neural
    Networks", Algorithm 1 and Section IV.
  """
  return _block_preconditioner(
      "inverse", block_size=block_size, initial_accumulator_value=initial_accumulator_value,
      root_interval=root_interval, newton_schulz_steps=newton_schulz_steps,
      root_method=root_method, newton_schulz_tolerance=newton_schulz_tolerance,
      newton_schulz_max_steps=newton_schulz_max_steps, root_warmup_steps=root_warmup_steps,
      dimension_numbers=dimension_numbers, grouping=grouping, fuse_blocks=fuse_blocks,
      statistics_dtype=statistics_dtype, shard_blocks=shard_blocks, storage=storage,
      root_dtype=root_dtype, root_chunk_size=root_chunk_size)


def scale_by_mbag_ema(
    decay: float = 0.99,
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    root_interval: int = 50,
    newton_schulz_steps: int = 5,
    root_method: RootMethod = "newton_schulz",
    *,
    newton_schulz_tolerance: float | None = None,
    newton_schulz_max_steps: int = 100,
    root_warmup_steps: int = 0,
    dimension_numbers: Any = None,
    grouping: Any = None,
    fuse_blocks: bool | None = None,
    statistics_dtype=None,
    shard_blocks: sharding_lib.ShardBlocks = None,
    storage: storage_lib.Storage = "dense",
    root_dtype=None,
    root_chunk_size: int | None = None,
) -> optax.GradientTransformation:
  r"""MBAG-EMA preconditioner (Algorithm 2): ``g -> G_t^{-1/2} g`` per mini-block.

  .. math::
    G_t = \alpha G_{t-1} + (1 - \alpha) g_t g_t^T,\quad G_0 = \lambda I,\qquad
    p_t = R_t g_t,\ R_t = G_t^{-1/2} \text{ every } T_{sqr} \text{ steps},\ R_0 = \lambda^{-1/2} I.

  The inverse root is the ``Y`` output of the same Newton-Schulz iteration
  run on ``G`` (no Sherman-Morrison). Arguments (``shard_blocks`` too) as in
  :func:`scale_by_mbag`, plus ``decay`` (alpha, in (0, 1)). Non-finite gradients leave G unchanged.

  References:
    Lee, "MBAG", Algorithm 2.
  """
  return _block_preconditioner(
      "ema", block_size=block_size, initial_accumulator_value=initial_accumulator_value,
      decay=decay, root_interval=root_interval, newton_schulz_steps=newton_schulz_steps,
      root_method=root_method, newton_schulz_tolerance=newton_schulz_tolerance,
      newton_schulz_max_steps=newton_schulz_max_steps, root_warmup_steps=root_warmup_steps,
      dimension_numbers=dimension_numbers, grouping=grouping, fuse_blocks=fuse_blocks,
      statistics_dtype=statistics_dtype, shard_blocks=shard_blocks, storage=storage,
      root_dtype=root_dtype, root_chunk_size=root_chunk_size)


def scale_by_mbag_n(
    block_size: int = 32,
    initial_accumulator_value: float = 0.01,
    *,
    dimension_numbers: Any = None,
    grouping: Any = None,
    fuse_blocks: bool | None = None,
    statistics_dtype=None,
    shard_blocks: sharding_lib.ShardBlocks = None,
    storage: storage_lib.Storage = "dense",
) -> optax.GradientTransformation:
  r"""MBAG-N preconditioner: ``g -> H_t g`` per mini-block, with H_t as in Algorithm 1.

  No square root: the gradient is preconditioned by ``G_t^{-1}`` at every step
  (Section IV.B, "MBAG-N"). Arguments as in :func:`scale_by_mbag`.
  """
  return _block_preconditioner(
      "inverse_direct", block_size=block_size,
      initial_accumulator_value=initial_accumulator_value, dimension_numbers=dimension_numbers,
      grouping=grouping, fuse_blocks=fuse_blocks, statistics_dtype=statistics_dtype,
      shard_blocks=shard_blocks, storage=storage)


def find_mbag_state(opt_state: Any) -> ScaleByMBAGState:
  """Returns the (single) :class:`ScaleByMBAGState` inside a possibly nested optax state.

  Raises ValueError if there is none or more than one.
  """
  found = [s for s in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda x: isinstance(x, ScaleByMBAGState)) if isinstance(s, ScaleByMBAGState)]
  if len(found) != 1:
    raise ValueError(f"expected exactly one ScaleByMBAGState in the optimizer state, found {len(found)}")
  return found[0]
