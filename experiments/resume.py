"""What a run checks before it continues from a checkpoint.

- The config: every checkpoint's meta holds ``config_fingerprint`` (SHA-256 of the resolved
  config without the fields a resumed run may change, :data:`RESUMABLE_CHANGES`) and those
  fields themselves (``config``), so a resume with another config is refused naming the
  fields, even when ``config.json`` (a copy for people) was removed or edited. Checkpoints
  written before fingerprints existed are compared with ``config.json``. What is compared
  fixes the optimisation path and nothing else: a field added to every config later
  (:data:`ADDED_FIELDS`) counts only away from the value that reproduces the older runs, and
  of ``learning_rates`` and ``optimizer_config`` only the run's own optimizer's entry counts
  (adding an optimizer to the tables changes no run), so a checkpoint written before either
  change resumes.
- The metrics: the meta holds ``record_steps``, the step of every record ``metrics.jsonl`` had
  when the checkpoint was saved (and ``num_records``, their count, all that checkpoints written
  before ``record_steps`` hold); a file whose records up to that step differ (one lost, one
  duplicated, out of order) is refused naming the steps, rather than continue past the hole.
"""

from __future__ import annotations

import collections
import hashlib
import json
import pathlib
from typing import Any, Mapping

import ml_collections

from experiments import errors

# Config fields a resumed run may change (they do not change the optimisation path).
RESUMABLE_CHANGES = ("num_epochs", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                     "eval_every_epochs", "eval_every_steps", "eval_batch_size", "num_seeds")
# Fields added to every config after runs were checkpointed, with the value that reproduces
# those runs (the learning-rate schedule of experiments/schedules.py:LR_SCHEDULES).
ADDED_FIELDS = {"lr_schedule": "step", "warmup_steps": 0, "lr_final_fraction": 0.0}
# Per-optimizer tables: only the run's optimizer's entry changes its path.
PER_OPTIMIZER_FIELDS = ("learning_rates", "optimizer_config")
FINGERPRINT_KEY = "config_fingerprint"
CONFIG_KEY = "config"
NUM_RECORDS_KEY = "num_records"
RECORD_STEPS_KEY = "record_steps"


def path_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
  """The entries of a config (as JSON values) that fix the optimisation path: without
  :data:`RESUMABLE_CHANGES`, without :data:`ADDED_FIELDS` at (or missing for) their older
  value, and with only the run's optimizer's entry of :data:`PER_OPTIMIZER_FIELDS`."""
  out = {k: v for k, v in fields.items() if k not in RESUMABLE_CHANGES}
  for k, older in ADDED_FIELDS.items():
    if out.get(k, older) == older:
      out.pop(k, None)
  name = out.get("optimizer")
  for k in PER_OPTIMIZER_FIELDS:
    if isinstance(out.get(k), dict):
      out[k] = {name: out[k][name]} if name in out[k] else {}
  return out


