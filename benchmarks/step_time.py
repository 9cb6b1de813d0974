r"""Time of the whole jitted training step (gradient + update) of every optimizer, relative to Adam.

  python -m benchmarks.step_time [--task cifar] [--depth 20] [--batch 32] [--steps 50] [--rounds 3]
  python -m benchmarks.step_time --task autoencoder --dataset curves --batch 128
  python -m benchmarks.step_time --task char_lm --optimizers adamw,mbag [--scan]

The step is ``experiments.optimizers.build_optimizer(...).step`` on the model and
loss of an ``experiments`` task, with the hyperparameters of the config's
``paper`` preset (``reference`` for the Shakespeare transformer, ``char_lm``; T1 = 5,
T2 = T_sqr = 50, tau = 32, ...) and the dimension numbers its model declares, on one fixed
random batch, so the periodic work (roots, inverses, curvature updates) is in
the average: each timed window is ``--steps`` consecutive steps (default 50,
one T2 period). All optimizers live in one process and are timed interleaved,
one window each per round, so that load on a shared machine hits them alike;
the result is the median over rounds of the mean step time. Warm-up: one full
period per optimizer before timing (kfac-jax compiles one program per kind of
step).

MBAG's storage options are named ``<optimizer>/<variant>`` (``mbag/symmetric``,
``mbag/symmetric_bf16``, ``mbag/whole_roots``, see :data:`VARIANTS`): the same optimizer with those
keyword arguments.

Prints a table (seconds per step, ratio to Adam, bytes of optimizer state per
parameter) and, with ``--json``, appends one JSON line per optimizer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import benchmarks
from experiments import models
from experiments import optimizers as optimizers_lib
from experiments import tasks
from experiments import train
from experiments import xla_flags
from experiments.configs import autoencoder as autoencoder_configs
from experiments.configs import cifar as cifar_configs
from experiments.configs import shakespeare as shakespeare_configs
from experiments.data import shakespeare as shakespeare_data

PAPER_RATIOS = {"adam": 1.0, "adablock": 4.13}  # Section VI.A: MBAG "as fast as Adam"
INPUT_DIMS = {"mnist": 784, "curves": 784, "faces": 625, "digits": 64}


def _cifar_setup(args):
  config = cifar_configs.get_config("paper")
  model = models.CifarResNet(depth=args.depth, num_classes=10)
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (args.batch, 32, 32, 3)).astype(np.float32)
  inputs = jnp.asarray((images / 255.0 - 0.5) / 0.25)  # normalised like the real pipeline
  labels = jnp.asarray(rng.randint(0, 10, args.batch), jnp.int32)
  return config, tasks.get_task("cifar"), model, {"inputs": inputs, "targets": labels}, \
      f"ResNet-{args.depth} on 32x32x3 images"


def _autoencoder_setup(args):
  config = autoencoder_configs.get_config("paper")
  config.dataset = args.dataset
  widths = models.ARCHITECTURES[args.dataset]
  dim = INPUT_DIMS[args.dataset]
  model = models.DeepAutoencoder(encoder_widths=widths, output_dim=dim)
  x = jnp.asarray(np.random.RandomState(0).rand(args.batch, dim), jnp.float32)
  arch = "-".join(str(w) for w in (dim, *widths))
  return config, tasks.get_task("autoencoder"), model, {"inputs": x, "targets": x}, \
      f"{args.dataset} autoencoder {arch} (mirrored)"


def _char_lm_setup(args):
  config = shakespeare_configs.get_config("scan" if args.scan else "reference")
  vocab, context = SHAKESPEARE_VOCABULARY, shakespeare_data.CONTEXT
  m = config.model
  model = models.CharTransformer(vocab_size=vocab, context=context, d_model=m.d_model,
                                 num_heads=m.num_heads, num_layers=m.num_layers,
                                 mlp_ratio=m.mlp_ratio, scan=m.scan)
  rows = jnp.asarray(np.random.RandomState(0).randint(0, vocab, (args.batch, context + 1)),
                     jnp.int32)
  task = tasks.get_task("char_lm")
  batch = {"inputs": task.train_inputs(None, rows), "targets": task.targets(rows, rows)}
  return config, task, model, batch, (
      f"character transformer d={m.d_model}, {m.num_heads} heads, {m.num_layers} layers"
      f"{' (nn.scan)' if m.scan else ''}, context {context}, vocabulary {vocab}")


SETUPS = {"cifar": _cifar_setup, "autoencoder": _autoencoder_setup, "char_lm": _char_lm_setup}
# The vocabulary size of the Shakespeare text (experiments/data/shakespeare.py): the batch is
# random tokens, so the data file is not needed.
SHAKESPEARE_VOCABULARY = 77
# "<optimizer>/<variant>": the optimizer's config section updated with these keyword arguments.
VARIANTS = {
    "symmetric": {"storage": "symmetric"},
    "symmetric_bf16": {"storage": "symmetric", "root_dtype": "bfloat16"},
    # every bucket's roots at once instead of the default chunks (root_chunk_size)
    "whole_roots": {"root_chunk_size": 0},
}


def _tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def build_steps(args):
  """Per optimizer: a closure running ``n`` steps and returning the last stats; plus a description."""
  config, task, model, batch, what = SETUPS[args.task](args)
  params, model_state = tasks.init_model(model, jax.random.PRNGKey(0), batch["inputs"])
  loss_fn = tasks.make_loss_fn(task, model)
  rng = jax.random.PRNGKey(1)
  runners, state_bytes = {}, {}
  for name in args.optimizers:
    base_name, _, variant = name.partition("/")
    if variant and variant not in VARIANTS:
      raise ValueError(f"unknown variant {variant!r} in {name!r}; known: {sorted(VARIANTS)}")
    run_config = config.copy_and_resolve_references()
    run_config.optimizer = base_name
    run_config = train.resolve_config(run_config)
    if variant:
      run_config.optimizer_config[base_name].update(VARIANTS[variant])
    opt = optimizers_lib.build_optimizer(run_config, loss_fn, run_config.learning_rate,
                                         dimension_numbers=task.dimension_numbers(run_config))
    # Each optimizer trains its own copy (the step donates its inputs).
    state = {"p": jax.tree.map(jnp.copy, params), "m": jax.tree.map(jnp.copy, model_state)}
    state["o"] = opt.init(state["p"], state["m"], rng, batch)
    state_bytes[name] = _tree_bytes(state["o"])

    def run(n, opt=opt, state=state):
      stats = None
      for _ in range(n):
        state["p"], state["m"], state["o"], stats = opt.step(state["p"], state["m"], state["o"],
                                                             rng, batch)
      jax.block_until_ready(stats)
      return stats

    runners[name] = run
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  bytes_per_param = {name: b / num_params for name, b in state_bytes.items()}
  return runners, f"{what}, {num_params:,} parameters, batch {args.batch}", bytes_per_param


def measure(args) -> list[dict]:
  """One record per optimizer: seconds per step (median over rounds), ratio to Adam, state bytes."""
  runners, what, bytes_per_param = build_steps(args)
  compile_times = {}
  for name, run in runners.items():
    start = time.perf_counter()
    run(args.steps)  # compiles every kind of step and fills the periodic state
    compile_times[name] = time.perf_counter() - start
  times = {name: [] for name in runners}
  for _ in range(args.rounds):
    for name, run in runners.items():
      start = time.perf_counter()
      run(args.steps)
      times[name].append((time.perf_counter() - start) / args.steps)
  median = {name: statistics.median(ts) for name, ts in times.items()}
  return [{"benchmark": "step_time", "task": args.task, "model": what, "optimizer": name,
           "seconds_per_step": median[name], "ratio_to_adam": median[name] / median["adam"],
           "state_bytes_per_param": bytes_per_param[name], "warm_up_seconds": compile_times[name],
           "all_rounds": times[name], "steps_per_window": args.steps, "rounds": args.rounds,
           "hardware": benchmarks.hardware(), "jax_version": jax.__version__} for name in runners]


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", choices=sorted(SETUPS), default="cifar")
  parser.add_argument("--depth", type=int, default=20, help="ResNet depth 6n+2 (cifar)")
  parser.add_argument("--dataset", choices=sorted(models.ARCHITECTURES), default="curves",
                      help="autoencoder architecture (autoencoder)")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--scan", action="store_true", help="the nn.scan model (char_lm)")
  parser.add_argument("--steps", type=int, default=50, help="steps per timed window")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--optimizers", default="adam,adagrad,kfac,shampoo,adablock,mbag,mbag_n,mbag_ema")
  parser.add_argument("--json", default=None, help="append the results to this JSON lines file")
  args = parser.parse_args(argv)
  args.optimizers = [s for s in args.optimizers.split(",") if s]
  if "adam" not in args.optimizers:
    args.optimizers.insert(0, "adam")
  return args


def main(argv=None):
  args = parse_args(argv)
  records = measure(args)
  print(f"{records[0]['model']}; {records[0]['hardware']}; {args.steps} steps per window, "
        f"median of {args.rounds} rounds")
  print(f"{'optimizer':<20} {'s/step':>9} {'vs adam':>8} {'paper':>6} {'B/param':>8} {'warm-up s':>10}")
  for r in records:
    paper = PAPER_RATIOS.get(r["optimizer"])
    print(f"{r['optimizer']:<20} {r['seconds_per_step']:>9.4f} {r['ratio_to_adam']:>7.2f}x "
          f"{'' if paper is None else f'{paper:.2f}x':>6} {r['state_bytes_per_param']:>8.1f} "
          f"{r['warm_up_seconds']:>10.1f}")
  if args.json:
    command = " ".join(["python -m benchmarks.step_time", *(sys.argv[1:] if argv is None else argv)])
    benchmarks.append_json_lines(args.json, [dict(r, command=command) for r in records])


if __name__ == "__main__":
  xla_flags.set_entry_point_flags()
  main()
