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
- The metrics: the meta holds ``num_records``, how many records ``metrics.jsonl`` had when the
  checkpoint was saved; a file with fewer records up to that step lost some, and the run is
  refused rather than continue past the hole.
"""

from __future__ import annotations

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
# those runs (the learning-rate schedule of experiments/train.py:LR_SCHEDULES).
ADDED_FIELDS = {"lr_schedule": "step", "warmup_steps": 0, "lr_final_fraction": 0.0}
# Per-optimizer tables: only the run's optimizer's entry changes its path.
PER_OPTIMIZER_FIELDS = ("learning_rates", "optimizer_config")
FINGERPRINT_KEY = "config_fingerprint"
CONFIG_KEY = "config"
NUM_RECORDS_KEY = "num_records"


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


def check_metrics(meta: Mapping[str, Any], records: list[dict[str, Any]], step: int,
                  metrics_path: pathlib.Path, where: pathlib.Path) -> None:
  """Refuses to resume when ``metrics.jsonl`` lost records that checkpoint ``where`` followed.

  Raises:
    DataError: fewer records up to ``step`` than the checkpoint's ``num_records``.
  """
  expected = meta.get(NUM_RECORDS_KEY)
  kept = [r for r in records if r.get("step", 0) <= step]
  if expected is None or len(kept) >= expected:
    return
  last = kept[-1]["step"] if kept else None
  raise errors.DataError(
      f"{metrics_path} holds {len(kept)} records (up to step {last}) but checkpoint {where} "
      f"(step {step}) was saved after {expected}: {expected - len(kept)} records were lost. "
      f"Restore {metrics_path.name} from a copy, or start over in a new --workdir.")
