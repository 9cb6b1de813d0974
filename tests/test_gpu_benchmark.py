"""benchmarks.gpu at a tiny size on CPU: every record is written, with the hardware, and the
state sizes are the ones the storage formulas give (timings are not asserted: a shared CPU)."""

import json

import numpy as np

from benchmarks import gpu


def test_gpu_entry_point_writes_records_with_hardware_and_exact_state_sizes(tmp_path):
  out = tmp_path / "gpu.jsonl"
  gpu.main(["--tiny", "--out", str(out)])
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["benchmark"] for r in records] == ["update_speed"] + ["step_time"] * 2
  for r in records:
    assert r["hardware_info"]["device_count"] >= 1 and r["hardware_info"]["jax"]
    assert r["command"] == f"python -m benchmarks.gpu --tiny --out {out}"
  upd = records[0]
  # ResNet-8 tree: 4 convs of 3x3 kernels (9-tap blocks), a 64x10 head (the 64 inputs of each
  # output in 2 blocks of 32) and 10 biases (one block of 10).
  n_conv = 9 * (3 * 16 + 16 * 16 + 16 * 32 + 32 * 64)
  n = n_conv + 640 + 10
  blocks = {9: n_conv // 9, 32: 20, 10: 1}
  def mbag_bytes(per_block, root_bytes=4):
    return sum(k * per_block(b) for b, k in blocks.items()) * (4 + root_bytes) + 4 * n  # + momentum
  assert upd["num_params"] == n
  scalars = 64  # step counts and diagnostics, a few int32 / float32 scalars
  np.testing.assert_allclose(upd["default_state_bytes_per_param"] * n, mbag_bytes(lambda b: b * b),
                             atol=scalars)
  np.testing.assert_allclose(upd["symmetric_bf16_state_bytes_per_param"] * n,
                             mbag_bytes(lambda b: b * (b + 1) // 2, root_bytes=2), atol=scalars)
  assert abs(upd["adam_state_bytes_per_param"] - 8.0) < 1e-2
  assert upd["copy_bandwidth_GBps"] > 0 and upd["mbag_symmetric_bf16_steady_GBps"] > 0
  steps = {r["optimizer"]: r for r in records[1:]}
  assert list(steps) == ["adam", "mbag/symmetric_bf16"]
  assert steps["adam"]["ratio_to_adam"] == 1.0
  assert steps["mbag/symmetric_bf16"]["state_bytes_per_param"] > 8.0
