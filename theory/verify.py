r"""Numerical verification of Theorem 1: both sides of the bound on problems where it can be judged.

  python -m theory.verify [--quick] [--out DIR] [--problems a,b] [--seeds N]

For each problem, setting and seed, MBAG runs to the largest horizon (float64 parameters and
statistics, inside ``jax.enable_x64``) with :func:`theory.update_tracker` at every step and the
full-batch gradient measured at every step; one record per horizon T reads the running terms.

Settings (:data:`SETTINGS`):

* ``theorem``: what Theorem 1 covers: fixed step, momentum 0, the exact current root every step
  (Newton-Schulz to ``||I - YX||_F <= 1e-9`` in float64; the records carry the used and exact
  gamma sums, which agree; ``root_method="eigh"`` would do too but can hang on jax 0.10.2's CPU
  runtime, see docs/numerics.md, "Known issues").
* ``stale_root``: momentum 0 with the paper's root (5 Newton-Schulz steps every 50 steps).
* ``practical``: the paper's settings: momentum 0.9, 5 Newton-Schulz steps every 50 steps.

Only ``theorem`` is covered by the theorem; the others evaluate the same formula with the gamma of
the roots used. Terms: see :mod:`theory.tracker` and docs/theory.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mbag
import theory
from theory import bound
from theory import problems as problems_lib

LAMBDA = 0.01


class Setting(NamedTuple):
  """An MBAG configuration to verify at."""

  momentum: float
  root_interval: int
  newton_schulz_steps: int
  newton_schulz_tolerance: float | None
  covered_by_theorem: bool
  description: str


SETTINGS = {
    "theorem": Setting(0.0, 1, 5, 1e-9, True, "momentum 0, exact root every step"),
    "stale_root": Setting(0.0, 50, 5, None, False, "momentum 0, 5 Newton-Schulz steps every 50 steps"),
    "practical": Setting(0.9, 50, 5, None, False,
                         "paper: momentum 0.9, 5 Newton-Schulz steps every 50 steps"),
}
LEARNING_RATES = {"quadratic": 0.01, "logistic_digits": 0.02, "mlp_digits": 0.02}
BLOCK_SIZES = {"quadratic": 8, "logistic_digits": 32, "mlp_digits": 32}
TRACE_KEYS = ("bound/lhs", "bound/logdet_ratio", "bound/sum_gamma_used", "bound/sum_gamma_exact",
              "bound/G", "bound/min_loss", "bound/potential_exact", "bound/potential_used",
              "ns/min_normalised_eigenvalue", "ns/predicted_steps", "ns/root_error_vs_current_H")


class Plan(NamedTuple):
  """What to run."""

  problems: tuple[str, ...]
  settings: tuple[str, ...]
  seeds: tuple[int, ...]
  horizons: tuple[int, ...]
  chunk: int  # steps per compiled scan; horizons are multiples of it
  hessian_every: int  # steps between Hessian-norm estimates (plus theta_0 and every horizon)


FULL = Plan(tuple(problems_lib.REGISTRY), tuple(SETTINGS), (0, 1, 2), (50, 200, 800, 3200), 50, 400)
QUICK = Plan(("quadratic", "logistic_digits"), ("theorem", "practical"), (0,), (20, 60), 20, 20)


def _optimizer(name: str, setting: Setting):
  return mbag.mbag(
      LEARNING_RATES[name], block_size=BLOCK_SIZES[name], initial_accumulator_value=LAMBDA,
      momentum=setting.momentum, root_interval=setting.root_interval,
      newton_schulz_steps=setting.newton_schulz_steps,
      newton_schulz_tolerance=setting.newton_schulz_tolerance, newton_schulz_max_steps=80,
      statistics_dtype=jnp.float64)


class Runner(NamedTuple):
  """Compiled pieces for one (problem, setting), reused across seeds."""

  problem: problems_lib.Problem
  setting_name: str
  tx: optax.GradientTransformation
  run_chunk: object  # (carry, keys) -> (carry, per-step scalars)
  hessian: object  # (params, key) -> Hessian-norm estimate


def make_runner(problem: problems_lib.Problem, setting_name: str, hessian=None) -> Runner:
  """Builds the jitted chunk of steps (MBAG step + tracker + full gradient and loss at theta_t)."""
  tx = _optimizer(problem.name, SETTINGS[setting_name])
  f = problem.loss
  grad_f = jax.grad(f)

  def step(carry, key):
    params, opt_state, ts = carry
    g = problem.stochastic_grad(params, key)
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
    ts, scalars = theory.update_tracker(ts, opt_state, g, full_grad=grad_f(params), loss=f(params))
    return (params, opt_state, ts), {k: scalars[k] for k in TRACE_KEYS}

  if hessian is None:
    hessian = jax.jit(lambda p, k: problems_lib.hessian_norm_estimate(f, p, k))
  return Runner(problem, setting_name, tx, jax.jit(lambda carry, keys: jax.lax.scan(step, carry, keys)),
                hessian)


def run_one(runner: Runner, seed: int, plan: Plan):
  """Runs one seed to ``max(plan.horizons)``; returns (records, per-step traces)."""
  problem = runner.problem
  params = problem.init
  opt_state = runner.tx.init(params)
  ts = theory.init_tracker(params, opt_state, eta=LEARNING_RATES[problem.name], lam=LAMBDA,
                           block_size=BLOCK_SIZES[problem.name])
  key = jax.random.PRNGKey(seed)
  f0 = float(problem.loss(params))
  carry = (params, opt_state, ts)
  L_points = [(0, float(runner.hessian(params, jax.random.fold_in(key, 10**6))))]
  traces = []
  t_max = max(plan.horizons)
  for start in range(0, t_max, plan.chunk):
    keys = jax.random.split(jax.random.fold_in(key, start), plan.chunk)
    carry, out = runner.run_chunk(carry, keys)
    traces.append(jax.tree.map(np.asarray, out))
    t = start + plan.chunk
    if t % plan.hessian_every == 0 or t in plan.horizons:
      L_points.append((t, float(runner.hessian(carry[0], jax.random.fold_in(key, 10**6 + t)))))
  traces = {k: np.concatenate([tr[k] for tr in traces]) for k in TRACE_KEYS}
  records = [_record(problem, runner.setting_name, seed, T, traces, L_points, f0, carry[2].num_params)
             for T in plan.horizons]
  traces["L_estimate"] = np.array([max(v for t, v in L_points if t <= s) for s in range(1, t_max + 1)])
  return records, traces


def _record(problem, setting_name, seed, T, traces, L_points, f0, num_params) -> dict:
  setting = SETTINGS[setting_name]
  at = {k: float(v[T - 1]) for k, v in traces.items()}
  L_est = max(v for t, v in L_points if t <= T)
  L = problem.L if problem.L_exact else L_est
  sum_gamma = at["bound/sum_gamma_exact"] if setting.covered_by_theorem else at["bound/sum_gamma_used"]
  rec = {
      "problem": problem.name, "setting": setting_name, "T": T, "seed": seed,
      "covered_by_theorem": setting.covered_by_theorem, "setting_description": setting.description,
      "momentum": setting.momentum,
      "L": float(L), "L_exact": problem.L_exact, "L_note": problem.L_note,
      "L_estimate": L_est, "eta": LEARNING_RATES[problem.name], "lambda": LAMBDA,
      "logdet_ratio": at["bound/logdet_ratio"], "sum_gamma": sum_gamma,
      "sum_gamma_exact_root": at["bound/sum_gamma_exact"],
      "sum_gamma_used_root": at["bound/sum_gamma_used"],
      "trace_H0_sqrt": num_params / np.sqrt(LAMBDA), "G": at["bound/G"],
      "G_note": "largest stochastic or full gradient norm at every step of this run (the proof "
                "uses the bound only at visited points)",
      "C": f0 - problem.f_star, "C_exact": problem.f_star_exact, "f_star": problem.f_star,
      "f_star_note": problem.f_star_note, "f0": f0,
      "lhs": at["bound/lhs"], "lhs_note": "min over t = 1..T of |grad f(theta_t)|^2, every step",
      "num_params": int(num_params), "block_size": BLOCK_SIZES[problem.name],
      "final_loss": at["bound/min_loss"],
      "potential_exact": at["bound/potential_exact"], "potential_used": at["bound/potential_used"],
      "ns_min_normalised_eigenvalue": at["ns/min_normalised_eigenvalue"],
      "ns_predicted_steps_1e-3": at["ns/predicted_steps"],
      "root_error_vs_current_H": at["ns/root_error_vs_current_H"],
  }
  names = {n: rec[n] for n in bound.NAMES}
  rec["rhs"] = bound.rhs(**names)
  rec.update(bound.numerator_parts(**names))
  rec["ratio"] = rec["lhs"] / rec["rhs"]
  rec["holds"] = bool(rec["lhs"] <= rec["rhs"])
  rec["trivial_ratio"] = bound.trivial_ratio(T, num_params)
  rec["vacuous"] = bool(rec["trivial_ratio"] <= 1.0)
  rec["logdet_over_sum_gamma"] = rec["logdet_ratio"] / sum_gamma
  rec["lemma_holds"] = bool(rec["potential_exact"] <= rec["logdet_ratio"] * (1 + 1e-9) + 1e-9)
  # C with f* replaced by an upper bound of it (the lowest loss seen) when f* is only a lower
  # bound: this C is <= the true C, so holds_conservative is a check the true C also passes.
  c_cons = rec["C"] if problem.f_star_exact else f0 - at["bound/min_loss"]
  rec["C_conservative"] = c_cons
  rec["rhs_conservative"] = bound.rhs(**{**names, "C": c_cons})
  rec["holds_conservative"] = bool(rec["lhs"] <= rec["rhs_conservative"])
  return rec


def summarise(records: list[dict]) -> list[dict]:
  """One row per (problem, setting, T): seed means, worst ratio, and the expectation form.

  ``holds_in_mean``: ``mean_seeds(lhs * sum_gamma) <= mean_seeds(numerator)``, the theorem's
  statement with expectations estimated by the seed mean.
  """
  rows = []
  keys = []
  for r in records:
    k = (r["problem"], r["setting"], r["T"])
    if k not in keys:
      keys.append(k)
  for k in keys:
    rs = [r for r in records if (r["problem"], r["setting"], r["T"]) == k]
    mean = lambda name: float(np.mean([r[name] for r in rs]))  # noqa: E731
    num = [bound.numerator(**{n: r[n] for n in bound.NAMES}) for r in rs]
    rows.append({
        "problem": k[0], "setting": k[1], "T": k[2], "seeds": len(rs),
        "lhs": mean("lhs"), "rhs": mean("rhs"), "max_ratio": max(r["ratio"] for r in rs),
        "holds": sum(r["holds"] for r in rs), "holds_conservative": sum(r["holds_conservative"] for r in rs),
        "holds_in_mean": bool(np.mean([r["lhs"] * r["sum_gamma"] for r in rs]) <= np.mean(num)),
        "trivial_ratio": rs[0]["trivial_ratio"], "logdet_ratio": mean("logdet_ratio"),
        "sum_gamma": mean("sum_gamma"), "logdet_over_sum_gamma": mean("logdet_over_sum_gamma"),
        "potential_used_over_logdet": mean("potential_used") / mean("logdet_ratio"),
        "L": mean("L"), "L_exact": rs[0]["L_exact"], "G": mean("G"), "C": mean("C"),
        "covered": rs[0]["covered_by_theorem"],
    })
  return rows


def format_table(rows: list[dict]) -> str:
  """The printed table (also used for docs/theory.md)."""
  head = (f"{'problem':<16}{'setting':<11}{'T':>5}{'lhs':>10}{'rhs':>10}{'max l/r':>9}{'holds':>7}"
          f"{'E-form':>7}{'(T+1)/2(d+1)':>13}{'logdet':>8}{'sum_gam':>9}{'ld/sg':>8}{'pot/ld':>8}"
          f"{'L':>8}{'G':>8}{'C':>7}")
  lines = [head, "-" * len(head)]
  for r in rows:
    L = f"{r['L']:.3g}" + ("" if r["L_exact"] else "*")
    lines.append(
        f"{r['problem']:<16}{r['setting']:<11}{r['T']:>5}{r['lhs']:>10.3g}{r['rhs']:>10.3g}"
        f"{r['max_ratio']:>9.2g}{str(r['holds']) + '/' + str(r['seeds']):>7}"
        f"{'yes' if r['holds_in_mean'] else 'NO':>7}{r['trivial_ratio']:>13.3g}{r['logdet_ratio']:>8.1f}"
        f"{r['sum_gamma']:>9.3g}{r['logdet_over_sum_gamma']:>8.3g}{r['potential_used_over_logdet']:>8.3g}"
        f"{L:>8}{r['G']:>8.3g}{r['C']:>7.3g}")
  lines.append("lhs, rhs: seed means; max l/r: worst lhs/rhs; holds: seeds with lhs <= rhs; E-form: "
               "mean(lhs*sum_gamma) <= mean(numerator);\n(T+1)/2(d+1): lhs/rhs can never exceed it "
               "(<= 1: the check is vacuous); ld/sg: log det / sum gamma (-> 0 for convergence); "
               "pot/ld: sum |R_t g_t|^2 / log det\n(<= 1 by the elliptical potential lemma for the exact "
               "root); * L estimated from below (MLP), so its rows are not certified.")
  return "\n".join(lines)


def save_figure(all_traces: dict, plan: Plan, records: list[dict], path: str) -> None:
  """Terms over t (seed 0): both sides, log det and sum gamma, and their ratio; one column per problem."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  names = [p for p in plan.problems if any(k[0] == p for k in all_traces)]
  fig, axes = plt.subplots(3, len(names), figsize=(4.4 * len(names), 9.0), squeeze=False)
  styles = {"theorem": "-", "stale_root": ":", "practical": "--"}
  for j, name in enumerate(names):
    rec = next(r for r in records if r["problem"] == name)
    d = rec["num_params"]
    for setting in plan.settings:
      tr = all_traces.get((name, setting, plan.seeds[0]))
      if tr is None:
        continue
      t = np.arange(1, len(tr["bound/lhs"]) + 1)
      covered = SETTINGS[setting].covered_by_theorem
      sg = tr["bound/sum_gamma_exact"] if covered else tr["bound/sum_gamma_used"]
      L = np.full(t.shape, rec["L"]) if rec["L_exact"] else tr["L_estimate"]
      rhs = bound._rhs(L, rec["eta"], tr["bound/logdet_ratio"], tr["bound/G"],  # pylint: disable=protected-access
                       rec["trace_H0_sqrt"], rec["lambda"], rec["C"], sg)
      ls = styles.get(setting, "-.")
      axes[0, j].loglog(t, tr["bound/lhs"], ls, color="C0", label=f"lhs, {setting}")
      axes[0, j].loglog(t, rhs, ls, color="C3", label=f"rhs, {setting}")
      axes[1, j].loglog(t, tr["bound/logdet_ratio"], ls, color="C2", label=f"log det ratio, {setting}")
      axes[1, j].loglog(t, sg, ls, color="C1", label=f"sum gamma, {setting}")
      axes[1, j].loglog(t, tr["bound/potential_used"], ls, color="C7", label=f"sum |R g|^2, {setting}")
      axes[2, j].loglog(t, tr["bound/logdet_ratio"] / sg, ls, color="k", label=f"log det / sum gamma, {setting}")
    for row in range(3):
      axes[row, j].axvline(2 * d + 1, color="0.6", lw=0.8)
      axes[row, j].set_xlabel("t (steps)")
      axes[row, j].legend(fontsize=6)
    axes[0, j].set_title(f"{name} (d={d}; L {'exact' if rec['L_exact'] else 'estimated'})\n"
                         f"grey line: T = 2d+1, below it the check is vacuous", fontsize=9)
    axes[0, j].set_ylabel("squared gradient norm")
    axes[1, j].set_ylabel("term")
    axes[2, j].set_ylabel("ratio")
  fig.suptitle("Theorem 1 over t (seed 0)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(plan: Plan, out: str | None) -> tuple[list[dict], list[dict]]:
  """Runs ``plan`` (inside ``jax.enable_x64``); writes verify.json and the figure under ``out``."""
  records, all_traces = [], {}
  with jax.enable_x64(True):
    for name in plan.problems:
      problem = problems_lib.REGISTRY[name]()
      hessian = None
      for setting in plan.settings:
        runner = make_runner(problem, setting, hessian)
        hessian = runner.hessian
        for seed in plan.seeds:
          t0 = time.time()
          recs, traces = run_one(runner, seed, plan)
          logging.info("%s / %s / seed %d: %.1f s", name, setting, seed, time.time() - t0)
          records += recs
          all_traces[(name, setting, seed)] = traces
  rows = summarise(records)
  if out:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "verify.json"), "w", encoding="utf-8") as fh:
      json.dump(records, fh, indent=1)
    save_figure(all_traces, plan, records, os.path.join(out, "theory_terms.png"))
  return records, rows


