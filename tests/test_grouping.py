"""Grouping into mini-blocks by dimension numbers: every rule against a float64 reference.

The reference groups come from ``tests.reference.axis_groups`` (written from the definition:
block axes flattened in order and cut, every other axis a batch axis), not from ``BlockSpec``.
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mbag
from tests import reference
from tests.test_mbag_reference import F64, LAM, LR, MOM, random_grads, run_jax

DIMS = mbag.BlockDimensionNumbers
EIGH = dict(initial_accumulator_value=LAM, momentum=MOM, root_interval=1, root_method="eigh",
            **F64)


def flat_tree(tree):
  return np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(tree)])


def leaf_blocks(shape, block_size, dims=None, path="w"):
  """The blocks that mbag makes of a leaf, as lists of row-major indices (padding dropped)."""
  tree = {path: jnp.arange(1, int(np.prod(shape)) + 1, dtype=jnp.float32).reshape(shape)}
  layout = mbag.make_layout(tree, block_size, None if dims is None else {path: dims})
  (blocks,) = mbag.tree_to_buckets(tree, layout)
  return [[int(v) - 1 for v in row if v != 0] for row in np.asarray(blocks)]


def as_lists(groups):
  return [[int(i) for i in g] for g in groups]


# shape, block size, dims (None: default), expected block axes, expected block size, rule
CASES = [
    ((7,), 3, None, (0,), 3, "vector"),
    ((), 4, None, (), 1, "vector"),
    ((6, 3), 4, None, (0,), 4, "dense"),  # inputs of each output, 4 + 2 (padded)
    ((3, 2), 4, None, (1, 0), 4, "dense"),  # block_size > n_in: vec(W^T) cut into 4
    ((5, 6), 4, None, (1,), 4, "embedding"),
    ((4, 3), 4, None, (0, 1), 4, "vector"),  # named bias, below
    ((3, 3, 2, 2), 4, None, (0, 1), 9, "conv"),  # taps kept whole (9 <= max(4, 64))
    ((3, 3, 3, 1, 2), 4, None, (0, 1, 2), 27, "conv"),
    ((5, 5, 5, 1, 1), 8, None, (0, 1, 2), 8, "conv"),  # 125 taps > 64: cut into 8
    ((3, 3, 2, 2), 4, 2, (0, 1), 2, "conv"),  # an int is this leaf's block size, also for convs
    ((2, 5, 3), 4, None, (0, 1), 4, "fallback"),  # rank 3: last axis outputs
    ((4, 4, 3, 2), 8, None, (0, 1, 2), 8, "fallback"),  # 4x4 conv or a stack: guessed
    ((1, 5, 2, 3), 4, None, (0, 1), 5, "conv"),  # 1xk: a conv1d written as conv2d
    ((3, 5, 4), 4, DIMS(batch_axis=0), (1,), 4, "stacked dense"),
    ((3, 5, 4), 8, DIMS(batch_axis=0), (2, 1), 8, "stacked dense"),  # 8 > n_in: per layer
    ((2, 3, 3, 2, 2), 4, DIMS(batch_axis=0), (1, 2), 9, "stacked conv"),
    ((3, 4, 2), 4, DIMS(block_axis=0), (0,), 4, "declared"),  # conv1d taps / DenseGeneral
    ((2, 3, 4), 4, DIMS(block_axis=(1, 0)), (1, 0), 4, "declared"),  # order = flattening
    ((2, 3, 4), 4, DIMS(block_axis=(0, 1), block_size=3), (0, 1), 3, "declared"),
]
MUON = getattr(optax.contrib, "MuonDimensionNumbers", None)  # optax >= 0.2.6
if MUON is not None:
  CASES.append(((3, 4, 2), 2, MUON((0, 1), 2), (0, 1), 2, "muon"))


@pytest.mark.parametrize("shape,block_size,dims,axes,size,rule", CASES)
def test_blocks_are_the_reference_groups(shape, block_size, dims, axes, size, rule):
  path = {"embedding": "embedding", "vector": "bias" if len(shape) == 2 else "w"}.get(rule, "w")
  got = leaf_blocks(shape, block_size, dims, path)
  # The same blocks with the same order inside each block (the order of blocks is free).
  assert sorted(got) == sorted(as_lists(reference.axis_groups(shape, axes, size)))
  report = mbag.describe({path: jax.ShapeDtypeStruct(shape, jnp.float32)},
                         mbag.mbag(0.1, block_size=block_size,
                                   dimension_numbers=None if dims is None else {path: dims}))
  assert report.rows[0].rule == rule
  assert report.rows[0].guessed == (rule == "fallback")


def test_default_rules_match_the_float64_reference_end_to_end():
  shapes = {"a_vec": (5,), "b_scalar": (), "c_dense": (6, 3), "d_flat": (3, 2), "embedding": (5, 6),
            "f_conv": (3, 3, 2, 2), "g_conv3d": (3, 3, 3, 1, 2), "h_rank3": (2, 5, 3)}
  axes = {"a_vec": (0,), "b_scalar": (), "c_dense": (0,), "d_flat": (1, 0), "embedding": (1,),
          "f_conv": (0, 1), "g_conv3d": (0, 1, 2), "h_rank3": (0, 1)}
  sizes = {"f_conv": 9, "g_conv3d": 27, "b_scalar": 1}
  names = sorted(shapes)
  total = sum(int(np.prod(shapes[k])) for k in names)
  flat_grads = random_grads((total,), 4, seed=21)
  groups, offset, split = [], 0, []
  for k in names:
    n = int(np.prod(shapes[k]))
    groups += reference.axis_groups(shapes[k], axes[k], sizes.get(k, 4), offset)
    split.append((k, offset, n))
    offset += n
  grads = [{k: g[o:o + n].reshape(shapes[k]) for k, o, n in split} for g in flat_grads]
  params = {k: np.zeros(shapes[k]) for k in names}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", mbag.MBAGGroupingWarning)
    ups, _ = run_jax(mbag.mbag(LR, block_size=4, **EIGH), params, grads)
  ref = reference.run_mbag(flat_grads, groups, lam=LAM, momentum=MOM, lr=LR, root_interval=1)
  np.testing.assert_allclose(np.stack([flat_tree(u) for u in ups]), np.stack(ref),
                             rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ stacked == unstacked


def stacked_vs_unstacked(layer_shapes, layers, block_size, factory=mbag.mbag, seed=0, **kw):
  """Updates of a stacked tree (declared layer axis) and of the same layers as separate leaves."""
  rng = np.random.default_rng(seed)
  grads = [{k: rng.standard_normal((layers,) + s) for k, s in layer_shapes.items()}
           for _ in range(3)]
  stacked_p = {k: np.zeros((layers,) + s) for k, s in layer_shapes.items()}
  unstacked_p = {f"l{i}": {k: np.zeros(s) for k, s in layer_shapes.items()} for i in range(layers)}
  split = lambda g: {f"l{i}": {k: v[i] for k, v in g.items()} for i in range(layers)}  # noqa
  opts = dict(EIGH, block_size=block_size, **kw)
  if factory is mbag.mbag_n:
    opts = {k: v for k, v in opts.items() if k not in ("root_interval", "root_method")}
  ups_s, _ = run_jax(factory(LR, dimension_numbers=DIMS(batch_axis=0), **opts), stacked_p, grads)
  ups_u, _ = run_jax(factory(LR, **opts), unstacked_p, [split(g) for g in grads])
  return [split(u) for u in ups_s], ups_u


@pytest.mark.parametrize("layer_shapes,block_size", [
    ({"kernel": (40, 24), "bias": (24,)}, 32),  # 40 = 32 + 8: padding inside each layer
    ({"kernel": (12, 5)}, 16),  # block_size > n_in: each layer's vec(W^T) cut into 16
    ({"kernel": (3, 3, 2, 3)}, 4),  # stacked conv: taps per (c_in, c_out)
])
@pytest.mark.parametrize("factory", [mbag.mbag, mbag.mbag_n])
def test_stacked_leaf_with_a_declared_layer_axis_equals_the_unstacked_layers(
    layer_shapes, block_size, factory):
  got, want = stacked_vs_unstacked(layer_shapes, 3, block_size, factory)
  for u, v in zip(got, want):
    np.testing.assert_allclose(flat_tree(u), flat_tree(v), rtol=1e-10, atol=1e-13)


def test_an_undeclared_stack_warns_naming_the_leaf_and_differs():
  params = {"stack": {"kernel": jnp.zeros((2, 40, 24))}}
  with pytest.warns(mbag.MBAGGroupingWarning, match=r"stack/kernel \(2, 40, 24\): fallback"):
    mbag.mbag(LR).init(params)
  rng = np.random.default_rng(3)
  grads = [{"k": rng.standard_normal((2, 40, 24))} for _ in range(3)]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", mbag.MBAGGroupingWarning)
    undeclared, _ = run_jax(mbag.mbag(LR, **EIGH), {"k": np.zeros((2, 40, 24))}, grads)
  declared, _ = run_jax(mbag.mbag(LR, dimension_numbers=DIMS(batch_axis=0), **EIGH),
                        {"k": np.zeros((2, 40, 24))}, grads)
  a, b = flat_tree(undeclared[-1]), flat_tree(declared[-1])
  assert np.linalg.norm(a - b) > 0.01 * np.linalg.norm(b)


def test_warning_lists_every_guessed_leaf_once_and_none_for_clear_shapes():
  clear = {"conv": jnp.zeros((3, 3, 4, 8)), "dense": jnp.zeros((8, 4)), "b": jnp.zeros(4)}
  with warnings.catch_warnings():
    warnings.simplefilter("error", mbag.MBAGGroupingWarning)
    mbag.mbag(LR).init(clear)
  params = dict(clear, s1=jnp.zeros((2, 8, 4)), s2=jnp.zeros((4, 4, 3, 2)))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    mbag.mbag(LR).init(params)
  msgs = [str(w.message) for w in caught if issubclass(w.category, mbag.MBAGGroupingWarning)]
  assert len(msgs) == 1 and "2 parameter(s)" in msgs[0]
  assert "s1 (2, 8, 4)" in msgs[0] and "s2 (4, 4, 3, 2)" in msgs[0] and "conv (3, 3" not in msgs[0]


# ------------------------------------------------------------------- flax models


def run_pair(tx_a, params_a, grads_a, tx_b, params_b, to_b):
  """Runs tx_a on params_a and tx_b on the reshaped tree; returns both (b mapped back to a)."""
  ups_a, _ = run_jax(tx_a, params_a, grads_a)
  ups_b, _ = run_jax(tx_b, params_b, [to_b(g) for g in grads_a])
  return ups_a, ups_b


def random_like(params, steps=3, seed=0):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda x: rng.standard_normal(np.shape(x)), params) for _ in range(steps)]


def test_linen_scan_stack_with_declared_layers_equals_unstacked():
  nn = pytest.importorskip("flax.linen")

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
      return nn.tanh(nn.Dense(40)(x)), None

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      scan = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
      return scan(name="layers")(x, None)[0]

  params = Model().init(jax.random.key(0), jnp.zeros((1, 40)))
  assert params["params"]["layers"]["Dense_0"]["kernel"].shape == (3, 40, 40)
  grads = random_like(params, seed=1)
  dims = mbag.dimension_numbers_by_path([("layers/", DIMS(batch_axis=0))])
  layer = lambda t, i: jax.tree.map(lambda x: x[i], t["params"]["layers"])  # noqa: E731
  unstack = lambda t: {f"l{i}": layer(t, i) for i in range(3)}  # noqa: E731
  ups_a, ups_b = run_pair(mbag.mbag(LR, block_size=32, dimension_numbers=dims, **EIGH), params,
                          grads, mbag.mbag(LR, block_size=32, **EIGH),
                          unstack(jax.tree.map(np.zeros_like, params)), unstack)
  for u, v in zip(ups_a, ups_b):
    np.testing.assert_allclose(flat_tree(unstack(u)), flat_tree(v), rtol=1e-10, atol=1e-13)


def test_nnx_vmap_stack_with_declared_layers_equals_unstacked():
  nnx = pytest.importorskip("flax.nnx")

  @nnx.split_rngs(splits=3)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def create(rngs):
    return nnx.Linear(40, 24, rngs=rngs)

  state = nnx.state(create(nnx.Rngs(0)), nnx.Param)
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
  assert params["kernel"].shape == (3, 40, 24)
  grads = random_like(params, seed=2)
  unstack = lambda t: {f"l{i}": jax.tree.map(lambda x: x[i], t) for i in range(3)}  # noqa: E731
  ups_a, ups_b = run_pair(
      mbag.mbag(LR, block_size=32, dimension_numbers=DIMS(batch_axis=0), **EIGH), params, grads,
      mbag.mbag(LR, block_size=32, **EIGH), unstack(jax.tree.map(np.zeros_like, params)), unstack)
  for u, v in zip(ups_a, ups_b):
    np.testing.assert_allclose(flat_tree(unstack(u)), flat_tree(v), rtol=1e-10, atol=1e-13)


# (path, kernel shape, the equivalent 2-D dense kernel's shape)
ATTENTION_KERNELS = [
    ("attn/query/kernel", (24, 4, 8), (24, 32)),  # linen (d, heads, head_dim)
    ("attn/key/kernel/value", (24, 4, 8), (24, 32)),  # nnx paths end in /value
    ("value/kernel", (24, 4, 8), (24, 32)),
    ("attn/out/kernel", (4, 8, 24), (32, 24)),  # (heads, head_dim, d)
    ("out/kernel/value", (2, 3, 5), (6, 5)),
]


@pytest.mark.parametrize("block_size", [4, 16, 32, 64])  # <= and > the inputs: both dense cases
@pytest.mark.parametrize("path,shape,matrix", ATTENTION_KERNELS)
def test_stock_attention_kernels_get_the_blocks_of_the_equivalent_dense_kernel(
    path, shape, matrix, block_size):
  """q/k/v ``(d, heads, head_dim)`` and out ``(heads, head_dim, d)`` by default: exactly the dense
  rule on ``reshape(d, heads * head_dim)`` / ``reshape(heads * head_dim, d)`` (a row-major
  reshape keeps every entry's flat index, so the blocks are compared as index lists)."""
  got = leaf_blocks(shape, block_size, path=path)
  assert sorted(got) == sorted(leaf_blocks(matrix, block_size, path="dense/kernel"))
  (row,) = mbag.describe({path: jax.ShapeDtypeStruct(shape, jnp.float32)},
                         mbag.mbag(0.1, block_size=block_size)).rows
  assert (row.rule, row.guessed) == ("attention", False)
  # Inside a declared stack each layer gets the same rule: the stacked dense kernels' blocks.
  stacked = leaf_blocks((3,) + shape, block_size, DIMS(batch_axis=0), path="layers/" + path)
  assert sorted(stacked) == sorted(leaf_blocks((3,) + matrix, block_size, DIMS(batch_axis=0)))
  (row,) = mbag.describe({"layers/" + path: jax.ShapeDtypeStruct((3,) + shape, jnp.float32)},
                         mbag.mbag(0.1, block_size=block_size,
                                   dimension_numbers=DIMS(batch_axis=0))).rows
  assert (row.rule, row.guessed) == ("stacked attention", False)


def test_stock_linen_transformer_block_and_nnx_attention_are_grouped_without_a_warning():
  nn = pytest.importorskip("flax.linen")
  nnx = pytest.importorskip("flax.nnx")

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
      x = x + nn.MultiHeadDotProductAttention(num_heads=4)(nn.LayerNorm()(x), mask=mask)
      return x + nn.Dense(32)(nn.gelu(nn.Dense(128)(nn.LayerNorm()(x))))

  linen = Block().init(jax.random.key(0), jnp.zeros((1, 6, 32)))["params"]
  attn = nnx.MultiHeadAttention(num_heads=4, in_features=32, decode=False, rngs=nnx.Rngs(0))
  trees = {"linen": linen, "nnx state": nnx.state(attn, nnx.Param),
           "nnx pure dict": nnx.to_pure_dict(nnx.state(attn, nnx.Param))}
  for name, tree in trees.items():
    with warnings.catch_warnings():
      warnings.simplefilter("error", mbag.MBAGGroupingWarning)
      mbag.mbag(LR).init(tree)
    rules = {r.path: r.rule for r in mbag.describe(tree, mbag.mbag(LR)).rows}
    kernels = {p: r for p, r in rules.items() if re.search("(query|key|value|out)/kernel", p)}
    assert list(kernels.values()) == ["attention"] * 4, (name, rules)


def test_stock_attention_matches_the_float64_reference_on_the_dense_blocks():
  """A few MBAG steps on ``nn.MultiHeadDotProductAttention``'s parameters (default grouping)
  against the float64 reference run on the blocks of the equivalent 2-D dense kernels."""
  nn = pytest.importorskip("flax.linen")
  attn = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=32)
  params = attn.init(jax.random.key(0), jnp.zeros((1, 5, 24)))["params"]
  assert params["query"]["kernel"].shape == (24, 4, 8)
  assert params["out"]["kernel"].shape == (4, 8, 24)
  block_size = 16
  groups, offset = [], 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):  # flatten order = flat_tree's
    shape, module = np.shape(leaf), path[-2].key
    if path[-1].key == "bias":
      groups += reference.axis_groups(shape, tuple(range(len(shape))), block_size, offset)
    else:  # the dense rule on (n_in, m_out): block axis 0 of the matrix
      n_in = 24 if module in ("query", "key", "value") else 32
      groups += reference.axis_groups((n_in, leaf.size // n_in), (0,), block_size, offset)
    offset += leaf.size
  grads = random_like(params, steps=4, seed=3)
  with warnings.catch_warnings():
    warnings.simplefilter("error", mbag.MBAGGroupingWarning)
    ups, _ = run_jax(mbag.mbag(LR, block_size=block_size, **EIGH),
                     jax.tree.map(np.zeros_like, params), grads)
  ref = reference.run_mbag([flat_tree(g) for g in grads], groups, lam=LAM, momentum=MOM, lr=LR,
                           root_interval=1)
  np.testing.assert_allclose(np.stack([flat_tree(u) for u in ups]), np.stack(ref),
                             rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("path,shape", [
    ("Conv_0/kernel", (3, 16, 8)),  # conv1d
    ("mlp/kernel", (2, 16, 8)),  # an undeclared stack of dense kernels
    ("attn/query/weight", (16, 4, 2)),  # not a kernel
    ("layers/attn/query/kernel", (2, 16, 4, 4)),  # an undeclared scanned attention kernel
    ("layers/attn/out/kernel", (2, 4, 4, 16)),
])
def test_rank3_or_stacked_kernels_not_from_stock_attention_still_warn(path, shape):
  with pytest.warns(mbag.MBAGGroupingWarning, match=re.escape(f"{path} {shape}: fallback")):
    mbag.mbag(LR).init({path: jnp.zeros(shape)})


def test_embedding_groups_the_features_of_one_token():
  nn = pytest.importorskip("flax.linen")
  params = nn.Embed(50, 40).init(jax.random.key(0), jnp.zeros((1,), jnp.int32))["params"]
  grads = random_like(params, seed=4)
  transpose = lambda t: {"tied_output": np.asarray(t["embedding"]).T}  # noqa: E731
  ups_a, ups_b = run_pair(mbag.mbag(LR, **EIGH), params, grads, mbag.mbag(LR, **EIGH),
                          transpose(jax.tree.map(np.zeros_like, params)), transpose)
  for u, v in zip(ups_a, ups_b):  # the dense rule on the (d, vocab) output layer it ties to
    np.testing.assert_allclose(flat_tree(transpose(u)), flat_tree(v), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kernel_size,dims", [((3,), DIMS(block_axis=0)), ((3, 3, 3), None)])
def test_conv1d_declared_and_conv3d_default_group_the_taps(kernel_size, dims):
  nn = pytest.importorskip("flax.linen")
  x = jnp.zeros((1,) + (6,) * len(kernel_size) + (2,))
  params = nn.Conv(3, kernel_size, use_bias=False).init(jax.random.key(0), x)["params"]
  shape = params["kernel"].shape
  assert shape == kernel_size + (2, 3)
  grads = random_like(params, steps=4, seed=5)
  ups, _ = run_jax(mbag.mbag(LR, block_size=4, dimension_numbers=dims, **EIGH), params, grads)
  groups = reference.axis_groups(shape, tuple(range(len(kernel_size))), int(np.prod(kernel_size)))
  ref = reference.run_mbag([flat_tree(g) for g in grads], groups, lam=LAM, momentum=MOM, lr=LR,
                           root_interval=1)
  np.testing.assert_allclose(np.stack([flat_tree(u) for u in ups]), np.stack(ref),
                             rtol=1e-9, atol=1e-12)


def test_vit_patch_embedding_falls_back_to_the_dense_rule_on_its_inputs():
  nn = pytest.importorskip("flax.linen")
  conv = nn.Conv(8, (16, 16), strides=16)
  params = {"patch": conv.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]["kernel"]}
  assert params["patch"].shape == (16, 16, 3, 8)
  with pytest.warns(mbag.MBAGGroupingWarning, match=r"patch \(16, 16, 3, 8\): fallback"):
    mbag.mbag(LR).init(params)
  as_dense = lambda t: {"patch": np.reshape(t["patch"], (768, 8))}  # noqa: E731
  grads = random_like(params, seed=6)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", mbag.MBAGGroupingWarning)
    ups_a, ups_b = run_pair(mbag.mbag(LR, **EIGH), params, grads, mbag.mbag(LR, **EIGH),
                            as_dense(jax.tree.map(np.zeros_like, params)), as_dense)
  for u, v in zip(ups_a, ups_b):
    np.testing.assert_allclose(flat_tree(as_dense(u)), flat_tree(v), rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------- size, report, forms


def test_bert_size_scanned_attention_kernel_has_bounded_blocks():
  """(layers, d_model, heads, head_dim) = (12, 768, 12, 64): 768 blocks of 9216^2 (486 GiB)
  when every 4-D leaf was a conv; now blocks of at most block_size, state ~2 * 32 floats per
  parameter, and the recipe (block axis d_model) is exactly that without a warning."""
  leaf = {"qkv": jax.ShapeDtypeStruct((12, 768, 12, 64), jnp.float32)}
  size = 12 * 768 * 12 * 64
  for dims, rule in ((None, "fallback"), (DIMS(block_axis=1), "declared")):
    (row,) = mbag.describe(leaf, mbag.mbag(1e-3, dimension_numbers=dims)).rows
    assert row.rule == rule and row.block_size == 32 and row.num_blocks == size // 32
    assert row.state_bytes == 2 * 4 * 32 * size  # 1.8 GB: H and root, 32 floats per parameter


def test_describe_reports_rules_blocks_bytes_and_totals():
  params = {"conv": jnp.zeros((3, 3, 4, 8)), "dense": {"kernel": jnp.zeros((40, 10)),
                                                        "bias": jnp.zeros(10)}}
  report = mbag.describe(params, mbag.mbag(1e-3))
  rows = {r.path: r for r in report.rows}
  assert (rows["conv"].rule, rows["conv"].num_blocks, rows["conv"].block_size) == ("conv", 32, 9)
  assert (rows["dense/kernel"].num_blocks, rows["dense/kernel"].block_size) == (20, 32)
  assert (rows["dense/bias"].rule, rows["dense/bias"].block_size) == ("vector", 10)
  assert rows["conv"].state_bytes == 32 * 81 * 4 * 2
  num = 3 * 3 * 4 * 8 + 40 * 10 + 10
  assert report.num_params == num and report.adam_state_bytes == 8 * num + 4
  stats = 32 * 81 + 20 * 1024 + 100
  assert report.state_bytes == 4 * (2 * stats + num) + 4 * (1 + 7) + 1  # count, diagnostics, root_due
  text = str(report)
  assert "dense/kernel" in text and "20 x 32" in text and "Adam" in text
  ema = mbag.describe(params, optax.chain(mbag.scale_by_mbag_n(), optax.sgd(1.0)))
  assert ema.preconditioners == ("scale_by_mbag_n",)
  assert {r.path: r for r in ema.rows}["conv"].state_bytes == 32 * 81 * 4
  with pytest.raises(ValueError, match="no MBAG preconditioner"):
    mbag.describe(params, optax.adam(1e-3))


def test_dimension_numbers_forms_agree():
  params = {"a": {"k": jnp.zeros((4, 6, 3))}, "b": jnp.zeros((5, 2))}
  spec = DIMS(block_axis=(0, 1))
  forms = [
      {"a": {"k": spec}, "b": None},  # full pytree
      {"a": spec, "b": None},  # prefix
      lambda path, shape: spec if len(shape) == 3 else None,  # callable
      mbag.dimension_numbers_by_path([("^a/", spec)]),
  ]
  layouts = [mbag.make_layout(params, 4, f) for f in forms]
  assert all(l.specs == layouts[0].specs for l in layouts)
  assert layouts[0].rules == ("declared", "dense")
  with pytest.raises(ValueError, match="two names of the same argument"):
    mbag.mbag(0.1, dimension_numbers=spec, grouping=spec)


@pytest.mark.parametrize("dims,message", [
    (DIMS(block_axis=3), r"leaf w of shape \(2, 3, 4\): block_axis 3 names an axis outside"),
    (DIMS(block_axis=(0, 0)), "repeats an axis"),
    (DIMS(block_axis=0, batch_axis=0), "overlap"),
    (DIMS(block_axis=0, block_size=0), "block_size 0 must be an integer >= 1"),
    ("rows", "must be a BlockDimensionNumbers"),
])
def test_bad_dimension_numbers_name_the_leaf(dims, message):
  tx = mbag.mbag(0.1, dimension_numbers={"w": dims})
  with pytest.raises(ValueError, match=message):
    tx.init({"w": jnp.zeros((2, 3, 4))})


# ------------------------------------------------------------------- optax contract

FACTORIES = {"mbag": mbag.mbag, "mbag_ema": mbag.mbag_ema, "mbag_n": mbag.mbag_n}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_tree_map_params_reaches_the_momentum(name):
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  tx = FACTORIES[name](0.1, block_size=2)
  state = tx.init(params)
  mapped = optax.tree.map_params(tx, lambda x: x.shape, state, transform_non_params=lambda _: 0)
  trace = [s for s in mapped if isinstance(s, optax.TraceState)][0]
  assert trace.trace == {"w": (4, 3), "b": (3,)}
  assert mbag.find_mbag_state(mapped).stats == 0  # the blocks are not parameter-shaped
  same = optax.tree.map_params(tx, lambda x: x, state)
  assert jax.tree.structure(same) == jax.tree.structure(state)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_inject_hyperparams_with_dimension_numbers(name):
  params = {"w": jnp.ones((2, 4, 3))}
  dims = {"w": DIMS(batch_axis=0)}
  # A pytree of dimension numbers is static by itself; block_size must be declared static.
  tx = optax.inject_hyperparams(FACTORIES[name], static_args=("block_size",))(
      0.1, block_size=2, dimension_numbers=dims)
  ref = FACTORIES[name](0.1, block_size=2, dimension_numbers=dims)
  u, _ = jax.jit(tx.update)(params, tx.init(params), params)
  u_ref, _ = ref.update(params, ref.init(params), params)
  np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)
  # A callable is taken for a schedule unless static.
  fn = lambda path, shape: DIMS(batch_axis=0)  # noqa: E731
  tx = optax.inject_hyperparams(FACTORIES[name], static_args=("block_size", "dimension_numbers",
                                                              "statistics_dtype"))(
      0.1, block_size=2, dimension_numbers=fn, statistics_dtype=jnp.float32)
  u, _ = jax.jit(tx.update)(params, tx.init(params), params)
  np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)


def test_inject_hyperparams_errors_name_the_arguments_to_make_static():
  tx = optax.inject_hyperparams(mbag.mbag)(0.1, block_size=2)
  state = tx.init({"w": jnp.ones(4)})
  with pytest.raises(ValueError, match=r"block_size is traced.*static_args=\('block_size',\)"):
    jax.jit(tx.update)({"w": jnp.ones(4)}, state)
  with pytest.raises(ValueError, match=r"statistics_dtype is an array.*static_args"):
    optax.inject_hyperparams(mbag.mbag, static_args=("block_size",))(
        0.1, block_size=2, statistics_dtype=jnp.float32).init({"w": jnp.ones(4)})


def test_nonfinite_gradient_on_a_root_step_computes_the_root_at_the_next_finite_step():
  params = {"w": jnp.zeros(3)}
  g = [{"w": jnp.array([1.0, 2.0, -1.0])}, {"w": jnp.array([0.5, -1.0, 2.0])},
       {"w": jnp.array([jnp.nan, 1.0, 1.0])}, {"w": jnp.array([1.0, 1.0, 0.0])}]
  tx = mbag.scale_by_mbag(block_size=3, root_interval=3, root_method="eigh")
  state = tx.init(params)
  roots = []
  for grad in g:
    _, state = tx.update(grad, state)
    roots.append(np.asarray(state.roots[0]))
    if len(roots) == 3:
      assert bool(state.root_due)
  np.testing.assert_array_equal(roots[2], roots[1])  # step 3 (a root step) skipped: NaN
  H = np.asarray(state.stats[0][0], np.float64)  # after step 4
  np.testing.assert_allclose(roots[3][0], reference.sqrtm_psd(H, 0.5), rtol=2e-4, atol=1e-5)
  assert not bool(state.root_due)


@pytest.mark.parametrize("gather_max", [1 << 18, 0])  # leaves read by gathers / by slices
def test_default_buckets_are_one_per_block_size_whatever_the_number_of_leaves(
    gather_max, monkeypatch):
  from mbag._src import partition  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(partition, "GATHER_MAX_SIZE", gather_max)
  params = {f"l{i:02d}": {"kernel": jnp.zeros((64, 64)), "bias": jnp.zeros(64)} for i in range(24)}
  layout = mbag.make_layout(params, 32)
  assert len(layout.buckets) == 1 and layout.block_sizes == (32,)
  state = mbag.find_mbag_state(mbag.mbag(0.1).init(params))
  assert [s.shape for s in state.stats] == [(24 * (128 + 2), 32, 32)]
  # A shared bucket is read back into every leaf exactly.
  rng = np.random.default_rng(0)
  tree = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
  back = mbag.buckets_to_tree(mbag.tree_to_buckets(tree, layout), layout, tree)
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)
