"""The shared training loop: run directory contract, resume, non-finite stop, bound tracking.

Runs use scikit-learn's digits (the real loader, offline) with a 256-example subset: 8 steps
per epoch of batch 32, 2 epochs, a record every 4 steps and a checkpoint every 8.
"""

import json
import os
import pathlib
import re
import signal
import struct

import jax
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

import mbag
from experiments import metrics
from experiments import periodic
from experiments import tasks
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

  def build(config, loss_fn, learning_rate, **kwargs):
    opt = real(config, loss_fn, learning_rate, **kwargs)
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
  # MBAG's own diagnostics at every record, read from the state of that step (the initial
  # state has root_steps, root_error and root_residual 0)
  for r in records:
    assert {k for k in r if k.startswith("opt/")} == {f"opt/{k}" for k in mbag.MBAGDiagnostics._fields}
    assert r["opt/root_steps"] == 5 and r["opt/min_denominator"] >= 1.0
    assert r["opt/num_nonfinite_grads"] == r["opt/num_skipped_blocks"] == 0
    assert 0.0 < r["opt/root_error"] and 0.0 < r["opt/root_residual"]
  assert tags["opt/root_error"] == tags["opt/min_denominator"] == [4, 8, 12, 16]


def test_an_optimizer_without_metrics_logs_none(reference_runs):
  _, records, _ = reference_runs("adam")
  assert not [k for r in records for k in r if k.startswith("opt/")]


def test_resume_after_sigint_matches_an_uninterrupted_run(tmp_path, monkeypatch, reference_runs):
  name = "mbag"
  _, reference, reference_params = reference_runs(name)
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs in a background job
  interrupt_at(monkeypatch, 11, lambda: os.kill(os.getpid(), signal.SIGINT))
  with pytest.raises(train.Interrupted, match="SIGINT at step 11") as info:
    train.run(small_config(name), tmp_path)
  assert info.value.step == 11 and info.value.signum == signal.SIGINT
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["11", "8"]
  assert signal.getsignal(signal.SIGINT) is before  # handler restored
  monkeypatch.undo()

  result = train.run(small_config(name), tmp_path)
  records = read_records(tmp_path)
  assert [r["step"] for r in records] == [r["step"] for r in reference]  # no gap, no duplicate
  for got, want in zip(records[:2], reference[:2]):  # before the interruption: identical
    assert {k: v for k, v in got.items() if k not in VOLATILE} == {
        k: v for k, v in want.items() if k not in VOLATILE}
  # the record at step 12 averages steps 9..12 although the run stopped after step 11: the
  # stats of steps 9..11 were saved in the checkpoint
  assert {k: v for k, v in records[2].items() if k not in VOLATILE} == pytest.approx(
      {k: v for k, v in reference[2].items() if k not in VOLATILE}, rel=1e-6)
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
  with pytest.raises(ValueError, match=r"checkpoints/16 was trained with another config \(seed: 0 -> 1\)"):
    train.run(small_config("mbag", seed=1), workdir)


