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
import tempfile

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
                        "mbag", "adam"], capture_output=True, text=True, cwd=ROOT, timeout=600,
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


def run_processes(num_processes, devices_per_process, timeout=300):
  script = os.path.join(SCRIPTS, "multiprocess_mbag.py")
  port = free_port()
  # Output to files, not pipes: a process blocked on a full pipe would stall the others at
  # their next collective.
  with tempfile.TemporaryDirectory() as tmp:
    logs = [(open(os.path.join(tmp, f"{i}.out"), "w+", encoding="utf-8"),
             open(os.path.join(tmp, f"{i}.err"), "w+", encoding="utf-8"))
            for i in range(num_processes)]
    procs = [subprocess.Popen(
        [sys.executable, script, f"--num_processes={num_processes}", f"--process_id={i}",
         f"--devices_per_process={devices_per_process}", f"--port={port}"],
        stdout=out, stderr=err, text=True, cwd=ROOT, env=ENV)
        for i, (out, err) in enumerate(logs)]
    results = []
    try:
      for p, (out, err) in zip(procs, logs):
        p.wait(timeout=timeout)
        out.seek(0)
        err.seek(0)
        assert p.returncode == 0, err.read()[-3000:]
        results.append(last_json(out.read()))
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
          p.wait()
      for out, err in logs:
        out.close()
        err.close()
  return results


def test_two_processes_match_one_process_on_the_same_number_of_devices():
  two = run_processes(2, 2)
  (one,) = run_processes(1, 4)
  assert [r["process_id"] for r in two] == [0, 1]
  for r in two + [one]:
    assert r["device_count"] == 4
    assert r["stats_specs"] == ["P('data', None, None)"]
    # One bucket of blocks of 8: 5 (b1) + 2 (b2) + 80 (w1) + 50 (w2) = 137, padded to 140:
    # a quarter per device.
    assert r["stats_shapes"] == [[140, 8, 8]]
    assert r["local_stats_shapes"] == [[35, 8, 8]]
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


def launch(script, args_per_process, logdir, timeout=600):
  """Runs one process of ``script`` per argument list, all at once; ``[(stdout, json), ...]``.

  Their output goes to files in ``logdir``: a full pipe would block a process, and with it the
  others at their next collective.
  """
  procs, logs = [], []
  for i, args in enumerate(args_per_process):
    out, err = logdir / f"{i}.stdout", logdir / f"{i}.stderr"
    with open(out, "w", encoding="utf-8") as o, open(err, "w", encoding="utf-8") as e:
      procs.append(subprocess.Popen([sys.executable, os.path.join(SCRIPTS, script), *args],
                                    stdout=o, stderr=e, cwd=ROOT, env=ENV))
    logs.append((out, err))
  results = []
  try:
    for p, (out, err) in zip(procs, logs):
      p.wait(timeout=timeout)
      assert p.returncode == 0, err.read_text()[-3000:]
      stdout = out.read_text()
      results.append((stdout, last_json(stdout)))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return results


def test_training_loop_over_two_processes_matches_one_process(tmp_path):
  """experiments.cifar.main with --coordinator_address/--num_processes/--process_id: 2 processes
  x 2 devices into one workdir against 1 process x 4 devices into another, 1 epoch (16 steps)
  through the entry point, then resumed from the checkpoint for a second epoch (32 steps)."""
  two_dir, one_dir = tmp_path / "two", tmp_path / "one"
  port = free_port()
  args = [["--num_processes=2", f"--process_id={i}", "--devices_per_process=2",
           f"--port={port}", f"--workdir={two_dir}"] for i in (0, 1)]
  args.append(["--devices_per_process=4", f"--workdir={one_dir}"])
  (stdout0, p0), (stdout1, p1), (_, one) = launch("multiprocess_train.py", args, tmp_path)
  assert [r["status"] for r in (p0, p1, one)] == [0, 0, 0]
  assert [r["process_id"] for r in (p0, p1)] == [0, 1]
  assert [r["local_device_count"] for r in (p0, p1, one)] == [2, 2, 4]
  assert all(r["device_count"] == 4 for r in (p0, p1, one))
  # The parameters span both processes' devices, replicated: each process reads its own copy.
  assert not any(p0["epoch1"]["param_fully_addressable"])
  assert all(one["epoch1"]["param_fully_addressable"])
  for epoch, steps in (("epoch1", 16), ("epoch2", 32)):
    assert p0[epoch]["params"] == p1[epoch]["params"], epoch
    assert p0[epoch]["summary"]["step"] == one[epoch]["summary"]["step"] == steps
    scale = max(float(np.max(np.abs(x))) for x in one[epoch]["params"])
    for a, b in zip(p0[epoch]["params"], one[epoch]["params"]):
      np.testing.assert_allclose(a, b, rtol=0, atol=steps * 64 * EPS * scale, err_msg=epoch)
    for key in ("train_loss", "test_loss", "test_accuracy"):
      assert p0[epoch]["summary"][key] == pytest.approx(
          one[epoch]["summary"][key], rel=steps * 64 * EPS), (epoch, key)
  # Process 0 alone wrote metrics.jsonl (each record once), TensorBoard and config.json, and
  # printed the summary.
  records = [json.loads(line) for line in (two_dir / "metrics.jsonl").read_text().splitlines()]
  reference = [json.loads(line) for line in (one_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [r["step"] for r in reference] == [8, 16, 24, 32]
  for r, ref in zip(records, reference):
    for key in ("train_loss", "test_loss", "test_accuracy"):
      if key in ref:
        assert r[key] == pytest.approx(ref[key], rel=32 * 64 * EPS), (r["step"], key)
  assert len(list((two_dir / "tensorboard").iterdir())) == len(list(
      (one_dir / "tensorboard").iterdir()))
  config = json.loads((two_dir / "config.json").read_text())
  assert config["hardware"].startswith("4 x cpu") and config["hardware"].endswith(
      "2 processes)")
  assert sorted(os.listdir(two_dir / "checkpoints")) == ["16", "32"]
  assert "step=16 epoch=1" in stdout0 and "step=16" not in stdout1
  # The steps did something: the loss moved by far more than the tolerance.
  assert records[0]["train_loss"] - records[-1]["train_loss"] > 0.1


@pytest.mark.parametrize("flags, message", [
    (["--num_processes=2"], "missing --coordinator_address, --process_id"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"],
     "--process_id=2 must be below --num_processes=2"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=0",
      "--config.data_parallel=false"], "add --config.data_parallel=true"),
])
def test_distributed_flags_are_checked(tmp_path, capsys, flags, message):
  from experiments import cifar as cifar_main  # pylint: disable=import-outside-toplevel
  argv = ["cifar", f"--config={ROOT}/experiments/configs/digits.py:smoke",
          f"--workdir={tmp_path}", "--config.data_parallel=true", *flags]
  assert cifar_main.main(argv) == 2
  assert message in capsys.readouterr().err
  assert not os.listdir(tmp_path)


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
