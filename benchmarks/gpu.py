"""One entry point for an accelerator: update speed and step time of ResNet-56 and the CURVES autoencoder.

Runs, on whatever device JAX sees first (a GPU when there is one), on random data of the real shapes:

* ``update_speed``: the optimizer update alone on the ResNet-56 parameter tree (853,018
  parameters): Adam, AdaGrad, Shampoo and MBAG with dense / symmetric / symmetric + bfloat16-root
  storage (steady and root steps, state bytes per parameter, achieved bytes/s against a large copy);
* ``step_time``: the whole jitted training step (gradient + update) of ResNet-56 (batch 128) and
  of the CURVES autoencoder 784-400-200-100-50-25-6 (batch 512) for Adam, AdaGrad, KFAC, Shampoo
  and the three MBAG storages, with the paper's hyperparameters.

Every result is one JSON line with the hardware (device kind and count, platform, CPU, JAX version,
``nvidia-smi`` when present) and the command, appended to ``--out``:

  python -m benchmarks.gpu --out results/benchmarks/gpu.jsonl
  python -m benchmarks.gpu --tiny --out /tmp/gpu.jsonl   # seconds, on CPU (tests/test_gpu_benchmark.py)
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys

import jax

import benchmarks
from benchmarks import step_time
from benchmarks import update_speed
from experiments import xla_flags

MBAG_STORAGES = ("mbag", "mbag/symmetric", "mbag/symmetric_bf16")
FULL = {
    "update_repeats": 30,
    "step_time": [
        dict(task="cifar", depth=56, batch=128, steps=50, rounds=3,
             optimizers=["adam", "adagrad", "kfac", "shampoo", *MBAG_STORAGES]),
        dict(task="autoencoder", dataset="curves", batch=512, steps=50, rounds=3,
             optimizers=["adam", "adagrad", "kfac", "shampoo", *MBAG_STORAGES,
                         "mbag/whole_roots"]),  # the accelerators' default chunks vs none
    ],
}
# A test on CPU: the same code paths on a ResNet-8 tree and the 64-input digits autoencoder,
# fewer programs to compile (dense and symmetric + bfloat16 root storage only).
TINY = {
    "update_repeats": 2,
    "update_storages": ("default", "symmetric_bf16"),
    "step_time": [
        dict(task="autoencoder", dataset="digits", batch=8, steps=1, rounds=1,
             optimizers=["adam", "mbag/symmetric_bf16"]),
    ],
}


def hardware_info() -> dict:
  """What ran the benchmark: JAX's devices, the host, and nvidia-smi's view of the GPUs."""
  devices = jax.devices()
  info = {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
          "device_count": len(devices), "platform": platform.platform(),
          "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
          "jax": jax.__version__}
  if shutil.which("nvidia-smi"):
    try:
      out = subprocess.run(
          ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.memory",
           "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True)
      info["nvidia_smi"] = out.stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError) as e:
      info["nvidia_smi"] = f"failed: {e}"
  return info


def _tiny_tree():
  """ResNet-8 shapes (one block per stage): the update benchmark's code paths in seconds."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  shapes = {"stem": (3, 3, 3, 16), "conv_a": (3, 3, 16, 16), "conv_b": (3, 3, 16, 32),
            "conv_c": (3, 3, 32, 64), "head": (64, 10), "bias": (10,)}
  return {k: 0.1 * jnp.cos(jnp.arange(int(jnp.prod(jnp.array(s))), dtype=jnp.float32)).reshape(s)
          for k, s in shapes.items()}


def run(plan: dict, *, tiny: bool) -> list[dict]:
  """Runs the plan; returns the JSON records (without hardware and command)."""
  params = _tiny_tree() if tiny else update_speed.resnet56_params()
  storages = plan.get("update_storages", tuple(update_speed.STORAGES))
  records = [dict(update_speed.measure(params, plan["update_repeats"], 50, with_layouts=False,
                                       with_baselines=not tiny, storages=storages),
                  benchmark="update_speed", model="ResNet-8" if tiny else "ResNet-56")]
  for spec in plan["step_time"]:
    args = step_time.parse_args([])
    for k, v in spec.items():
      setattr(args, k, v)
    records.extend(step_time.measure(args))
  return records


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="results/benchmarks/gpu.jsonl",
                      help="append one JSON line per result to this file")
  parser.add_argument("--tiny", action="store_true", help="tiny sizes (a test on CPU)")
  args = parser.parse_args(argv)
  hardware = hardware_info()
  command = " ".join(["python -m benchmarks.gpu", *(sys.argv[1:] if argv is None else argv)])
  records = run(TINY if args.tiny else FULL, tiny=args.tiny)
  benchmarks.append_json_lines(
      args.out, [dict(r, hardware_info=hardware, command=command) for r in records])
  for r in records:
    if r["benchmark"] == "update_speed":
      print(f"update ({r['model']}): adam {r['adam_update_ms']:.2f} ms, mbag dense "
            f"{r['mbag_default_steady_ms']:.2f} ms ({r['mbag_default_steady_over_adam']:.2f}x), "
            f"symmetric + bf16 root {r['mbag_symmetric_bf16_steady_ms']:.2f} ms, "
            f"{r['symmetric_bf16_state_bytes_per_param']:.1f} B/param")
    else:
      print(f"step ({r['task']}) {r['optimizer']:<20} {r['seconds_per_step']:.4f} s "
            f"{r['ratio_to_adam']:.2f}x adam, {r['state_bytes_per_param']:.1f} B/param")
  print(f"{len(records)} records appended to {args.out} ({hardware['device_kind']})")


if __name__ == "__main__":
  xla_flags.set_entry_point_flags()
  main()
