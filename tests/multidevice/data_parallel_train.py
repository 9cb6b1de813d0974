"""Run in a subprocess with 8 simulated CPU devices (see tests/test_data_parallel.py); prints JSON.

The digits smoke config (256 training examples, batch 32, 1 epoch: 8 steps, MBAG roots at steps
4 and 8) trained by ``experiments.train.run`` on one device and with ``data_parallel=True`` on
8 devices, for MBAG and Adam; and a data-parallel MBAG run resumed from its checkpoint. The
optimizer's step is wrapped to record the state's sharding.
"""

import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
from experiments import xla_flags  # noqa: E402  (the entry points' flags)

xla_flags.set_entry_point_flags()

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import mbag  # noqa: E402
from experiments import optimizers  # noqa: E402
from experiments import train  # noqa: E402
from experiments.configs import digits  # noqa: E402

SEEN = {}


def spec(x):
  return str(getattr(x.sharding, "spec", "single device"))


def recording(build):
  """build_optimizer whose step records the specs and per-device bytes of the state it returns."""

  def build_and_record(config, loss_fn, lr, **kwargs):
    opt = build(config, loss_fn, lr, **kwargs)

    def step(*args):
      out = opt.step(*args)
      params, _, opt_state, _ = out
      SEEN["param_specs"] = sorted({spec(x) for x in jax.tree.leaves(params)})
      SEEN["batch_spec"] = spec(jax.tree.leaves(args[-1])[0])
      SEEN["state_bytes"] = mbag.bytes_per_device(opt_state)
      if config.optimizer == "mbag":
        s = mbag.find_mbag_state(opt_state)
        SEEN["stats_specs"] = sorted({spec(x) for x in s.stats + s.roots})
        SEEN["mbag_bytes"] = mbag.bytes_per_device(s)
        SEEN["stats_rows"] = [int(x.shape[0]) for x in s.stats]
      return out

    return opt._replace(step=step)

  return build_and_record


def config_for(name, data_parallel):
  c = digits.get_config("smoke")
  c.optimizer = name
  c.train_subset = 256
  c.test_subset = 200  # not a multiple of 8 x batch: the padded last test batch is split too
  c.eval_batch_size = 100  # rounded up to 104 (a multiple of 8) under data parallelism
  c.num_epochs = 1
  c.log_every_steps = 4
  c.data_parallel = data_parallel
  return c


def resume_check():
  """A data-parallel run stopped after epoch 1 and resumed to epoch 2 (restoring the sharded
  MBAG state from its checkpoint) against 2 epochs on one device."""
  two_epochs = {}
  for dp in (False, True):
    with tempfile.TemporaryDirectory() as workdir:
      if dp:
        train.run(config_for("mbag", True), workdir)
      config = config_for("mbag", dp)
      config.num_epochs = 2
      two_epochs[dp] = train.run(config, workdir)
  p1, p8 = (jax.tree.leaves(two_epochs[dp].params) for dp in (False, True))
  return {"max_abs_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                              for a, b in zip(p1, p8)),
          "max_abs_param": max(float(np.max(np.abs(np.asarray(a)))) for a in p1),
          "steps": [two_epochs[False].summary["step"], two_epochs[True].summary["step"]]}


def main():
  optimizers.build_optimizer = recording(optimizers.build_optimizer)
  out = {}
  for name in sys.argv[1:] or ["mbag", "adam"]:
    runs = {}
    for dp in (False, True):
      SEEN.clear()
      with tempfile.TemporaryDirectory() as workdir:
        result = train.run(config_for(name, dp), workdir)
        with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
          hardware = json.load(f)["hardware"]
      runs[dp] = (result, dict(SEEN), hardware)
    (single, seen1, _), (multi, seen8, hardware8) = runs[False], runs[True]
    p1, p8 = jax.tree.leaves(single.params), jax.tree.leaves(multi.params)
    out[name] = {
        "max_abs_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                            for a, b in zip(p1, p8)),
        "max_abs_param": max(float(np.max(np.abs(np.asarray(a)))) for a in p1),
        "train_loss": [single.summary["train_loss"], multi.summary["train_loss"]],
        "test_loss": [single.summary["test_loss"], multi.summary["test_loss"]],
        "test_accuracy": [single.summary["test_accuracy"], multi.summary["test_accuracy"]],
        "single": seen1, "multi": seen8, "hardware": hardware8,
    }
  if "mbag" in out:
    out["resume"] = resume_check()
  bad = config_for("mbag", True)
  bad.batch_size = 36
  try:
    train.resolve_config(bad)
  except ValueError as e:
    out["batch_size_error"] = str(e)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
