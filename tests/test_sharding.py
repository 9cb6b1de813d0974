"""MBAG state sharding: 8 simulated CPU devices vs one device, and ``shard_blocks`` validation.

The multi-device checks run scripts in tests/multidevice/ in subprocesses so that XLA_FLAGS can
create 8 host devices without affecting the rest of the suite.

Tolerance of "same as one device": the sharded program is compiled differently (other fusions,
other summation orders), so each matrix product of a b x b block can differ by ~ b eps in
relative terms. A run of 6 steps with 2 x 5 Newton-Schulz products per root and a
Sherman-Morrison update per step gives at most ~ 6 * 11 * b * eps ~ 600 eps ~ 7e-5 (b = 9) of
the update's scale; the tests allow 1e-4 of the scale.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import mbag
from tests import compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = float(np.finfo(np.float32).eps)
RTOL = 1e-4  # of the update's scale; see the module docstring


def run_script(name, timeout=300):
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "multidevice", name)],
                       capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_state_is_sharded_like_the_params_and_updates_match_one_device():
  r = run_script("sharded_mbag.py")
  # Same numbers as one device, up to float32 reduction order (observed ~4e-6 of the scale).
  assert r["max_abs_diff"] <= RTOL * r["scale"]
  # conv kernel split on c_out and dense kernel on m_out: their blocks are split over 8 devices,
  # the (replicated) bias keeps one copy per device.
  assert r["stats_specs"] == ["P(None, None, None)", "P('d', None, None)", "P('d', None, None)"]
  assert r["sharded_bytes"] < r["single_bytes"] / 6
  assert r["same_sharding"]
  assert r["update_specs"] == {"bias": "P(None,)", "conv": "P(None, None, None, 'd')", "dense": "P(None, 'd')"}
  sym = r["symmetric"]  # storage="symmetric": the packed [n, b(b+1)/2] blocks, sharded alike
  assert sym["max_abs_diff"] <= RTOL * sym["scale"]
  assert sym["stats_specs"] == ["P(None, None)", "P('d', None)", "P('d', None)"]
  assert sym["same_sharding"] and sym["update_specs"] == r["update_specs"]
  assert sym["sharded_bytes"] < sym["single_bytes"] / 6
  assert sym["single_bytes"] < 0.6 * r["single_bytes"]  # 36 of 64 floats per 8-block
  graft = r["graft"]  # grafting keeps the leaves' sharding and the one-device numbers
  assert graft["max_abs_diff"] <= RTOL * graft["scale"]
  assert graft["same_sharding"] and graft["update_specs"] == r["update_specs"]


def test_shard_blocks_shards_the_state_of_replicated_params():
  r = run_script("shard_blocks.py")
  # Block counts 8, 1024, 320, 30, 2: the last two are padded with zero blocks to 32 and 8.
  assert r["single_rows"] == [8, 1024, 320, 30, 2]
  for name, spec in (("explicit", "P('d', None, None)"), ("auto", "P('d',)"),
                     ("two_axes", "P(('d', 'm'), None, None)"),
                     ("explicit_chunked", "P('d', None, None)"), ("auto_chunked", "P('d',)")):
    case = r[name]
    assert case["stats_rows"] == [8, 1024, 320, 32, 8], name
    assert case["stats_specs"] == [spec] * 5, name
    assert case["before"] == case["after"], name  # an update keeps the state's sharding
    assert case["max_abs_diff"] <= RTOL * r["scale"], name
    # Every bucket is split 8 ways: about 1/8 of the single-device bytes per device.
    assert case["bytes"] < r["single_bytes"] / 6, name
    # Zero padding blocks add nothing to the diagnostics.
    assert case["root_residual"] == pytest.approx(r["single_root_residual"], rel=1e-3), name
    assert case["num_root_fallbacks"] == 0, name
  # Replicated params get replicated updates (explicit mode keeps the gradient's sharding).
  assert r["explicit"]["update_specs"] == ["P(None, None)", "P(None, None, None, None)", "P(None,)"]
  assert r["auto"]["update_specs"] == ["P()"]
  for name in ("ema_fused", "n_fused", "symmetric_bf16_fused", "graft_fused"):
    case = r[name]
    assert case["stats_rows"] == [360, 1024], name  # fused buckets: 8+320+30+2 -> 360 and 1024
    packed = name.startswith("symmetric")  # [n, b(b+1)/2] blocks
    assert case["stats_specs"] == ["P('d', None)" if packed else "P('d', None, None)"] * 2, name
    assert case["before"] == case["after"], name
    # A bfloat16 root: a float32 difference of the sharded program can round an entry of the root
    # to the neighbouring bfloat16 (2^-8 relative), which moves the direction by at most that.
    allowed = RTOL + (2.0**-8 if packed else 0.0)
    assert case["max_abs_diff"] <= allowed * case["scale"], name


# ----------------------------------------------------------------------------- one device


@pytest.fixture
def params():
  return {"w": jnp.arange(12.0).reshape(4, 3) / 10, "b": jnp.ones(3)}


@pytest.mark.parametrize("bad", ["", (), ("data", "data"), 3, ("data", None)])
def test_shard_blocks_must_be_axis_names(bad):
  with pytest.raises(ValueError, match="shard_blocks must be a mesh axis name"):
    mbag.mbag(0.1, shard_blocks=bad)


def test_shard_blocks_without_a_mesh_is_a_clear_error(params):
  tx = mbag.scale_by_mbag(block_size=2, shard_blocks="data")  # no mesh yet: checked at init
  with pytest.raises(ValueError, match="no mesh is set.*jax.set_mesh"):
    tx.init(params)


def test_shard_blocks_names_an_axis_the_mesh_lacks(params):
  mesh = jax.make_mesh((1,), ("batch",), axis_types=(AxisType.Explicit,))
  with jax.set_mesh(mesh):
    with pytest.raises(ValueError, match="mesh axis 'data', which the current mesh does not have"):
      mbag.mbag_n(0.1, shard_blocks="data")  # a mesh is set: checked when built
  tx = mbag.mbag_ema(0.1, shard_blocks="data")
  with jax.set_mesh(mesh):
    with pytest.raises(ValueError, match="mesh axis 'data'"):
      jax.jit(tx.init)(params)  # built before the mesh: checked at init


def test_shard_blocks_rejects_mixed_axis_types(params):
  mesh = jax.make_mesh((1, 1), ("a", "b"), axis_types=(AxisType.Explicit, AxisType.Auto))
  with jax.set_mesh(mesh):
    with pytest.raises(ValueError, match="mixes explicit and auto"):
      mbag.mbag(0.1, shard_blocks=("a", "b")).init(params)


def test_state_from_another_mesh_size_is_a_clear_error(params):
  state = mbag.scale_by_mbag(block_size=2).init({"v": jnp.ones(6)})  # 3 blocks
  with jax.set_mesh(jax.make_mesh((1,), ("data",), axis_types=(AxisType.Explicit,))):
    tx = mbag.scale_by_mbag(block_size=2, shard_blocks="data")
    with pytest.raises(ValueError, match="bucket 0 has 3 blocks but the gradient gives 2"):
      tx.update({"v": jnp.ones(4)}, state)


def test_shard_blocks_on_a_one_device_mesh_is_the_plain_update(params):
  grads = [jax.tree.map(lambda x, i=i: jnp.sin(x + i), params) for i in range(4)]

  def final_update(tx, place):
    p = place(params)
    state = jax.jit(tx.init)(p)
    for g in grads:
      u, state = jax.jit(tx.update)(place(g), state, p)
    return u, state

  u_ref, _ = final_update(mbag.mbag(0.1, block_size=2, root_interval=2), lambda t: t)
  with jax.set_mesh(jax.make_mesh((1,), ("data",), axis_types=(AxisType.Explicit,))):
    u, state = final_update(mbag.mbag(0.1, block_size=2, root_interval=2, shard_blocks="data"),
                            lambda t: jax.tree.map(lambda x: jax.device_put(x, P()), t))
  # One bucket: w (4, 3) and b (3,) both have blocks of 2.
  assert [compat.spec_str(s.sharding.spec) for s in mbag.find_mbag_state(state).stats] == [
      "P('data', None, None)"]
  for k in params:  # one device, the same program up to the sharding annotations
    scale = float(jnp.max(jnp.abs(u_ref[k])))
    np.testing.assert_allclose(u[k], u_ref[k], rtol=0, atol=64 * EPS * scale)


def test_bytes_per_device_counts_the_largest_shard_of_each_leaf():
  tree = {"a": jnp.zeros((3, 4), jnp.float32), "b": (jnp.zeros((5,), jnp.int8),)}
  assert mbag.bytes_per_device(tree) == 3 * 4 * 4 + 5
  assert mbag.bytes_per_device({}) == 0
