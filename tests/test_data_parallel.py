"""Data-parallel training: ``config.data_parallel`` in the training loop, and several processes.

The multi-device runs are scripts in tests/multidevice/ run in subprocesses (8 simulated CPU
devices; or 2 processes x 2 devices joined by jax.distributed on 127.0.0.1), so that XLA_FLAGS
does not affect the rest of the suite.

Tolerances: the data-parallel step sums the per-example losses in another order (8 partial sums
of 4, then an all-reduce), and is compiled differently, so a step's gradient and update differ
from one device by a relative ~ c eps with c of the order of the longest reduction (32 examples,
b <= 32 entries of a block product): c = 64. Over T steps these add up to at most
T * 64 * eps * max|theta| (roots are refreshed from the same statistics, momentum averages the
steps). A wrong data-parallel step (a per-device mean of its shard, a sum instead of a mean, a
missing all-reduce) changes the parameters by ~ lr |g| ~ 1e-3, far above this bound (~1e-5).
"""

import json
import os
import socket
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from experiments import train
from experiments.configs import autoencoder
from experiments.configs import cifar
from experiments.configs import digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "multidevice")
EPS = float(np.finfo(np.float32).eps)
ENV = {**os.environ, "PYTHONPATH": ROOT}


def last_json(text):
  return json.loads(text.strip().splitlines()[-1])


def test_data_parallel_run_matches_one_device():
  out = subprocess.run([sys.executable, os.path.join(SCRIPTS, "data_parallel_train.py"),
                        "mbag", "adam"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  r = last_json(out.stdout)
  steps = 8  # 256 examples, batch 32, 1 epoch
  for name in ("mbag", "adam"):
    run = r[name]
    assert run["hardware"].startswith("8 x cpu"), name
    assert run["max_abs_diff"] <= steps * 64 * EPS * run["max_abs_param"], (name, run)
    for key in ("train_loss", "test_loss", "test_accuracy"):
      assert run[key][1] == pytest.approx(run[key][0], rel=steps * 64 * EPS), (name, key)
    # Params replicated, batches split over the data axis.
    assert run["multi"]["param_specs"] == ["P(None, None)", "P(None,)"], name
    assert run["multi"]["batch_spec"] == "P('data', None)", name
    assert run["single"]["batch_spec"] == "single device", name
  # Adam's state follows the (replicated) params: the same bytes on every device.
  assert r["adam"]["multi"]["state_bytes"] == r["adam"]["single"]["state_bytes"]
  # MBAG's statistics and roots are split over the 8 devices (the 1-block bucket of the
  # output bias padded to 8 blocks).
  mbag_single, mbag_multi = r["mbag"]["single"], r["mbag"]["multi"]
  assert mbag_multi["stats_specs"] == ["P('data', None, None)"]
  assert mbag_single["stats_rows"] == [1, 280] and mbag_multi["stats_rows"] == [8, 280]
  assert mbag_multi["mbag_bytes"] < mbag_single["mbag_bytes"] / 6
  assert "batch_size=36 is not a multiple of 8" in r["batch_size_error"]
  # Stopped after epoch 1 and resumed (the sharded state restored from the checkpoint): the
  # same 16 steps as one device.
  resume = r["resume"]
  assert resume["steps"] == [16, 16]
  assert resume["max_abs_diff"] <= 16 * 64 * EPS * resume["max_abs_param"]


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(num_processes, devices_per_process, timeout=120):
  script = os.path.join(SCRIPTS, "multiprocess_mbag.py")
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, script, f"--num_processes={num_processes}", f"--process_id={i}",
       f"--devices_per_process={devices_per_process}", f"--port={port}"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
      for i in range(num_processes)]
  results = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=timeout)
      assert p.returncode == 0, stderr[-3000:]
      results.append(last_json(stdout))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  return results


def test_two_processes_match_one_process_on_the_same_number_of_devices():
  two = run_processes(2, 2)
  (one,) = run_processes(1, 4)
  assert [r["process_id"] for r in two] == [0, 1]
  for r in two + [one]:
    assert r["device_count"] == 4
    assert r["stats_specs"] == ["P('data', None, None)"]
    # Blocks 5 (b1, padded to 8), 2 (b2, to 4), 80 (w1), 50 (w2, to 52): a quarter per device.
    assert r["stats_shapes"] == [[8, 8, 8], [4, 8, 8], [80, 8, 8], [52, 8, 8]]
    assert r["local_stats_shapes"] == [[2, 8, 8], [1, 8, 8], [20, 8, 8], [13, 8, 8]]
  assert [r["local_device_count"] for r in two] == [2, 2] and one["local_device_count"] == 4
  steps = len(one["losses"])
  for r in two:
    scale = max(float(np.max(np.abs(one["params"][k]))) for k in one["params"])
    for k, ref in one["params"].items():
      np.testing.assert_allclose(r["params"][k], ref, rtol=0, atol=steps * 64 * EPS * scale,
                                 err_msg=k)
    np.testing.assert_allclose(r["losses"], one["losses"], rtol=steps * 64 * EPS)
  # The processes hold the same replicated parameters.
  assert two[0]["params"] == two[1]["params"]
  # The steps did something: the loss moved by far more than the tolerance.
  assert abs(one["losses"][-1] - one["losses"][0]) > 1e-3


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("module", [digits, cifar, autoencoder])
def test_data_parallel_is_off_by_default(module):
  assert module.get_config().data_parallel is False


def test_data_parallel_must_be_a_bool():
  # A ConfigDict from a file rejects 1 itself (TypeError); one built from a dict does not.
  config = ml_collections.ConfigDict({**digits.get_config("smoke").to_dict(), "data_parallel": 1})
  with pytest.raises(ValueError, match="config.data_parallel must be true or false, got 1"):
    train.resolve_config(config)


def test_data_parallel_rejects_kfac():
  config = digits.get_config("smoke")
  config.optimizer = "kfac"
  config.data_parallel = True
  with pytest.raises(ValueError, match="does not support optimizer 'kfac'"):
    train.resolve_config(config)