def test_checkpoints_from_before_the_schedule_fields_and_adamw_resume(tmp_path):
  """A checkpoint's meta written before lr_schedule / warmup_steps / lr_final_fraction and the
  adamw entries existed resumes with today's equivalent config; a real change is refused."""
  import hashlib  # pylint: disable=import-outside-toplevel
  from experiments import resume  # pylint: disable=import-outside-toplevel
  config = train.resolve_config(small_config("mbag"))
  old = {k: v for k, v in json.loads(config.to_json()).items()
         if k not in resume.RESUMABLE_CHANGES and k not in (
             "lr_schedule", "warmup_steps", "lr_final_fraction", "eval_every_steps")}
  for table in ("learning_rates", "optimizer_config"):
    old[table] = {k: v for k, v in old[table].items() if k != "adamw"}
  text = json.dumps(old, sort_keys=True, separators=(",", ":"))
  meta = {resume.FINGERPRINT_KEY: hashlib.sha256(text.encode()).hexdigest(),
          resume.CONFIG_KEY: old}
  where, config_json = tmp_path / "checkpoints" / "8", tmp_path / "config.json"
  resume.check_config(meta, config, where, config_json)  # resumes
  config.eval_every_steps = 8  # when to evaluate does not change the path
  resume.check_config(meta, config, where, config_json)
  for field, value, shown in (("lr_schedule", "warmup_cosine", "lr_schedule: None -> 'warmup_cosine'"),
                              ("seed", 1, "seed: 0 -> 1")):
    changed = train.resolve_config(small_config("mbag"))
    changed[field] = value
    with pytest.raises(ValueError, match=re.escape(shown)):
      resume.check_config(meta, changed, where, config_json)
  changed = train.resolve_config(small_config("mbag"))
  changed.optimizer_config.mbag.block_size = 8
  with pytest.raises(ValueError, match="optimizer_config"):
    resume.check_config(meta, changed, where, config_json)


def test_evaluation_every_n_steps_and_the_warmup_cosine_rates_in_the_records(tmp_path):
  config = small_config("adam", lr_schedule="warmup_cosine", lr_decay_epochs=(), warmup_steps=4,
                        lr_final_fraction=0.1, eval_every_steps=4, eval_every_epochs=2)
  train.run(config, tmp_path)
  records = read_records(tmp_path)
  assert [r["step"] for r in records] == [4, 8, 12, 16]
  assert all("test_loss" in r for r in records)  # every 4 steps, not only after epoch 2
  lr = config.learning_rates["adam"]
  want = [lr * (0.1 + 0.9 * (1 + np.cos(np.pi * (s - 1 - 4) / 11)) / 2) for s in (8, 12, 16)]
  np.testing.assert_allclose([r["learning_rate"] for r in records],
                             [lr * 3 / 4] + want, rtol=1e-5)
  assert records[-1]["learning_rate"] == pytest.approx(0.1 * lr)


def test_track_bound_logs_theorem_terms(tmp_path):
  train.run(small_config("mbag", track_bound=True, num_epochs=1), tmp_path)
  records = read_records(tmp_path)
  sums = [r["bound/sum_gamma_exact"] for r in records]
  assert all(b > a > 0 for a, b in zip(sums, sums[1:])) and len(sums) == 2
  assert all(r["bound/logdet_ratio"] > 0 for r in records)  # G_T grows from lambda I
  config = json.loads((tmp_path / "config.json").read_text())
  lam = digits.get_config("smoke").optimizer_config.mbag.initial_accumulator_value
  assert records[-1]["bound/trace_H0_sqrt"] == pytest.approx(config["num_params"] / np.sqrt(lam),
                                                             rel=1e-5)
  tags = tensorboard_tags(tmp_path)
  assert "bound/sum_gamma_exact" in tags and "bound/L_estimate" in tags
  # The smoke preset is the paper's practical setting, said in config.json and every record
  # (the decay at epoch 1 is past the end of this 1-epoch run).
  assert config["theorem_1"] == {"covered": False, "differences": [
      "momentum 0.9 (the theorem: 0)", "root recomputed every 4 steps (the theorem: every step)",
      "5 Newton-Schulz steps, not converged in general (the theorem: the exact root; set "
      "newton_schulz_tolerance or root_method='eigh')"]}
  assert [r["bound/theorem_setting"] for r in records] == [0.0, 0.0]
  estimates = [r["bound/L_estimate"] for r in records]
  assert 0 < estimates[0] <= estimates[1]  # a running maximum


def theorem_config(decay_factor):
  """Theorem 1's setting (momentum 0, exact root every step), log every step, weight decay."""
  config = small_config("mbag", track_bound=True, log_every_steps=1, weight_decay=0.1,
                        lr_decay_factor=decay_factor, checkpoint_every_steps=16)
  config.num_epochs = 2
  config.optimizer_config.mbag.update(momentum=0.0, root_interval=1, root_method="eigh")
  return config


