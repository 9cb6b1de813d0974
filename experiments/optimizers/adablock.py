"""AdaBlock (Yun, Lozano & Yang, AISTATS 2022) as an optax GradientTransformation.

Adam whose second moment is block-diagonal: every block of ``b`` coordinates
keeps an exponential moving average of ``g g^T`` and the update is
``(V_hat^{1/2} + eps I)^{-1} m_hat`` per block, by an eigendecomposition.

Grouping follows the authors' implementation (``AdaBlockW`` in their supplement):

* dense kernel, flax ``(n_in, m_out)``: for each input neuron, blocks of
  ``block_size`` consecutive output neurons (their PyTorch ``(out, in)`` weight is
  transposed and cut into groups of ``groups`` entries: column-wise ``vec(W)`` of the
  paper's ``W in R^{m x n}``, where MBAG cuts rows). ``block_size > m_out`` uses
  ``m_out``; a remainder is zero-padded per row (their reshape would let a group
  straddle two input neurons).
* conv kernel ``(kh, kw, c_in, c_out)`` with ``kh*kw > 1``: one block of the
  ``kh*kw`` taps per ``(c_in, c_out)`` pair (``block_size`` is ignored, as theirs);
  a 1x1 conv kernel is diagonal (plain Adam), as theirs.
* vectors and scalars (biases, BatchNorm): diagonal (plain Adam), as theirs.
* other leaves: flattened and cut into consecutive groups of ``block_size``.

Two optimizers. :func:`adablock` (modern): optax Adam's epsilon placement, ``eps`` 1e-8,
no damping of the blocks; the run's ``config.weight_decay`` is an L2 term added to the
gradient before the preconditioner (NOT the authors' decoupled decay).
:func:`adablock_paper` follows the authors' ``AdaBlockW`` (the code the paper ran "as it
is"): ``delta`` = 1e-4 added to the square roots of the block eigenvalues and ``eps`` =
1e-4 to those of the diagonal parameters, both on the uncorrected moments (step size
``lr sqrt(1-b2^t)/(1-b1^t)``), ``1e-6 I`` added to each block's ``V`` before the
decomposition, decoupled weight decay ``theta *= 1 - lr * wd``. Not reproduced from
that code: its conv rule reads the kernel size from the first spatial axis only
(square kernels; a ``1 x k`` kernel would be diagonal there, here its ``k`` taps form
the block), and its groups of a dense weight straddle input neurons when ``block_size``
does not divide the outputs (here padded per neuron).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mbag
from experiments.optimizers import _checks

Array = jax.Array
# (key path, shape) -> BlockSpec | int | None, as mbag's grouping.
Grouping = Callable[[tuple[Any, ...], tuple[int, ...]], Any]
EpsMode = Literal["bias_corrected", "raw"]
EPS_MODES = ("bias_corrected", "raw")


class ScaleByAdaBlockState(NamedTuple):
  """State of :func:`scale_by_adablock`.

  Attributes:
    count: [] int32. Number of updates so far (t).
    mu: per bucket of the block layout, [n, b] float32: first moment ``m_t``.
    nu: per bucket, [n, b, b] float32: block second moment ``V_t`` (EMA of ``g g^T``).
      Padded coordinates are zero.
    preconditioner: per bucket, [n, b, b] float32: ``(V_hat^{1/2} + eps I)^{-1}``
      computed last; empty when ``root_interval == 1`` (recomputed every step) and
      for diagonal buckets (``b == 1``, always fresh).
  """

  count: Array
  mu: tuple[Array, ...]
  nu: tuple[Array, ...]
  preconditioner: tuple[Array, ...]


def adablock_block_spec(shape: tuple[int, ...], block_size: int) -> mbag.BlockSpec:
  """The authors' grouping for a leaf of ``shape`` (flax layouts); see the module docstring."""
  shape = tuple(int(d) for d in shape)
  size = max(math.prod(shape), 1)
  if len(shape) <= 1 or (len(shape) == 4 and shape[0] * shape[1] == 1):
    return mbag.BlockSpec(perm=tuple(range(len(shape))), row_size=size, block_size=1)
  if len(shape) == 4:
    taps = shape[0] * shape[1]
    return mbag.BlockSpec(perm=(3, 2, 0, 1), row_size=taps, block_size=taps)
  if len(shape) == 2:
    m_out = shape[1]
    return mbag.BlockSpec(perm=(0, 1), row_size=m_out, block_size=min(block_size, m_out))
  return mbag.BlockSpec(perm=tuple(range(len(shape))), row_size=size,
                        block_size=min(block_size, size))


