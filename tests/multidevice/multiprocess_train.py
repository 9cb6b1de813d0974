"""The experiments' training loop over several JAX processes; one of ``--num_processes``.

Run by tests/test_data_parallel.py: two processes on 127.0.0.1 with 2 simulated CPU devices each
(joined by ``jax.distributed`` through the entry point's ``--coordinator_address`` /
``--num_processes`` / ``--process_id``), and one process with 4 devices as the reference, each
pair into its own workdir. Each process trains the digits smoke config with MBAG and
``data_parallel=true`` for one epoch through ``experiments.cifar.main`` (the command line's
code), then resumes the run from its checkpoint for a second epoch through
``experiments.train.run``; it prints JSON with the exit status, the summaries and the final
(replicated) parameters of both.

  python tests/multidevice/multiprocess_train.py --num_processes=2 --process_id=0 \
      --devices_per_process=2 --port=12345 --workdir=/tmp/run
"""

import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--num_processes", type=int, default=1)
parser.add_argument("--process_id", type=int, default=0)
parser.add_argument("--devices_per_process", type=int, default=4)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--workdir", required=True)
ARGS = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices_per_process}"
from experiments import xla_flags  # noqa: E402  (the entry points' flags)

xla_flags.set_entry_point_flags()

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import cifar  # noqa: E402
from experiments import cli  # noqa: E402
from experiments import train  # noqa: E402

# The smoke preset on 512 training examples: 16 steps of 32 per epoch, MBAG roots every 4.
OVERRIDES = {"optimizer": "mbag", "data_parallel": "true", "num_epochs": "1",
             "train_subset": "512", "log_every_steps": "8"}
RESULTS = []


def recording(run):
  def run_and_record(config, workdir, data_dir=None):
    result = run(config, workdir, data_dir)
    RESULTS.append(result)
    return result
  return run_and_record


def describe(result):
  leaves = jax.tree.leaves(result.params)
  return {
      "summary": {k: v for k, v in result.summary.items() if isinstance(v, (int, float))},
      # Replicated: every process reads its own devices' copy.
      "params": [np.asarray(x).ravel().tolist() for x in leaves],
      "param_fully_addressable": [bool(x.is_fully_addressable) for x in leaves],
  }


def main():
  train.run = recording(train.run)
  argv = ["cifar", f"--config={cli.CONFIG_DIR / 'digits.py'}:smoke", f"--workdir={ARGS.workdir}"]
  argv += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  if ARGS.num_processes > 1:
    argv += [f"--coordinator_address=127.0.0.1:{ARGS.port}",
             f"--num_processes={ARGS.num_processes}", f"--process_id={ARGS.process_id}"]
  status = cifar.main(argv)
  out = {"status": status, "process_id": jax.process_index(),
         "process_count": jax.process_count(), "device_count": jax.device_count(),
         "local_device_count": jax.local_device_count()}
  if status == 0:
    out["epoch1"] = describe(RESULTS[-1])
    # Resumed from the checkpoint of epoch 1 (every process restores its shards).
    config = _parsed_config(argv)  # the same config, two epochs
    config.num_epochs = 2
    out["epoch2"] = describe(train.run(config, ARGS.workdir))
  print(json.dumps(out), flush=True)


def _parsed_config(argv):
  flag_values = cli.flags.FlagValues()
  cli.define_flags(cifar.CONFIG_FILE, flag_values, argv)
  flag_values(list(argv))
  return flag_values.config


if __name__ == "__main__":
  main()