def test_track_bound_uses_the_scheduled_step_size_and_the_weight_decayed_gradient(tmp_path):
  """Two runs that differ only in the step size from step 9 on (x0.5 after epoch 1)."""
  train.run(theorem_config(1.0), tmp_path / "constant")
  train.run(theorem_config(0.5), tmp_path / "decayed")
  constant, decayed = read_records(tmp_path / "constant"), read_records(tmp_path / "decayed")
  assert json.loads((tmp_path / "constant" / "config.json").read_text())["theorem_1"] == {
      "covered": True, "differences": []}
  assert json.loads((tmp_path / "decayed" / "config.json").read_text())["theorem_1"] == {
      "covered": False, "differences": ["step size x0.5 at epochs [1] (the theorem: constant)"]}
  assert [r["bound/theorem_setting"] for r in constant] == [1.0] * 16
  # Steps 1-8 are the same run. Step 9's gradient is taken at the same theta_8, so H_9 is the
  # same: gamma_9 = eta_9 sqrt(lambda_min(H_9)) is half as large with the halved step size.
  for key in ("bound/gamma_exact", "bound/gamma_used", "bound/sum_gamma_exact"):
    np.testing.assert_allclose([r[key] for r in decayed[:8]], [r[key] for r in constant[:8]],
                               rtol=1e-6)
  assert decayed[8]["step"] == 9
  assert decayed[8]["bound/gamma_exact"] == pytest.approx(0.5 * constant[8]["bound/gamma_exact"],
                                                          rel=1e-5)
  assert decayed[8]["bound/eta_max"] == constant[8]["bound/eta_max"] == pytest.approx(
      decayed[0]["learning_rate"])
  # G: the largest norm of the gradient the statistics received, weight decay included.
  for records in (constant, decayed):
    objective = [r["objective_grad_norm"] for r in records]
    np.testing.assert_allclose([r["bound/G"] for r in records], np.maximum.accumulate(objective),
                               rtol=1e-5)
    assert max(objective) != pytest.approx(max(r["grad_norm"] for r in records), rel=1e-3)


def test_track_bound_needs_mbag(tmp_path):
  with pytest.raises(ValueError, match="use --config.optimizer=mbag"):
    train.run(small_config("adam", track_bound=True), tmp_path)


def test_batch_larger_than_the_data_is_named(tmp_path):
  with pytest.raises(ValueError, match="batch_size=512 is larger than the 256 training examples"):
    train.run(small_config("adam", batch_size=512), tmp_path)


def test_epoch_batches_cover_the_epoch_once_and_resume_mid_epoch():
  config = train.resolve_config(small_config("adam"))
  task = tasks.get_task(config.task)
  data = train.load_data(config, None, task, None)
  keys = train.make_keys(config.seed)
  epoch1 = list(train.epoch_batches(data, keys, 1, task=task, batch_size=32))
  assert [step for step, _, _ in epoch1] == list(range(8, 16))
  seen = np.concatenate([np.asarray(b["inputs"]) for _, b, _ in epoch1])
  rows = lambda a: sorted(map(tuple, np.asarray(a, np.float32)))  # noqa: E731
  assert rows(seen) == rows(data.dataset.x_train)  # a permutation of the 256 examples
  epoch0 = np.concatenate([np.asarray(b["inputs"]) for _, b, _ in
                           train.epoch_batches(data, keys, 0, task=task, batch_size=32)])
  assert not np.array_equal(epoch0, seen)  # each epoch its own order
  resumed = list(train.epoch_batches(data, keys, 1, 13, task=task, batch_size=32))
  assert [step for step, _, _ in resumed] == [13, 14, 15]
  for (_, got, got_rng), (_, want, want_rng) in zip(resumed, epoch1[5:]):
    np.testing.assert_array_equal(got["inputs"], want["inputs"])
    np.testing.assert_array_equal(got_rng, want_rng)