def block_inverse_root(V: Array, eps, eps_root, relative_floor) -> Array:
  r"""``((V + eps_root I)^{1/2} + eps I)^{-1}`` for a batch [n, b, b] of PSD blocks.

  Eigenvalues of ``V`` below ``relative_floor * lambda_max(V)`` are raised to it:
  float32 ``eigh`` resolves eigenvalues only down to about ``b * eps_f32 *
  lambda_max``, and with a tiny ``eps`` the gradient's rounding-level component
  along a numerically null eigenvector would otherwise be multiplied by ``1/eps``
  (measured on a rank-one block of 32 with ``|g| = 10`` and ``eps = 1e-8``: error
  norm 180 against an exact update of norm 1 without the floor, 8e-5 with it).
  With ``root_interval > 1`` the floor also bounds how much a stale root computed
  from a rank-deficient ``V`` amplifies directions absent from it
  (``1/sqrt(floor * lambda_max)`` instead of ``1/eps``).
  """
  V = 0.5 * (V + jnp.swapaxes(V, -1, -2))
  w, Q = jnp.linalg.eigh(V)
  top = jnp.maximum(w[..., -1:], 0.0)
  w = jnp.maximum(w, relative_floor * top) + eps_root
  inv = 1.0 / (jnp.sqrt(jnp.maximum(w, 0.0)) + eps)
  return jnp.einsum("nij,nj,nkj->nik", Q, inv, Q)


