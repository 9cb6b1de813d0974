"""Bad hyperparameters raise ValueError at construction, naming the argument and the value."""

import jax.numpy as jnp
import pytest

import mbag

BAD = [
    ("block_size", 0),
    ("block_size", -3),
    ("block_size", 2.5),
    ("initial_accumulator_value", 0.0),
    ("initial_accumulator_value", -1e-3),
    ("initial_accumulator_value", float("nan")),
    ("momentum", -0.1),
    ("momentum", 1.0),
    ("root_interval", 0),
    ("newton_schulz_steps", 0),
    ("root_method", "cholesky"),
    ("newton_schulz_tolerance", 0.0),
    ("root_warmup_steps", -1),
]


@pytest.mark.parametrize("factory", [mbag.mbag, mbag.mbag_ema])
@pytest.mark.parametrize("arg,value", BAD)
def test_bad_hyperparameter_is_named(factory, arg, value):
  with pytest.raises(ValueError) as e:
    factory(0.1, **{arg: value})
  assert arg in str(e.value) and repr(value) in str(e.value)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.2])
def test_bad_decay(value):
  with pytest.raises(ValueError, match=rf"decay must be in \(0, 1\), got {value!r}"):
    mbag.mbag_ema(0.1, decay=value)


@pytest.mark.parametrize("arg,value", [("block_size", 0), ("initial_accumulator_value", 0.0),
                                       ("momentum", 1.0)])
def test_mbag_n_validates(arg, value):
  with pytest.raises(ValueError, match=arg):
    mbag.mbag_n(0.1, **{arg: value})


def test_negative_learning_rate():
  with pytest.raises(ValueError, match="learning_rate"):
    mbag.mbag(-0.1)


def test_preconditioners_validate_too():
  with pytest.raises(ValueError, match="block_size"):
    mbag.scale_by_mbag(block_size=0)
  with pytest.raises(ValueError, match="root_method"):
    mbag.scale_by_mbag_ema(root_method="svd")


def test_bad_grouping_is_reported_with_the_leaf_path():
  def grouping(path, shape):
    return mbag.BlockSpec(perm=(0,), row_size=4, block_size=2)  # 4 does not divide 6
  tx = mbag.mbag(0.1, dimension_numbers=grouping)
  with pytest.raises(ValueError, match=r"leaf w\b.*row_size 4 does not divide the leaf size 6"):
    tx.init({"w": jnp.zeros(6)})


def test_defaults_are_the_papers():
  import inspect
  sig = inspect.signature(mbag.mbag)
  defaults = {k: v.default for k, v in sig.parameters.items() if k != "learning_rate"}
  assert (defaults["block_size"], defaults["initial_accumulator_value"], defaults["momentum"],
          defaults["root_interval"], defaults["newton_schulz_steps"], defaults["root_method"]) == (
              32, 0.01, 0.9, 50, 5, "newton_schulz")
  assert inspect.signature(mbag.mbag_ema).parameters["decay"].default == 0.99