def main(argv=None) -> int:
  """Command line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description="Verify Theorem 1 of the MBAG paper numerically.")
  parser.add_argument("--quick", action="store_true",
                      help="two problems, two settings, one seed, T in {20, 60} (seconds)")
  parser.add_argument("--out", default="runs/theory_verify",
                      help="directory for verify.json and theory_terms.png (default: %(default)s)")
  parser.add_argument("--problems", default=None,
                      help=f"comma-separated subset of {','.join(problems_lib.REGISTRY)}")
  parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; quick 1)")
  args = parser.parse_args(argv)
  plan = QUICK if args.quick else FULL
  if args.problems:
    chosen = tuple(p.strip() for p in args.problems.split(",") if p.strip())
    unknown = [p for p in chosen if p not in problems_lib.REGISTRY]
    if unknown:
      parser.error(f"--problems: unknown {unknown}; choose from {list(problems_lib.REGISTRY)}")
    plan = plan._replace(problems=chosen)
  if args.seeds is not None:
    if args.seeds < 1:
      parser.error(f"--seeds must be >= 1, got {args.seeds}")
    plan = plan._replace(seeds=tuple(range(args.seeds)))
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  print(bound.pretty())
  start = time.time()
  records, rows = run(plan, args.out)
  print(format_table(rows))
  covered = [r for r in records if r["covered_by_theorem"]]
  nonvacuous = [r for r in covered if not r["vacuous"]]
  print(f"theorem setting: bound holds in {sum(r['holds'] for r in covered)}/{len(covered)} records "
        f"({sum(r['holds'] for r in nonvacuous)}/{len(nonvacuous)} non-vacuous); largest lhs/rhs "
        f"{max(r['ratio'] for r in covered):.3g}; lemma sum g^T H g <= log det in "
        f"{sum(r['lemma_holds'] for r in covered)}/{len(covered)}; {time.time() - start:.0f} s")
  if args.out:
    print(f"wrote {os.path.join(args.out, 'verify.json')} and {os.path.join(args.out, 'theory_terms.png')}")
  return 0


if __name__ == "__main__":
  # jax 0.10.2's CPU runtime can hang (all workers idle) on programs with several LAPACK calls,
  # e.g. eigh roots inside lax.cond; this scheduler flag avoids it. Read when the backend starts,
  # which has not happened yet here.
  _flag = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
  raise SystemExit(main())