def scale_by_adablock(
    block_size: int = 32,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    root_interval: int = 1,
    *,
    eps_root: float = 0.0,
    relative_eigenvalue_floor: float | None = None,
    grouping: Grouping | None = None,
    fuse_blocks: bool = True,
    eps_mode: EpsMode = "bias_corrected",
    diagonal_eps: float | None = None,
    block_damping: float = 0.0,
) -> optax.GradientTransformation:
  r"""AdaBlock preconditioner: Adam with a block-diagonal second moment.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    V_t = \beta_2 V_{t-1} + (1-\beta_2) g_t g_t^\top \ \text{(per block)},\\
    \hat m_t = \frac{m_t}{1-\beta_1^t},\quad \hat V_t = \frac{V_t}{1-\beta_2^t},\quad
    u_t = \big((\hat V_t + \epsilon_{root} I)^{1/2} + \epsilon I\big)^{-1} \hat m_t.

  The bias correction and ``eps`` follow ``optax.scale_by_adam``, so that blocks
  of size 1 reproduce ``optax.adam`` exactly. (The authors write
  ``lr * sqrt(1-b2^t)/(1-b1^t) * (V^{1/2} + delta I)^{-1} m``, i.e. their delta is
  this ``eps`` times ``sqrt(1-b2^t)``.) The matrix ``(...)^{-1}`` is recomputed by
  ``eigh`` every ``root_interval`` steps (1: every step, as the authors do;
  counted from the first step) and applied to the current ``m_hat`` in between.

  Args:
    block_size: tau, block size for dense kernels and other leaves (see
      :func:`adablock_block_spec`).
    b1, b2: EMA decays of the first and second moments, in [0, 1).
    eps: added to the eigenvalues of ``V_hat^{1/2}`` (Adam's epsilon).
    root_interval: recompute the preconditioner every this many steps.
    eps_root: added to ``V_hat`` before the root (``optax.adam``'s eps_root; the
      authors add ``1e-6 I`` to ``V``).
    relative_eigenvalue_floor: eigenvalues of ``V_hat`` are raised to this
      fraction of the block's largest eigenvalue before the root (float32
      ``eigh`` accuracy); None: ``b * finfo(float32).eps`` for blocks of size b.
      No effect on diagonal blocks.
    grouping: optional ``(key_path, shape) -> BlockSpec | int | None`` overriding
      the AdaBlock grouping per leaf (an int: the default spec with that block size).
    fuse_blocks: stack blocks of equal size from all leaves into one batched array.
    eps_mode: "bias_corrected" (default, optax's Adam): ``eps``, ``diagonal_eps`` and
      ``eps_root`` act on ``m_hat``, ``V_hat`` as in the formula above. "raw" (the
      authors' code and PyTorch's Adam): they act on the uncorrected moments,
      ``u = sqrt(1-b2^t)/(1-b1^t) ((V + eps_root I)^{1/2} + eps I)^{-1} m``, i.e. ``eps``
      is divided by ``sqrt(1-b2^t)`` and ``eps_root`` by ``1-b2^t`` in the formula above.
    diagonal_eps: ``eps`` of blocks of size 1 (biases, BatchNorm, 1x1 convs); None: ``eps``.
      (The authors use ``delta`` for blocks and ``eps`` for diagonal parameters.)
    block_damping: added to ``V`` (uncorrected, both modes) of blocks of size > 1 before
      the decomposition (the authors' ``1e-6 I``); diagonal blocks are not damped.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`ScaleByAdaBlockState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from experiments.optimizers.adablock import scale_by_adablock
    >>> tx = optax.chain(scale_by_adablock(block_size=2), optax.scale(-1e-3))
    >>> params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state)

  References:
    Yun, Lozano & Yang, "AdaBlock: SGD with Practical Block Diagonal Matrix
    Adaptation for Deep Learning", AISTATS 2022.
  """
  block_size = _checks.check_int("block_size", block_size, 1)
  root_interval = _checks.check_int("root_interval", root_interval, 1)
  _checks.check_number("b1", b1, lambda v: 0 <= v < 1, "in [0, 1)")
  _checks.check_number("b2", b2, lambda v: 0 <= v < 1, "in [0, 1)")
  _checks.check_number("eps", eps, lambda v: v >= 0, ">= 0")
  _checks.check_number("eps_root", eps_root, lambda v: v >= 0, ">= 0")
  _checks.check_number("block_damping", block_damping, lambda v: v >= 0, ">= 0")
  _checks.check_choice("eps_mode", eps_mode, EPS_MODES)
  if diagonal_eps is not None:
    _checks.check_number("diagonal_eps", diagonal_eps, lambda v: v >= 0, ">= 0 or None")
  if relative_eigenvalue_floor is not None:
    _checks.check_number("relative_eigenvalue_floor", relative_eigenvalue_floor,
                         lambda v: 0 <= v < 1, "in [0, 1) or None")
  cached = root_interval > 1
  eps_diag = eps if diagonal_eps is None else diagonal_eps

  def spec_for(path, shape):
    choice = grouping(path, shape) if grouping is not None else None
    if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
      return adablock_block_spec(shape, int(choice))
    return choice if choice is not None else adablock_block_spec(shape, block_size)

  def layout_of(tree):
    return mbag.blocks.make_layout(tree, block_size, spec_for, fuse_blocks)

  def floor_for(b):
    if relative_eigenvalue_floor is not None:
      return relative_eigenvalue_floor
    return b * float(jnp.finfo(jnp.float32).eps)

  def init_fn(params):
    layout = layout_of(params)
    masks = mbag.blocks.bucket_present_masks(params, layout)
    mu = tuple(jnp.zeros(m.shape, jnp.float32) for m in masks)
    nu = tuple(jnp.zeros(m.shape + (m.shape[1],), jnp.float32) for m in masks)
    pre = tuple(jnp.zeros(m.shape + (m.shape[1],), jnp.float32)
                for m in masks if m.shape[1] > 1) if cached else ()
    return ScaleByAdaBlockState(jnp.zeros([], jnp.int32), mu, nu, pre)

  def update_fn(updates, state, params=None):
    del params
    layout = layout_of(updates)
    grads = [g.astype(jnp.float32) for g in mbag.blocks.tree_to_buckets(updates, layout)]
    count = optax.safe_int32_increment(state.count)
    t = count.astype(jnp.float32)
    bc1 = 1.0 - jnp.asarray(b1, jnp.float32) ** t
    bc2 = 1.0 - jnp.asarray(b2, jnp.float32) ** t
    is_root_step = (count - 1) % root_interval == 0
    # "raw": the constants act on the uncorrected moments (see eps_mode).
    raw = eps_mode == "raw"
    eps_t = eps / jnp.sqrt(bc2) if raw else eps
    eps_diag_t = eps_diag / jnp.sqrt(bc2) if raw else eps_diag
    eps_root_t = (eps_root / bc2 if raw else eps_root) + block_damping / bc2
    mus, nus, pres, directions = [], [], [], []
    pre_iter = iter(state.preconditioner)
    for g, m, V, b in zip(grads, state.mu, state.nu, layout.block_sizes):
      m = b1 * m + (1.0 - b1) * g
      V = b2 * V + (1.0 - b2) * (g[:, :, None] * g[:, None, :])
      mus.append(m)
      nus.append(V)
      m_hat = m / bc1
      if b == 1:
        v_hat = V[:, :, 0] / bc2
        root_eps = eps_root / bc2 if raw else eps_root
        directions.append(m_hat / (jnp.sqrt(v_hat + root_eps) + eps_diag_t))
        continue
      fresh = lambda V=V, b=b: block_inverse_root(V / bc2, eps_t, eps_root_t, floor_for(b))  # noqa: E731
      if cached:
        P = jax.lax.cond(is_root_step, lambda _, f=fresh: f(), lambda old: old, next(pre_iter))
        pres.append(P)
      else:
        P = fresh()
      directions.append(jnp.einsum("nij,nj->ni", P, m_hat))
    out = mbag.blocks.buckets_to_tree(directions, layout, updates)
    out = jax.tree_util.tree_map(lambda n, u: n.astype(u.dtype), out, updates)
    return out, ScaleByAdaBlockState(count, tuple(mus), tuple(nus), tuple(pres))

  return optax.GradientTransformation(init_fn, update_fn)


