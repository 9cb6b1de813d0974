"""The shared training loop: run directory contract, resume, non-finite stop, bound tracking.

Runs use scikit-learn's digits (the real loader, offline) with a 256-example subset: 8 steps
per epoch of batch 32, 2 epochs, a record every 4 steps and a checkpoint every 8.
"""

import json
import os
import pathlib
import signal
import struct

import jax
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from experiments import metrics
from experiments import optimizers
from experiments import train
from experiments.configs import digits

STEPS_PER_EPOCH = 8
VOLATILE = ("wall_time", "step_time", "examples_per_sec", "compile_time")


def small_config(optimizer="mbag", **overrides):
  config = digits.get_config("smoke")
  config.optimizer = optimizer
  config.train_subset = 256
  config.num_epochs = 2
  config.lr_decay_epochs = (1,)
  config.log_every_steps = 4
  config.checkpoint_every_steps = 8
  for key, value in overrides.items():
    config[key] = value
  return config


def read_records(workdir):
  return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def final_params(workdir, config):
  """Parameters of the newest checkpoint, restored by running the finished config again."""
  return train.run(config, workdir).params


def tensorboard_tags(workdir):
  """Tags and steps of every scalar in the run's TensorBoard event files (TFRecord framing)."""
  found = {}
  for path in (pathlib.Path(workdir) / metrics.TENSORBOARD_DIR).glob("events.out.tfevents.*"):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        found.setdefault(value.tag, []).append(event.step)
  return found


def interrupt_at(monkeypatch, step, action):
  """Makes the optimizer's step call ``action()`` right after its ``step``-th call."""
  real = optimizers.build_optimizer

  def build(config, loss_fn, learning_rate):
    opt = real(config, loss_fn, learning_rate)
    calls = {"n": 0}

    def stepping(*args):
      out = opt.step(*args)
      calls["n"] += 1
      if calls["n"] == step:
        action()
      return out

    return opt._replace(step=stepping)

  monkeypatch.setattr(optimizers, "build_optimizer", build)


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
  """Uninterrupted runs, per optimizer: {name: (workdir, records, params)}."""
  runs = {}

  def get(name):
    if name not in runs:
      workdir = tmp_path_factory.mktemp(f"reference_{name}")
      result = train.run(small_config(name), workdir)
      runs[name] = (workdir, read_records(workdir), result.params)
    return runs[name]

  return get


def test_run_directory_contract(reference_runs):
  workdir, records, _ = reference_runs("mbag")
  config = json.loads((workdir / "config.json").read_text())
  assert {k: config[k] for k in ("task", "dataset", "optimizer", "seed", "preset")} == {
      "task": "digits_mlp", "dataset": "digits", "optimizer": "mbag", "seed": 0, "preset": "smoke"}
  assert config["learning_rate"] == config["learning_rates"]["mbag"]  # resolved and recorded
  assert "cpu" in config["hardware"] and config["steps_per_epoch"] == STEPS_PER_EPOCH
  assert [(r["step"], r["epoch"]) for r in records] == [(4, 1), (8, 1), (12, 2), (16, 2)]
  for r in records:
    assert {"wall_time", "train_loss", "train_accuracy", "grad_norm", "learning_rate"} <= set(r)
  assert "step_time" in records[1] and "examples_per_sec" in records[1]
  assert records[1]["examples_per_sec"] == pytest.approx(32 / records[1]["step_time"])
  assert "compile_time" in records[0] and "compile_time" not in records[1]
  # test metrics at the end of each epoch only
  assert ["test_accuracy" in r for r in records] == [False, True, False, True]
  assert 0.0 <= records[-1]["test_accuracy"] <= 1.0
  base = config["learning_rates"]["mbag"]  # x0.1 after epoch 1 (step 8)
  np.testing.assert_allclose([r["learning_rate"] for r in records],
                             [base, base, 0.1 * base, 0.1 * base], rtol=1e-6)
  walls = [r["wall_time"] for r in records]
  assert walls == sorted(walls)
  tags = tensorboard_tags(workdir)
  for tag in ("train/loss", "train/accuracy", "test/loss", "test/accuracy", "perf/step_time",
              "perf/examples_per_sec", "perf/wall_time"):
    assert tag in tags, sorted(tags)
  assert tags["test/accuracy"] == [8, 16]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["16", "8"]


