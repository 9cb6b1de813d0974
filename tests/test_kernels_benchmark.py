"""benchmarks.kernels at a tiny size: the record's sizes, its correctness check, its errors
(timings are not asserted: a shared CPU)."""

import json

import jax.numpy as jnp
import pytest

from benchmarks import kernels

NAMES = ("copy", "adam", "sherman_morrison", "rank_one_add", "matvec", "matmul", "newton_schulz",
         "inverse")


def test_kernels_writes_one_record_per_bucket_shape(tmp_path):
  out = tmp_path / "k.jsonl"
  kernels.main(["--blocks", "40x3", "7x5", "--repeats", "1", "--json", str(out)])
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r["blocks"], r["block_size"]) for r in records] == [(40, 3), (7, 5)]
  for r in records:
    assert r["state_bytes"] == 4 * r["blocks"] * r["block_size"] ** 2
    assert r["copy_over_copy"] == 1.0 and r["adam_over_adam"] == 1.0
    assert all(r[f"{name}_ms"] > 0 for name in NAMES)
    assert r["sherman_morrison_relative_error"] < 1e-5
    assert r["command"] == "python -m benchmarks.kernels --blocks 40x3 7x5 --repeats 1 --json " + str(out)


def test_a_wrong_sherman_morrison_is_refused_before_timing(monkeypatch):
  monkeypatch.setattr(kernels, "sherman_morrison", lambda H, g: H - jnp.einsum("ni,nj->nij", g, g))
  with pytest.raises(AssertionError, match="Sherman-Morrison is wrong"):
    kernels.measure(4, 3, 1)


@pytest.mark.parametrize("spec", ["9x", "0x9", "axb"])
def test_bad_block_specs_name_the_flag(spec):
  with pytest.raises(ValueError, match="--blocks"):
    kernels.parse_blocks(spec)