def adablock(
    learning_rate: optax.ScalarOrSchedule,
    *,
    block_size: int = 32,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    root_interval: int = 1,
    eps_root: float = 0.0,
    relative_eigenvalue_floor: float | None = None,
    grouping: Grouping | None = None,
    fuse_blocks: bool = True,
) -> optax.GradientTransformation:
  r"""AdaBlock: ``theta_t = theta_{t-1} - eta_t u_t`` with ``u_t`` from :func:`scale_by_adablock`.

  Args:
    learning_rate: eta, a float or an optax schedule.
    block_size, b1, b2, eps, root_interval, eps_root, relative_eigenvalue_floor,
    grouping, fuse_blocks: see :func:`scale_by_adablock`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Yun, Lozano & Yang, "AdaBlock", AISTATS 2022.
  """
  _checks.check_learning_rate(learning_rate)
  return optax.chain(
      scale_by_adablock(block_size, b1, b2, eps, root_interval, eps_root=eps_root,
                        relative_eigenvalue_floor=relative_eigenvalue_floor,
                        grouping=grouping, fuse_blocks=fuse_blocks),
      optax.scale_by_learning_rate(learning_rate))


def adablock_paper(
    learning_rate: optax.ScalarOrSchedule,
    *,
    block_size: int = 32,
    b1: float = 0.9,
    b2: float = 0.999,
    delta: float = 1e-4,
    eps: float = 1e-4,
    block_damping: float = 1e-6,
    weight_decay: float = 0.0,
    root_interval: int = 1,
    fuse_blocks: bool = True,
) -> optax.GradientTransformation:
  r"""AdaBlock as the authors' ``AdaBlockW``: their epsilons, damping and decoupled weight decay.

  .. math::
    	heta_t = (1 - \eta_t \omega)	heta_{t-1} - \eta_t rac{\sqrt{1-eta_2^t}}{1-eta_1^t}
      ig((V_t + 10^{-6} I)^{1/2} + \delta Iig)^{-1} m_t
    \quad	ext{(blocks; diagonal parameters: } m_t / (\sqrt{v_t} + \epsilon)	ext{)}.

  Args:
    learning_rate: eta, a float or an optax schedule.
    block_size: the authors' ``groups`` (the paper: 32; their default 10).
    b1, b2: their ``betas``.
    delta: added to the square roots of the eigenvalues of a block (their ``delta``).
    eps: added to ``sqrt(v)`` of diagonal parameters (their ``eps``).
    block_damping: added to ``V`` of a block before its decomposition (their ``1e-6 I``).
    weight_decay: omega, decoupled (``theta *= 1 - lr * omega``; the config's weight decay).
    root_interval: 1 (every step), as theirs; larger values reuse the preconditioner.
    fuse_blocks: see :func:`scale_by_adablock`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Yun, Lozano & Yang, "AdaBlock", AISTATS 2022 (``AdaBlockW`` of their code).
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_number("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  return optax.chain(
      scale_by_adablock(block_size, b1, b2, delta, root_interval, eps_mode="raw",
                        diagonal_eps=eps, block_damping=block_damping,
                        relative_eigenvalue_floor=0.0, fuse_blocks=fuse_blocks),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate))
