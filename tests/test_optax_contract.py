"""The contract any optax optimizer should honour, checked for mbag, mbag_ema and mbag_n."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mbag

# Newton-Schulz to a tolerance: with the paper's fixed 5 steps the root is far too small along
# the dominant direction of nearly rank-one statistics (see test_five_newton_schulz_steps_stall).
_ROOT = dict(root_interval=5, root_warmup_steps=5, newton_schulz_tolerance=1e-3)
FACTORIES = {
    "mbag": functools.partial(mbag.mbag, block_size=2, **_ROOT),
    "mbag_ema": functools.partial(mbag.mbag_ema, block_size=2, **_ROOT),
    "mbag_n": functools.partial(mbag.mbag_n, block_size=2),
}


def run(tx, params, loss, steps):
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    g = jax.grad(loss)(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  for _ in range(steps):
    params, state = step(params, state)
  return params, state


def parabola(p):
  return jnp.sum((p["x"] - jnp.array([1.0, -2.0, 3.0])) ** 2)


def rosenbrock(p):
  x, y = p["xy"][0], p["xy"][1]
  return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


@pytest.mark.parametrize("name,lr", [("mbag", 0.05), ("mbag_ema", 0.01)])
def test_converges_on_parabola(name, lr):
  params, _ = run(FACTORIES[name](lr), {"x": jnp.zeros(3)}, parabola, 600)
  np.testing.assert_allclose(params["x"], [1.0, -2.0, 3.0], atol=2e-2)


def test_mbag_n_decreases_parabola():
  """MBAG-N preconditions with G^{-1} ~ 1/(t g^2): its steps shrink like 1/t, so it is slow."""
  params, _ = run(FACTORIES["mbag_n"](0.2), {"x": jnp.zeros(3)}, parabola, 3000)
  assert float(parabola(params)) < 0.05  # from 14.0


@pytest.mark.parametrize("name,lr,steps", [("mbag", 1e-2, 4000), ("mbag_ema", 2e-3, 4000)])
def test_converges_on_rosenbrock(name, lr, steps):
  """From (-1, 1) to the minimiser (1, 1); the root warm-up avoids the stale initial root."""
  params, _ = run(FACTORIES[name](lr), {"xy": jnp.array([-1.0, 1.0])}, rosenbrock, steps)
  assert float(rosenbrock(params)) < 1e-3
  np.testing.assert_allclose(params["xy"], [1.0, 1.0], atol=0.05)


def test_five_newton_schulz_steps_stall_on_rank_one_statistics():
  """On a parabola every gradient of the first block is parallel to (1, -2): G is nearly rank one,
  its normalised small eigenvalue is tiny and 5 iterations leave the root ~100x too small there."""
  kw = dict(block_size=2, root_interval=5, root_warmup_steps=5)
  stalled, s5 = run(mbag.mbag(0.05, **kw), {"x": jnp.zeros(3)}, parabola, 600)
  converged, _ = run(mbag.mbag(0.05, newton_schulz_tolerance=1e-3, **kw), {"x": jnp.zeros(3)},
                     parabola, 600)
  assert float(parabola(stalled)) > 100 * float(parabola(converged))
  diag = mbag.find_mbag_state(s5).diagnostics
  # The state says so: the worst-direction error is near 1, the residual alone hides it.
  assert float(diag.root_error) > 0.5
  assert float(diag.root_residual) < 1e-3


def test_paper_defaults_diverge_on_rosenbrock_without_warmup():
  """The trap: 49 steps of lambda^{-1/2} I (10x the learning rate) before the first root."""
  params, _ = run(mbag.mbag(1e-3, block_size=2), {"xy": jnp.array([-1.0, 1.0])}, rosenbrock, 60)
  assert not float(rosenbrock(params)) < 1.0


@pytest.mark.parametrize("name", list(FACTORIES))
def test_compiles_once(name):
  tx = FACTORIES[name](0.1)
  params = {"a": jnp.ones((3, 2)), "b": jnp.ones(2)}
  state = tx.init(params)
  traces = []

  @jax.jit
  def update(g, s, p):
    traces.append(1)
    return tx.update(g, s, p)

  for i in range(12):  # spans root and non-root steps
    _, state = update(jax.tree.map(lambda x: x * (i + 1), params), state, params)
  assert len(traces) == 1


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_preserves_dtypes_and_structure(name, dtype):
  tx = FACTORIES[name](0.1)
  params = {"a": jnp.ones((3, 2), dtype), "nested": {"s": jnp.asarray(1.0, dtype)}}
  state = tx.init(params)
  u, state2 = jax.jit(tx.update)(params, state, params)
  chex.assert_trees_all_equal_dtypes(u, params)
  chex.assert_trees_all_equal_shapes(u, params)
  chex.assert_trees_all_equal_structs(state, state2)
  chex.assert_trees_all_equal_dtypes(state, state2)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_accepts_schedules(name):
  sched = optax.piecewise_constant_schedule(0.1, {2: 0.0})
  tx = FACTORIES[name](sched)
  params = {"a": jnp.ones(4)}
  state = tx.init(params)
  upd = jax.jit(tx.update)
  u1, state = upd(params, state, params)
  u2, state = upd(params, state, params)
  u3, state = upd(params, state, params)
  assert float(jnp.abs(u1["a"]).sum()) > 0 and float(jnp.abs(u2["a"]).sum()) > 0
  np.testing.assert_array_equal(u3["a"], 0.0)  # lr dropped to 0 at step 2 (0-based)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_inject_hyperparams(name):
  kwargs = dict(FACTORIES[name].keywords)
  # Structural integers must be static; float hyperparameters become injectable arrays.
  static = [k for k in ("block_size", "root_interval", "root_warmup_steps") if k in kwargs]
  factory = optax.inject_hyperparams(FACTORIES[name].func, static_args=static)
  tx = factory(learning_rate=0.1, **kwargs)
  params = {"a": jnp.ones(4)}
  state = tx.init(params)
  u, state = jax.jit(tx.update)(params, state, params)
  ref_u, _ = FACTORIES[name](0.1).update(params, FACTORIES[name](0.1).init(params), params)
  np.testing.assert_allclose(u["a"], ref_u["a"], rtol=1e-6)
  state.hyperparams["learning_rate"] = jnp.asarray(0.0)
  u, _ = jax.jit(tx.update)(params, state, params)
  np.testing.assert_array_equal(u["a"], 0.0)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_multi_steps_accumulates(name):
  tx = optax.MultiSteps(FACTORIES[name](0.1), every_k_schedule=2)
  params = {"a": jnp.ones(4)}
  state = tx.init(params)
  g1, g2 = {"a": jnp.full(4, 1.0)}, {"a": jnp.full(4, 3.0)}
  u1, state = tx.update(g1, state, params)
  np.testing.assert_array_equal(u1["a"], 0.0)
  u2, state = tx.update(g2, state, params)
  inner = FACTORIES[name](0.1)
  ref, _ = inner.update({"a": jnp.full(4, 2.0)}, inner.init(params), params)
  np.testing.assert_allclose(u2["a"], ref["a"], rtol=1e-6)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_masked_and_multi_transform(name):
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  grads = jax.tree.map(lambda x: 2 * x, params)
  masked = optax.masked(FACTORIES[name](0.1), {"w": True, "b": False})
  u, _ = masked.update(grads, masked.init(params), params)
  np.testing.assert_array_equal(u["b"], grads["b"])  # untouched
  full = FACTORIES[name](0.1)
  ref, _ = full.update({"w": grads["w"]}, full.init({"w": params["w"]}), None)
  np.testing.assert_allclose(u["w"], ref["w"], rtol=1e-6)

  multi = optax.multi_transform({"pre": FACTORIES[name](0.1), "sgd": optax.sgd(0.5)},
                                {"w": "pre", "b": "sgd"})
  u, _ = multi.update(grads, multi.init(params), params)
  np.testing.assert_allclose(u["b"], -0.5 * grads["b"])
  np.testing.assert_allclose(u["w"], ref["w"], rtol=1e-6)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_scalar_leaves_and_empty_trees(name):
  tx = FACTORIES[name](0.1)
  u, _ = tx.update({}, tx.init({}))
  assert u == {}
  params = {"s": jnp.asarray(2.0), "empty": jnp.zeros((0, 3))}
  state = tx.init(params)
  u, _ = jax.jit(tx.update)({"s": jnp.asarray(0.5), "empty": jnp.zeros((0, 3))}, state, params)
  assert u["s"].shape == () and u["empty"].shape == (0, 3)
  # First step on a scalar with lambda=0.01: root 10 (initial) or H g = 100*0.5/(1+25).
  expected = {"mbag": -0.1 * 10 * 0.5, "mbag_ema": -0.1 * 10 * 0.5, "mbag_n": -0.1 * 50 / 26}[name]
  if name != "mbag_n":  # with root warm-up, step 1 recomputes the root: exact 1x1 root
    lam = 0.01
    expected = {"mbag": -0.1 * 0.5 / np.sqrt(lam + 0.25),
                "mbag_ema": -0.1 * 0.5 / np.sqrt(0.99 * lam + 0.01 * 0.25)}[name]
  np.testing.assert_allclose(float(u["s"]), expected, rtol=1e-5)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_is_a_plain_pytree(name):
  tx = FACTORIES[name](0.1)
  params = {"a": jnp.ones((4, 3))}
  state = tx.init(params)
  leaves, treedef = jax.tree.flatten(state)
  assert all(isinstance(x, jax.Array) for x in leaves)
  rebuilt = jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])
  u1, _ = tx.update(params, state, params)
  u2, _ = tx.update(params, rebuilt, params)
  np.testing.assert_array_equal(u1["a"], u2["a"])


def test_mbag_is_the_preconditioner_chained_with_momentum_and_learning_rate():
  """mbag == chain(scale_by_mbag, trace(momentum), scale_by_learning_rate): the scale_by_*
  preconditioners carry no momentum, and a schedule sees the same count."""
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  schedule = optax.linear_schedule(0.1, 0.01, 5)
  kw = dict(block_size=2, root_interval=2)
  pairs = [(mbag.mbag(schedule, momentum=0.8, **kw),
            optax.chain(mbag.scale_by_mbag(**kw), optax.trace(decay=0.8),
                        optax.scale_by_learning_rate(schedule))),
           (mbag.mbag_n(schedule, momentum=0.8, block_size=2),
            optax.chain(mbag.scale_by_mbag_n(block_size=2), optax.trace(decay=0.8),
                        optax.scale_by_learning_rate(schedule)))]
  for tx, chained in pairs:
    s1, s2 = tx.init(params), chained.init(params)
    for i in range(4):
      g = jax.tree.map(lambda x: jnp.sin(x * (i + 1.0)), params)
      u1, s1 = tx.update(g, s1, params)
      u2, s2 = chained.update(g, s2, params)
      for k in params:
        np.testing.assert_array_equal(u1[k], u2[k])