def test_evaluate_averages_over_the_real_examples_only():
  config = train.resolve_config(small_config("adam", test_subset=50))
  task = tasks.get_task(config.task)
  data = train.load_data(config, None, task, None)
  model = task.make_model(config, data.dataset)
  params, model_state = tasks.init_model(model, jax.random.PRNGKey(0), data.dataset.x_test[:1])
  xs, ys, masks = train._eval_batches(data.dataset.x_test, data.dataset.y_test, 16)
  assert xs.shape[:2] == (4, 16) and masks.sum() == 50  # 14 padded examples
  got = train.evaluate(tasks.make_eval_fn(task, model), params, model_state, xs, ys, masks)
  logits = model.apply({"params": params}, data.dataset.x_test.astype(np.float32), train=False)
  loss, metrics_ = tasks.softmax_cross_entropy(logits, data.dataset.y_test)
  assert float(got["test_loss"]) == pytest.approx(float(np.mean(loss)), rel=1e-5)
  assert float(got["test_accuracy"]) == pytest.approx(float(np.mean(metrics_["accuracy"])))


def test_train_step_and_create_train_state_are_the_optimizers():
  config = train.resolve_config(small_config("adam"))
  task = tasks.get_task(config.task)
  data = train.load_data(config, None, task, None)
  model = task.make_model(config, data.dataset)
  opt = optimizers.build_optimizer(config, tasks.make_loss_fn(task, model), config.learning_rate)
  keys = train.make_keys(config.seed)
  (_, batch, rng), = list(train.epoch_batches(data, keys, 0, 7, task=task, batch_size=32))
  state = train.create_train_state(model, opt, keys.init, batch, rng)
  assert state.tracker == () and int(state.opt_state[0].count) == 0
  before = jax.tree.map(np.array, state.params)
  state, stats = train.train_step(opt, state, batch, rng)
  assert int(state.opt_state[0].count) == 1
  # Adam's first step moves every parameter by lr * g / (|g| + eps) ~ lr where g != 0
  moved = np.concatenate([np.abs(np.asarray(a) - b).ravel()
                          for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before))])
  assert moved.max() == pytest.approx(config.learning_rate, rel=1e-3)
  assert float(stats["loss"]) > 0 and 0.0 <= float(stats["accuracy"]) <= 1.0


class FakeCollective:
  """Two processes' ``max_over_processes``: the other process reports ``other``."""

  def __init__(self, other):
    self.other, self.calls = other, []

  def __call__(self, value):
    self.calls.append(value)
    return max(value, self.other)


def test_the_stop_signal_is_agreed_at_the_log_interval_only():
  collective = FakeCollective(other=0)
  with periodic.StopOnSignal(num_processes=2, max_over_processes=collective) as stop:
    at_log = [step % 4 == 0 for step in range(1, 13)]
    agreed = [stop.agreed(log) for log in at_log[:6]]
    stop.signum = signal.SIGTERM  # this process received SIGTERM after step 6
    agreed += [stop.agreed(log) for log in at_log[6:]]
  assert collective.calls == [0, signal.SIGTERM, signal.SIGTERM]  # steps 4, 8, 12: no per-step call
  assert agreed[:7] == [None] * 7 and agreed[7] == signal.SIGTERM  # all stop after step 8
  other = FakeCollective(other=signal.SIGINT)  # only the other process received one
  assert periodic.StopOnSignal(2, other).agreed(True) == signal.SIGINT
  assert periodic.StopOnSignal(2, other).agreed(False) is None
  alone = periodic.StopOnSignal(num_processes=1, max_over_processes=None)
  alone.signum = signal.SIGINT
  assert alone.agreed(False) == signal.SIGINT  # one process: the next step, no collective
