"""The engineering options of the MBAG preconditioners: one record, documented and validated once.

The paper's hyperparameters (learning rate, tau, lambda, beta, T_sqr, T_NS, alpha) are plain
keywords of the public constructors. Everything else -- how the state is stored and sharded,
how the root is computed, in what dtype -- changes the cost, not the algorithm (up to float
rounding), and lives in :class:`MBAGOptions`. The public constructors still take these options as
plain keywords (``mbag.mbag(1e-3, storage="symmetric")``): :func:`with_option_keywords` adds one
keyword-only argument per field to their signatures, so that ``help()``, ``inspect.signature``
and ``optax.inject_hyperparams`` see them, while the fields are written only here.

The module also holds the checks of the numeric hyperparameters, so that every bad value is
reported the same way (``ValueError`` naming the argument and the value) when a transformation
is built, not later as a shape error inside ``jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

from mbag._src import sharding as sharding_lib
from mbag._src import storage as storage_lib

RootMethod = Literal["newton_schulz", "eigh"]
ROOT_METHODS = ("newton_schulz", "eigh")


# ----------------------------------------------------------------------------- value checks


def is_concrete_number(x: Any) -> bool:
  """True for Python / numpy numbers and concrete jax arrays (not tracers)."""
  return isinstance(x, (numbers.Number, np.ndarray, np.generic)) or (
      isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer))


def check(name: str, value: Any, ok: Callable[[float], bool], expected: str) -> None:
  """Raises ValueError naming ``name`` if a concrete ``value`` fails ``ok`` (None: no check).

  Traced values (``optax.inject_hyperparams``) cannot be checked and pass.
  """
  if value is None or not is_concrete_number(value):
    return
  v = np.asarray(value)
  if v.ndim != 0 or not np.isfinite(v) or not ok(v.item()):
    raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_int(name: str, value: Any, minimum: int) -> None:
  """Raises ValueError naming ``name`` unless a concrete ``value`` is an integer >= minimum."""
  if value is None or not is_concrete_number(value):
    return
  v = np.asarray(value)
  if v.ndim != 0 or not np.issubdtype(v.dtype, np.integer) and not float(v).is_integer():
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  if int(v) < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_learning_rate(learning_rate: Any) -> None:
  if not callable(learning_rate):
    check("learning_rate", learning_rate, lambda v: v >= 0, "a finite number >= 0 or a schedule")


def static_int(name: str, value: Any) -> int:
  """``value`` as a Python int; a clear error when ``optax.inject_hyperparams`` traced it."""
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
        f"{name} is traced (optax.inject_hyperparams makes every number a hyperparameter "
        f"array): it fixes the shapes of the state, pass it as static, e.g. "
        f"optax.inject_hyperparams(mbag.mbag, static_args=('{name}',))")
  return int(np.asarray(value))


# ----------------------------------------------------------------------------- the record

# Default size of one chunk of a root computation, by backend: a chunk's dense float32 blocks
# take at most this many bytes (on CPU 512 blocks of 32 x 32, 6472 of 9 x 9). Measured on
# ResNet-56 on a 2-core CPU (docs/performance.md): 2 MiB chunks keep the update's temporary
# buffer at 22 MB (whole buckets: 251 MB) and take the root step from 339-410 ms to 186-222 ms;
# 8 MiB chunks already bring back page faults. Accelerators get larger chunks (not measured).
ROOT_CHUNK_BYTES = {"cpu": 1 << 21}
ROOT_CHUNK_BYTES_ACCELERATOR = 1 << 26


@dataclasses.dataclass(frozen=True)
class MBAGOptions:
  """How an MBAG preconditioner computes and keeps its state (not what it computes).

  None of these changes the algorithm beyond float rounding, except ``root_method`` and the
  Newton-Schulz settings, which decide how accurately the root is computed. Every public
  constructor (``mbag.mbag``, ``mbag.scale_by_mbag``, ...) takes these fields as keywords.

  Attributes:
    root_method: "newton_schulz" (the paper's coupled iteration, Section IV.B) or "eigh"
      (exact, from an eigendecomposition: a reference).
    newton_schulz_tolerance: None (default): ``newton_schulz_steps`` iterations. A number:
      iterate until ``max ||I - Y_k X_k||_F <= tolerance`` over the blocks, at most
      ``newton_schulz_max_steps`` (the fixed count underestimates the root along dominant
      directions of ill-conditioned blocks: docs/numerics.md).
    newton_schulz_max_steps: the cap on iterations with a tolerance.
    fuse_blocks: None (default): leaves with blocks of equal size share one stacked statistic
      (a bucket), so that the update is a few batched operations whatever the number of leaves,
      except that a leaf whose blocks are sharded along a mesh axis keeps a bucket of its own and
      its state stays sharded like it. True: buckets by block size only. False: a bucket per leaf.
    statistics_dtype: dtype of the statistics and of every computation (None: float32, also for
      bfloat16 parameters).
    shard_blocks: None (default: the state follows the parameters' sharding), or a mesh axis name
      or names over which the block axis of the statistics and roots is sharded whatever the
      parameters' sharding (e.g. the data axis with replicated parameters: ZeRO-style). Needs a
      mesh set by ``jax.set_mesh`` when init and update run; see ``mbag/_src/sharding.py``.
    storage: "dense" (default): each block a ``b x b`` matrix. "symmetric": the statistic and its
      root keep only their upper triangles, ``b (b + 1) / 2`` floats per block (45 instead of 81
      for 3x3 conv blocks); same results to float32 rounding; slower on CPU (docs/performance.md).
    root_dtype: dtype the root is kept in (None: ``statistics_dtype``); "bfloat16" halves the
      root's bytes, the direction ``R g`` is still computed in ``statistics_dtype``.
    root_chunk_size: blocks per chunk when the roots are recomputed (a loop over chunks written in
      place). None (default): chunks of 2 MiB of dense blocks on CPU (64 MiB on accelerators), so
      that the root's temporaries are a chunk's (ResNet-56's update: 251 MB -> 22 MB of
      temporaries, docs/performance.md); a bucket whose blocks are sharded is taken whole. 0:
      every bucket at once. Must be static under ``optax.inject_hyperparams``.
  """

  root_method: RootMethod = "newton_schulz"
  newton_schulz_tolerance: float | None = None
  newton_schulz_max_steps: int = 100
  fuse_blocks: bool | None = None
  statistics_dtype: Any = None
  shard_blocks: sharding_lib.ShardBlocks = None
  storage: storage_lib.Storage = "dense"
  root_dtype: Any = None
  root_chunk_size: int | None = None

  def __post_init__(self):
    if self.root_method not in ROOT_METHODS:
      raise ValueError(f"root_method must be one of {ROOT_METHODS}, got {self.root_method!r}")
    check("newton_schulz_tolerance", self.newton_schulz_tolerance, lambda v: v > 0,
          "> 0 or None")
    check_int("newton_schulz_max_steps", self.newton_schulz_max_steps, 1)
    if self.fuse_blocks not in (None, True, False):
      raise ValueError(f"fuse_blocks must be None, True or False, got {self.fuse_blocks!r}")
    storage_lib.check_storage(self.storage)
    storage_lib.float_dtype("statistics_dtype", self.statistics_dtype, jnp.float32)
    storage_lib.float_dtype("root_dtype", self.root_dtype, jnp.float32)
    sharding_lib.normalize(self.shard_blocks)
    chunk = self.root_chunk_size
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer))
                              or chunk < 0):
      raise ValueError(
          f"root_chunk_size must be None or a Python integer >= 0 (it fixes the loop's slices; "
          f"with optax.inject_hyperparams pass it in static_args), got {chunk!r}")

  def root_chunk_blocks(self, b: int, n: int, *, sharded: bool) -> int:
    """Blocks per chunk of the root computation of a bucket of ``n`` blocks of size ``b``.

    ``root_chunk_size`` None: chunks of ``ROOT_CHUNK_BYTES`` of dense float32 blocks (by
    backend), except for a bucket whose blocks are ``sharded`` (``shard_blocks`` or an explicitly
    sharded leaf), which is taken whole so that every device computes its own blocks' roots
    without slicing across devices; 0: the whole bucket; else that many blocks.
    """
    if self.root_chunk_size == 0 or (self.root_chunk_size is None and sharded):
      return n
    if self.root_chunk_size is None:
      limit = ROOT_CHUNK_BYTES.get(jax.default_backend(), ROOT_CHUNK_BYTES_ACCELERATOR)
      return max(1, limit // (4 * b * b))
    return int(self.root_chunk_size)

  def check_unused_root_options(self, name: str) -> None:
    """For a variant without a root (MBAG-N): ValueError naming the root options set away from
    their defaults (they would have no effect)."""
    default = MBAGOptions()
    changed = []
    for key in ROOT_OPTIONS:
      value, default_value = getattr(self, key), getattr(default, key)
      if isinstance(value, jax.core.Tracer) or value is default_value:
        continue
      if value is None or default_value is None or np.any(np.asarray(value) != default_value):
        changed.append(key)
    if changed:
      raise ValueError(f"{name} computes no root: {', '.join(changed)} would have no effect")

  def block_storage(self) -> storage_lib.BlockStorage:
    """The resolved storage: packed or dense, the statistics' and the root's dtypes."""
    dtype = storage_lib.float_dtype("statistics_dtype", self.statistics_dtype, jnp.float32)
    return storage_lib.BlockStorage(storage_lib.check_storage(self.storage), dtype,
                                    storage_lib.float_dtype("root_dtype", self.root_dtype, dtype))


# The options that only a variant with a root uses.
ROOT_OPTIONS = ("root_method", "newton_schulz_tolerance", "newton_schulz_max_steps", "root_dtype",
                "root_chunk_size")
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(MBAGOptions))


def with_option_keywords(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn(..., options: MBAGOptions)`` as a function taking each option as a plain keyword.

  The wrapper's signature is ``fn``'s without ``options`` plus one keyword-only argument per
  :class:`MBAGOptions` field (with its default), so the fields are listed once (here) and every
  constructor shows them to ``help()``, ``inspect.signature`` and ``optax.inject_hyperparams``.
  """
  signature = inspect.signature(fn)
  if "options" not in signature.parameters:
    raise TypeError(f"{fn.__name__} must take an `options` argument")
  kept = [p for p in signature.parameters.values() if p.name != "options"]
  added = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                             annotation=f.type) for f in dataclasses.fields(MBAGOptions)]

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    if "options" in kwargs:
      raise TypeError(f"{fn.__name__}() takes the options as keywords (e.g. storage='symmetric'); "
                      f"an MBAGOptions record goes to mbag.scale_by_block_preconditioner")
    options = MBAGOptions(**{k: kwargs.pop(k) for k in OPTION_NAMES if k in kwargs})
    return fn(*args, options=options, **kwargs)

  wrapper.__signature__ = signature.replace(parameters=kept + added)
  return wrapper
