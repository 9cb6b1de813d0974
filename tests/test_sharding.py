"""MBAG state on 8 simulated CPU devices (explicit sharding) vs one device.

Runs tests/multidevice/sharded_mbag.py in a subprocess so that XLA_FLAGS can create 8 host devices
without affecting the rest of the suite.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_state_is_sharded_like_the_params_and_updates_match_one_device():
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "multidevice", "sharded_mbag.py")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  # Same numbers as one device, up to float32 reduction order (observed ~4e-6 of the scale).
  assert r["max_abs_diff"] <= 1e-4 * r["scale"]
  # conv kernel split on c_out and dense kernel on m_out: their blocks are split over 8 devices,
  # the (replicated) bias keeps one copy per device.
  assert r["stats_specs"] == ["P(None, None, None)", "P('d', None, None)", "P('d', None, None)"]
  assert r["sharded_bytes"] < r["single_bytes"] / 6
  assert r["same_sharding"]
  assert r["update_specs"] == {"bias": "P(None,)", "conv": "P(None, None, None, 'd')", "dense": "P(None, 'd')"}
