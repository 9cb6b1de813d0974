r"""The study's statistics: paired differences, t-intervals, verdicts, Holm, time to a target.

Pure functions of numbers and metric records (no JAX), so that each can be checked by hand.

**Paired differences.** Two optimizers run with the same seed share the initialisation and
the data order (``experiments.train.make_keys(config.seed)``), so the study compares them
seed by seed: ``d_s = m_entry(s) - m_ref(s)`` for a metric where higher is better,
``d_s = m_ref(s) - m_entry(s)`` where lower is better, so that ``d > 0`` always means "the
entry is better". Over the ``n`` seeds where both have a value,

  mean = (1/n) sum_s d_s,   sd = sqrt(sum_s (d_s - mean)^2 / (n - 1)),
  interval = mean -+ t_{1 - alpha/2, n-1} sd / sqrt(n)

(Student's t with n - 1 degrees of freedom), and the two-sided p-value of the paired t-test
``t = mean / (sd / sqrt(n))``: ``p = 2 P(T_{n-1} > |t|)``. The interval excludes zero exactly
when ``p < alpha``. Verdict: "better" when the interval lies above zero, "worse" when below,
"tie" otherwise.

**Multiplicity.** Holm's step-down procedure over the ``m`` comparisons of the whole study:
sort the p-values ``p_(1) <= ... <= p_(m)``, adjusted ``p~_(i) = max_{j <= i} min(1,
(m - j + 1) p_(j))``; a comparison is declared (better / worse by its sign) when
``p~ < alpha``. It controls the family-wise error rate at ``alpha`` without assumptions on the
dependence between comparisons.

**Time to a target.** The training seconds of a run up to its first evaluation whose held-out
loss is at or below the target, from its ``metrics.jsonl`` (:func:`time_to_target`). Times are
compared as ``log(t_ref / t_entry)`` (> 0: the entry is faster), paired by seed over the seeds
where both reached the target.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ALPHA = 0.05  # 1 - CONFIDENCE
VERDICTS = ("better", "worse", "tie")


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
  """Mean, sample sd, the t-interval of the mean and the p-value of ``mean == 0`` (two-sided).

  ``n < 2``: no spread is known, so ``low``, ``high``, ``sd`` and ``p_value`` are None. All
  values equal (``sd == 0``): the interval is the point itself and ``p`` is 0 (1 when the mean
  is 0), the limit of the t-test.
  """
  values = [float(v) for v in values]
  n = len(values)
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
  if any(not math.isfinite(v) for v in values):
    raise ValueError(f"t_interval: non-finite values {values}")
  out: dict[str, Any] = {"n": n, "mean": sum(values) / n if n else None, "sd": None,
                         "low": None, "high": None, "p_value": None, "df": n - 1 if n else None,
                         "confidence": confidence}
  if n < 2:
    return out
  mean = out["mean"]
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  t_crit = float(scipy_stats.t.ppf(1 - (1 - confidence) / 2, n - 1))
  half = t_crit * sd / math.sqrt(n)
  if sd == 0:
    p = 1.0 if mean == 0 else 0.0
  else:
    p = float(2 * scipy_stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
  out.update(sd=sd, low=mean - half, high=mean + half, p_value=p, t_critical=t_crit)
  return out


def verdict(low: float | None, high: float | None) -> str | None:
  """"better" (interval above 0), "worse" (below 0), "tie" (contains 0); None without one."""
  if low is None or high is None:
    return None
  if low > 0:
    return "better"
  if high < 0:
    return "worse"
  return "tie"


def oriented_difference(entry: float, reference: float, higher_is_better: bool) -> float:
  """``entry - reference`` where higher is better, ``reference - entry`` where lower is: > 0
  means the entry is better."""
  return entry - reference if higher_is_better else reference - entry


def paired(entry: Mapping[Any, float | None], reference: Mapping[Any, float | None],
           higher_is_better: bool) -> dict[Any, float]:
  """``{seed: oriented difference}`` over the seeds where both have a finite value."""
  out = {}
  for seed in sorted(set(entry) & set(reference), key=str):
    a, b = entry[seed], reference[seed]
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
      continue
    out[seed] = oriented_difference(a, b, higher_is_better)
  return out


def compare(differences: Mapping[Any, float], confidence: float = CONFIDENCE) -> dict[str, Any]:
  """The t-interval of the paired ``differences`` with its verdict (see the module docstring)."""
  out = t_interval(list(differences.values()), confidence)
  out["verdict"] = verdict(out["low"], out["high"])
  out["differences"] = {str(k): v for k, v in differences.items()}
  return out


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> tuple[list[float], list[bool]]:
  """Holm's adjusted p-values and rejections (in the input's order), see the module docstring."""
  m = len(p_values)
  order = sorted(range(m), key=lambda i: p_values[i])
  adjusted = [0.0] * m
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p_values[i]))
    adjusted[i] = running
  return adjusted, [p < alpha for p in adjusted]


def adjusted_verdict(mean: float, rejected: bool) -> str:
  """"better" / "worse" by the sign of ``mean`` when the adjusted test rejects, else "tie"."""
  if not rejected:
    return "tie"
  return "better" if mean > 0 else "worse"


# ----------------------------------------------------------------------------- time to target


def training_seconds(records: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
  """``(step, seconds of training up to that step)`` for each record.

  A record's ``step_time`` is the mean time of the steps since the previous record without
  compilation (the first step after a (re)start, logged once as ``compile_time``), evaluation
  and checkpointing (``experiments.periodic.StepTimer``). Each interval counts its steps at its
  ``step_time``, the compiling step included at that rate (its compilation is left out); a
  record without ``step_time`` (only the compiling step in its interval) takes the run's mean
  ``step_time``. Evaluation, checkpoints, data loading and compilation are not training time.
  """
  times = [float(r["step_time"]) for r in records if r.get("step_time") is not None]
  fallback = sum(times) / len(times) if times else 0.0
  out, previous, total = [], 0, 0.0
  for r in records:
    step = int(r["step"])
    if step < previous:
      raise ValueError(f"training_seconds: step {step} after step {previous}: records out of order")
    step_time = r.get("step_time")
    total += (step - previous) * (fallback if step_time is None else float(step_time))
    out.append((step, total))
    previous = step
  return out


def time_to_target(records: Sequence[Mapping[str, Any]], target: float,
                   metric: str = "test_loss") -> dict[str, Any]:
  """When the run's ``metric`` first reached ``target`` (at or below it).

  Returns ``{"reached": bool, "seconds": training seconds up to that evaluation (None when not
  reached), "step": its step, "compile_seconds": the run's compile_time summed over (re)starts}``.
  """
  seconds = training_seconds(records)
  compile_seconds = sum(float(r["compile_time"]) for r in records if "compile_time" in r)
  for r, (step, t) in zip(records, seconds):
    value = r.get(metric)
    if value is not None and math.isfinite(value) and value <= target:
      return {"reached": True, "seconds": t, "step": step, "compile_seconds": compile_seconds}
  return {"reached": False, "seconds": None, "step": None, "compile_seconds": compile_seconds}


def best_value(records: Sequence[Mapping[str, Any]], metric: str) -> float | None:
  """The lowest finite ``metric`` of the records (None if none)."""
  values = [r[metric] for r in records if r.get(metric) is not None and math.isfinite(r[metric])]
  return min(values) if values else None


def log_time_ratios(entry: Mapping[Any, float | None], reference: Mapping[Any, float | None]
                    ) -> dict[Any, float]:
  """``{seed: log(t_ref / t_entry)}`` over the seeds where both reached the target (> 0: the
  entry is faster)."""
  out = {}
  for seed in sorted(set(entry) & set(reference), key=str):
    a, b = entry[seed], reference[seed]
    if a is None or b is None or a <= 0 or b <= 0:
      continue
    out[seed] = math.log(b / a)
  return out
