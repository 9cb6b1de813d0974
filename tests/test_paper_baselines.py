"""The ``*_paper`` baselines against float64 NumPy versions of their reference codes.

Shampoo: moskomule/shampoo.pytorch ``Shampoo.step``, rewritten here on PyTorch-layout arrays
with the same sequence of in-place transposes and views (flax leaves are transposed to it).
AdaBlock: the authors' ``AdaBlockW.step`` (uncorrected moments, delta / eps / 1e-6 I,
decoupled weight decay). KFAC: kfac-jax configured as alecwangcq/KFAC-Pytorch; its weight decay
(after preconditioning, from step 20 TCov on) and its KL clip are checked on a tiny MLP.
Tolerances come from the conditioning of the matrices whose roots are taken.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import models
from experiments import tasks
from experiments.optimizers import adablock as adablock_lib
from experiments.optimizers import kfac_paper as kfac_paper_lib
from experiments.optimizers import shampoo_paper as shampoo_paper_lib

F32_EPS = float(np.finfo(np.float32).eps)
# flax shape -> the transposition giving the PyTorch layout of the same weight
TO_TORCH = {2: (1, 0), 4: (3, 2, 0, 1), 1: (0,)}


def to_torch(a):
  return np.transpose(a, TO_TORCH[a.ndim])


def from_torch(a):
  return np.transpose(a, np.argsort(TO_TORCH[a.ndim]))


def matrix_power(S, power):
  w, Q = np.linalg.eigh(S)
  return (Q * w**power) @ Q.T


def assert_follows(tx, grads, params, want, tol):
  """Applies ``tx`` to ``grads`` from ``params`` (flax layouts); after every step the params must
  be within ``tol`` of the reference's (PyTorch layouts), relative to the distance travelled.

  Returns the final optimizer state.
  """
  p = {k: jnp.asarray(v) for k, v in params.items()}
  state = tx.init(p)
  step = jax.jit(tx.update)
  for t, g in enumerate(grads):
    u, state = step({k: jnp.asarray(v) for k, v in g.items()}, state, p)
    p = optax.apply_updates(p, u)
    for k in params:
      ref = from_torch(want[t][k])
      err = np.linalg.norm(np.asarray(p[k]) - ref) / np.linalg.norm(ref - params[k])
      assert err < tol, (t, k, err, tol)
  return state


# --------------------------------------------------------------------------------- Shampoo


def shampoo_reference(grads, params, *, lr, momentum, weight_decay, epsilon, update_freq):
  """float64 Shampoo.step of the reference, on PyTorch-layout arrays; returns params per step."""
  params = {k: np.array(v, np.float64) for k, v in params.items()}
  state, history, conds = {}, [], []
  for step_grads in grads:
    for name, g in step_grads.items():
      grad = np.array(g, np.float64)
      order, original = grad.ndim, grad.shape
      if name not in state:
        state[name] = dict(step=0, buf=grad.copy(),
                           pre=[epsilon * np.eye(d) for d in grad.shape],
                           inv=[np.zeros((d, d)) for d in grad.shape])
      st = state[name]
      grad = (1 - momentum) * grad + momentum * st["buf"]
      grad = grad + weight_decay * params[name]
      for dim_id, dim in enumerate(original):
        grad = np.swapaxes(grad, 0, dim_id)  # transpose_(0, dim_id), then contiguous + view
        transposed = grad.shape
        grad = grad.reshape(dim, -1)
        st["pre"][dim_id] = st["pre"][dim_id] + grad @ grad.T
        if st["step"] % update_freq == 0:
          st["inv"][dim_id] = matrix_power(st["pre"][dim_id], -1 / order)
          conds.append(np.linalg.cond(st["pre"][dim_id]))
        if dim_id == order - 1:
          grad = (grad.T @ st["inv"][dim_id]).reshape(original)
        else:
          grad = (st["inv"][dim_id] @ grad).reshape(transposed)
      st["step"] += 1
      st["buf"] = grad
      params[name] = params[name] - lr * grad
    history.append({k: v.copy() for k, v in params.items()})
  return history, max(conds)


SHAMPOO_SHAPES = {"dense": (5, 3), "conv": (2, 3, 2, 4), "bias": (4,)}  # flax layouts


@pytest.mark.parametrize("update_freq", [1, 3])
def test_shampoo_paper_matches_the_reference_code(update_freq):
  """6 steps, momentum 0.9, weight decay 0.1: a dense kernel (roots -1/2), a 2x3 conv kernel
  (four factors at -1/4, axes in PyTorch order), a bias (a full inverse).

  float32 eigh perturbs the factors' eigenvalues by ~d eps lambda_max; the roots magnify the
  relative error of the smallest by at most kappa, so the budget is 10 d kappa eps_f32.
  """
  rng = np.random.default_rng(0)
  grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in SHAMPOO_SHAPES.items()}
           for _ in range(6)]
  params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAMPOO_SHAPES.items()}
  hp = dict(momentum=0.9, weight_decay=0.1, epsilon=0.1)
  want, kappa = shampoo_reference([{k: to_torch(v) for k, v in g.items()} for g in grads],
                                  {k: to_torch(v) for k, v in params.items()}, lr=0.05,
                                  update_freq=update_freq, **hp)
  tol = 10 * max(SHAMPOO_SHAPES["dense"]) * kappa * F32_EPS
  assert tol < 1e-2
  tx = shampoo_paper_lib.shampoo_paper(0.05, root_interval=update_freq, **hp)
  state = assert_follows(tx, grads, params, want, tol)
  assert int(state[0].num_root_fallbacks) == 0


def test_shampoo_paper_roots_are_one_over_the_order():
  """One step, no momentum: a bias is preconditioned by (eps I + g g^T)^{-1}, not its -1/2 root."""
  g = np.array([3.0, 4.0], np.float32)
  tx = shampoo_paper_lib.scale_by_shampoo_paper(momentum=0.0, epsilon=1.0)
  u, _ = tx.update({"b": jnp.asarray(g)}, tx.init({"b": jnp.zeros(2)}))
  # (I + g g^T)^{-1} g = g / (1 + |g|^2) = g / 26; the -1/2 root would give g / sqrt(26).
  np.testing.assert_allclose(np.asarray(u["b"]), g / 26.0, rtol=1e-6)


# --------------------------------------------------------------------------------- AdaBlock


def adablock_w_reference(grads, params, *, lr, betas, delta, eps, weight_decay, groups):
  """float64 AdaBlockW.step on PyTorch-layout arrays (dense (out, in), conv (out, in, k, k), 1-D)."""
  b1, b2 = betas
  params = {k: np.array(v, np.float64) for k, v in params.items()}
  state, history = {}, []
  for t, step_grads in enumerate(grads, start=1):
    for name, g in step_grads.items():
      g = np.array(g, np.float64)
      p = params[name] * (1 - lr * weight_decay)
      st = state.setdefault(name, {"m": np.zeros_like(g), "v": None})
      st["m"] = b1 * st["m"] + (1 - b1) * g
      step_size = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
      if g.ndim == 1:
        st["v"] = (b2 * st["v"] if st["v"] is not None else 0) + (1 - b2) * g * g
        p = p - step_size * st["m"] / (np.sqrt(st["v"]) + eps)
      else:
        if g.ndim == 2:
          size = min(groups, g.shape[0])
          cut = lambda a: a.T.reshape(-1, size)  # noqa: E731  (in, out) rows, groups of outputs
          uncut = lambda a: a.reshape(g.shape[1], g.shape[0]).T  # noqa: E731
        else:
          size = g.shape[2] * g.shape[3]
          cut = lambda a: a.reshape(-1, size)  # noqa: E731  taps of one (out, in) pair
          uncut = lambda a: a.reshape(g.shape)  # noqa: E731
        gg = cut(g)
        outer = np.einsum("ni,nj->nij", gg, gg)
        st["v"] = (b2 * st["v"] if st["v"] is not None else 0) + (1 - b2) * outer
        w, Q = np.linalg.eigh(st["v"] + 1e-6 * np.eye(size))
        inv = np.einsum("nij,nj,nkj->nik", Q, step_size / (np.sqrt(w) + delta), Q)
        p = uncut(cut(p) - np.einsum("nij,nj->ni", inv, cut(st["m"])))
      params[name] = p
    history.append({k: v.copy() for k, v in params.items()})
  return history


def test_adablock_paper_matches_the_authors_code():
  """7 steps with decoupled weight decay: a dense kernel cut into groups of 3 outputs (6 outputs,
  no remainder, where the authors' reshape and this grouping agree), 3x3 conv taps, a bias.

  The 1e-6 I damping bounds the blocks' condition number by lambda_max / 1e-6; the inverse
  root turns float32 eigh errors into <= 10 sqrt(kappa) eps_f32 relative error of the step.
  """
  shapes = {"dense": (4, 6), "conv": (3, 3, 2, 2), "bias": (6,)}
  rng = np.random.default_rng(1)
  grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
           for _ in range(7)]
  params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
  hp = dict(delta=1e-4, eps=1e-4, weight_decay=0.1)
  want = adablock_w_reference([{k: to_torch(v) for k, v in g.items()} for g in grads],
                              {k: to_torch(v) for k, v in params.items()}, lr=1e-2,
                              betas=(0.9, 0.999), groups=3, **hp)
  # worst condition number of V + 1e-6 I: largest eigenvalue of (1 - b2) g g^T sums ~ 1e-2
  kappa = 9 * 0.001 * 7 * 9 / 1e-6
  assert_follows(adablock_lib.adablock_paper(1e-2, block_size=3, **hp), grads, params, want,
                 10 * np.sqrt(kappa) * F32_EPS)


def test_adablock_paper_differs_from_the_modern_variant_by_its_epsilons():
  """Step 1 on a bias g: the authors' update is g / (|g| + eps / sqrt(1 - b2)), optax's
  g / (|g| + eps); with eps = 1e-4 and |g| = 1e-3 they differ by a factor 1.0032 / 1.1 ..."""
  g = jnp.full([1], 1e-3)
  paper = adablock_lib.adablock_paper(1.0, eps=1e-4)
  modern = adablock_lib.adablock(1.0, eps=1e-4)
  u_paper, _ = paper.update({"b": g}, paper.init({"b": jnp.zeros(1)}), {"b": jnp.zeros(1)})
  u_modern, _ = modern.update({"b": g}, modern.init({"b": jnp.zeros(1)}))
  np.testing.assert_allclose(-float(u_paper["b"][0]), 1e-3 / (1e-3 + 1e-4 / np.sqrt(1e-3)),
                             rtol=1e-5)
  np.testing.assert_allclose(-float(u_modern["b"][0]), 1e-3 / (1e-3 + 1e-4), rtol=1e-5)


# --------------------------------------------------------------------------------- KFAC


def _mlp_case():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((16, 6)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 16), jnp.int32)
  model = models.MLP(hidden_sizes=(5,), num_classes=3)
  params, state = tasks.init_model(model, jax.random.PRNGKey(0), x)
  loss_fn = tasks.make_loss_fn(tasks.get_task("digits_mlp"), model)
  return loss_fn, params, state, {"inputs": x, "targets": y}


def _run_kfac(steps, **kw):
  loss_fn, params, model_state, batch = _mlp_case()
  opt = kfac_paper_lib.kfac_paper(loss_fn, 0.1, curvature_update_period=1,
                                  inverse_update_period=1, **kw)
  rng = jax.random.PRNGKey(1)
  opt_state = opt.init(params, model_state, rng, batch)
  history = [params]
  for _ in range(steps):
    params, model_state, opt_state, _ = opt.step(jax.tree.map(jnp.copy, params), model_state,
                                                 opt_state, rng, batch)
    history.append(params)
  return history, loss_fn, batch


def test_kfac_paper_weight_decay_starts_after_20_curvature_periods_and_skips_the_preconditioner():
  """Same batch and rng with and without weight decay: identical for 20 steps (TCov = 1), then
  step 21 differs by exactly -lr * wd * theta_20 (decay added after preconditioning and
  clipping); an L2 term in the objective would differ from step 1 and be preconditioned."""
  wd = 0.05
  with_wd, _, _ = _run_kfac(21, weight_decay=wd)
  without, _, _ = _run_kfac(21)
  for t in range(21):
    for a, b in zip(jax.tree.leaves(with_wd[t]), jax.tree.leaves(without[t])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b, p in zip(jax.tree.leaves(with_wd[21]), jax.tree.leaves(without[21]),
                     jax.tree.leaves(with_wd[20])):
    np.testing.assert_allclose(np.asarray(a) - np.asarray(b), -0.1 * wd * np.asarray(p),
                               atol=1e-6)


def test_kfac_paper_clips_the_first_step_by_kl():
  """With kl_clip k the first step is nu times the unclipped one, nu = sqrt(k / (lr^2 <v, g>)),
  where -lr v is the unclipped step (zero velocity) and g the gradient at theta_0.

  The steps are read as float32 differences theta_1 - theta_0, exact to 2 eps_f32 |theta|."""
  free, loss_fn, batch = _run_kfac(1, kl_clip=1e9)
  clipped, _, _ = _run_kfac(1, kl_clip=1e-8)
  theta0 = free[0]
  g = jax.grad(lambda p: loss_fn(p, {}, None, batch)[0])(theta0)
  step_free = jax.tree.map(lambda a, b: a - b, free[1], theta0)
  step_clip = jax.tree.map(lambda a, b: a - b, clipped[1], theta0)
  v_dot_g = -sum(float(jnp.vdot(s, gg)) for s, gg in
                 zip(jax.tree.leaves(step_free), jax.tree.leaves(g))) / 0.1
  nu = np.sqrt(1e-8 / (0.1**2 * v_dot_g))
  assert nu < 0.1
  rounding = 2 * F32_EPS * max(float(jnp.abs(p).max()) for p in jax.tree.leaves(theta0))
  for a, b in zip(jax.tree.leaves(step_clip), jax.tree.leaves(step_free)):
    np.testing.assert_allclose(np.asarray(a), nu * np.asarray(b), rtol=1e-3, atol=rounding)