def test_resume_after_sigint_matches_an_uninterrupted_run(tmp_path, monkeypatch, reference_runs):
  name = "mbag"
  _, reference, reference_params = reference_runs(name)
  interrupt_at(monkeypatch, 11, lambda: os.kill(os.getpid(), signal.SIGINT))
  with pytest.raises(train.Interrupted, match="SIGINT at step 11") as info:
    train.run(small_config(name), tmp_path)
  assert info.value.step == 11 and info.value.signum == signal.SIGINT
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["11", "8"]
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
  monkeypatch.undo()

  result = train.run(small_config(name), tmp_path)
  records = read_records(tmp_path)
  assert [r["step"] for r in records] == [r["step"] for r in reference]  # no gap, no duplicate
  for got, want in zip(records[:2], reference[:2]):  # before the interruption: identical
    assert {k: v for k, v in got.items() if k not in VOLATILE} == {
        k: v for k, v in want.items() if k not in VOLATILE}
  assert records[-1]["test_loss"] == pytest.approx(reference[-1]["test_loss"], rel=1e-6)
  for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(reference_params)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  walls = [r["wall_time"] for r in records]
  assert walls == sorted(walls)  # the clock continues across the restart


def test_resume_after_a_crash_drops_records_past_the_checkpoint(tmp_path, monkeypatch,
                                                                 reference_runs):
  _, reference, reference_params = reference_runs("mbag")

  def crash():
    raise RuntimeError("simulated crash")

  interrupt_at(monkeypatch, 13, crash)  # after the record at step 12, before the checkpoint at 16
  with pytest.raises(RuntimeError, match="simulated crash"):
    train.run(small_config("mbag"), tmp_path)
  assert [r["step"] for r in read_records(tmp_path)] == [4, 8, 12]
  monkeypatch.undo()
  result = train.run(small_config("mbag"), tmp_path)  # resumes from the checkpoint at step 8
  records = read_records(tmp_path)
  assert [r["step"] for r in records] == [4, 8, 12, 16]
  for got, want in zip(records, reference):
    assert {k: v for k, v in got.items() if k not in VOLATILE} == pytest.approx(
        {k: v for k, v in want.items() if k not in VOLATILE}, rel=1e-6)
  for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(reference_params)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_finished_run_is_not_retrained_and_other_configs_are_refused(reference_runs):
  workdir, reference, params = reference_runs("mbag")
  result = train.run(small_config("mbag"), workdir)
  assert read_records(workdir) == reference
  assert result.summary["test_loss"] == reference[-1]["test_loss"]
  for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match=r"different config \(seed: 0 -> 1\)"):
    train.run(small_config("mbag", seed=1), workdir)


def test_track_bound_logs_theorem_terms(tmp_path):
  train.run(small_config("mbag", track_bound=True, num_epochs=1), tmp_path)
  records = read_records(tmp_path)
  sums = [r["bound/sum_gamma_exact"] for r in records]
  assert all(b > a > 0 for a, b in zip(sums, sums[1:])) and len(sums) == 2
  assert all(r["bound/logdet_ratio"] > 0 for r in records)  # G_T grows from lambda I
  d = json.loads((tmp_path / "config.json").read_text())["num_params"]
  lam = digits.get_config("smoke").optimizer_config.mbag.initial_accumulator_value
  assert records[-1]["bound/trace_H0_sqrt"] == pytest.approx(d / np.sqrt(lam), rel=1e-5)
  assert "bound/sum_gamma_exact" in tensorboard_tags(tmp_path)


def test_track_bound_needs_mbag(tmp_path):
  with pytest.raises(ValueError, match="use --config.optimizer=mbag"):
    train.run(small_config("adam", track_bound=True), tmp_path)


def test_batch_larger_than_the_data_is_named(tmp_path):
  with pytest.raises(ValueError, match="batch_size=512 is larger than the 256 training examples"):
    train.run(small_config("adam", batch_size=512), tmp_path)