def fingerprinted(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields of ``config`` that fix the optimisation path, as JSON values (:func:`path_fields`)."""
  return path_fields(json.loads(config.to_json()))


def fingerprint(config: ml_collections.ConfigDict) -> str:
  """SHA-256 of :func:`fingerprinted` (sorted keys)."""
  text = json.dumps(fingerprinted(config), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_meta(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config part of a checkpoint's meta."""
  return {FINGERPRINT_KEY: fingerprint(config), CONFIG_KEY: fingerprinted(config)}


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
  changed = sorted(k for k in set(old) | set(new)
                   if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
  return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)


def check_config(meta: Mapping[str, Any], config: ml_collections.ConfigDict, where: pathlib.Path,
                 config_json: pathlib.Path) -> None:
  """Refuses to resume checkpoint ``where`` (meta ``meta``) with another config.

  Raises:
    ConfigError: the config differs (the fields named), or the legacy ``config_json`` is not JSON.
  """
  if FINGERPRINT_KEY in meta:
    if meta[FINGERPRINT_KEY] == fingerprint(config):
      return
    if CONFIG_KEY in meta:
      # Written when the fingerprint covered more (fields added later, other optimizers'
      # entries): the fields themselves say whether the path is the same.
      details = _differences(path_fields(meta[CONFIG_KEY]), fingerprinted(config))
      if not details:
        return
    else:
      details = "fingerprints differ"
    raise errors.ConfigError(f"checkpoint {where} was trained with another config ({details}). "
                             f"Resume it with the same config, or use a new --workdir.")
  if not config_json.exists():
    return
  try:
    old = json.loads(config_json.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise errors.ConfigError(f"{config_json}: cannot be read as JSON ({e}); checkpoint {where} "
                             f"predates config fingerprints, so this file is what the config is "
                             f"checked against. Restore it, or use a new --workdir.") from None
  if not isinstance(old, dict):
    raise errors.ConfigError(f"{config_json}: expected a JSON object")
  old.setdefault("data_parallel", False)  # runs written before the field existed
  new = fingerprinted(config)
  details = _differences({k: v for k, v in path_fields(old).items() if k in new}, new)
  if details:
    raise errors.ConfigError(f"{config_json}: the run in this directory has a different config "
                             f"({details}). Resume it with the same config, or use a new --workdir.")


def checkpoint_records(record_steps: list[int]) -> dict[str, Any]:
  """The metrics part of a checkpoint's meta: the steps of the records written so far."""
  return {NUM_RECORDS_KEY: len(record_steps), RECORD_STEPS_KEY: [int(s) for s in record_steps]}


def _steps(steps: list[int]) -> str:
  """``8``, ``8 and 12``, ``8, 12 and 16``; a long list is cut in the middle."""
  words = [str(s) for s in steps]
  if len(words) > 6:
    words = [*words[:3], "...", words[-1]]
    return f"{', '.join(words)} ({len(steps)} in all)"
  return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _problems(kept: list[int], expected: list[int] | None) -> list[str]:
  """What is wrong with the record steps ``kept`` (the file's, up to the checkpoint's step),
  against the checkpoint's ``expected`` ones (None: not saved; then only duplicates and order)."""
  problems = []
  counts = collections.Counter(kept)
  if expected is not None:
    missing = sorted(set(expected) - counts.keys())
    extra = sorted(counts.keys() - set(expected))
    if len(missing) == 1:
      problems.append(f"the record of step {missing[0]} is missing")
    elif missing:
      problems.append(f"the records of steps {_steps(missing)} are missing")
    if extra:
      problems.append(f"step{'s' if len(extra) > 1 else ''} {_steps(extra)} "
                      f"{'were' if len(extra) > 1 else 'was'} not logged by this run")
  repeated = sorted(s for s, n in counts.items() if n > 1)
  if len(repeated) == 1:
    n = counts[repeated[0]]
    problems.append(f"the record of step {repeated[0]} appears "
                    f"{'twice' if n == 2 else f'{n} times'}")
  elif repeated:
    problems.append(f"the records of steps {_steps(repeated)} appear more than once")
  backwards = [(a, b) for a, b in zip(kept, kept[1:]) if b < a]
  if backwards:
    problems.append("records out of order (" + ", ".join(f"step {b} after step {a}"
                                                         for a, b in backwards[:3]) + ")")
  return problems


def check_metrics(meta: Mapping[str, Any], records: list[dict[str, Any]], step: int,
                  metrics_path: pathlib.Path, where: pathlib.Path) -> None:
  """Refuses to resume when ``metrics.jsonl`` does not hold the records that checkpoint
  ``where`` followed.

  Checked: the records up to ``step`` have the steps saved in the checkpoint's meta
  (``record_steps``), each once, in order; with a checkpoint that saved only ``num_records``,
  no step twice, in order, and no fewer records than that.

  Raises:
    DataError: naming the missing, duplicated or out-of-order steps.
  """
  kept = [r.get("step", 0) for r in records if r.get("step", 0) <= step]
  expected = meta.get(RECORD_STEPS_KEY)
  problems = _problems(kept, None if expected is None else [int(s) for s in expected])
  count = meta.get(NUM_RECORDS_KEY)
  if expected is None and count is not None and len(kept) < count:
    problems.append(f"{count - len(kept)} of the {count} records written before it were lost")
  if problems:
    raise errors.DataError(
        f"{metrics_path} does not match checkpoint {where} (step {step}): "
        f"{'; '.join(problems)}. Restore {metrics_path.name} from a copy, or start over in a "
        f"new --workdir.")
