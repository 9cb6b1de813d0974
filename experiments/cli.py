"""What both entry points share: their flags, and running a config with clear errors and exit codes.

Exit status: 0 done; 1 the run failed with a clear message (data missing or
corrupted, loss not finite, another process on ``--workdir``, a disk full or
read-only, no intact checkpoint, ``metrics.jsonl`` not holding the records the
checkpoint followed); 2 bad flags or config (an unknown ``--config.<field>``, a
missing config file or preset, a value out of range, ``--workdir`` a file or empty,
a missing ``--data_dir``, a resume with another config); 128 + signal number when
stopped by SIGINT / SIGTERM (a checkpoint was saved unless a stuck writer prevented
it, as the message says: run the same command again to resume). Every failure is
one line on stderr; ``--verbose`` adds the traceback (and those orbax's threads log).

Several processes (data parallel over ``jax.distributed``, see ``experiments/parallel.py``):
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (all three, with
``--config.data_parallel=true``) call ``jax.distributed.initialize`` before the run; every
process runs the same command but for ``--process_id``. Command lines for one host and for
several: ``experiments/parallel.py``. ``cli.main(argv, config_file)`` accepts the same flags,
but a process can join a distributed run only once, before any JAX computation.
"""

from __future__ import annotations

import pathlib
import re
import sys
import traceback
from typing import Sequence

from absl import flags
from absl import logging
from ml_collections import config_flags

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"


def define_flags(config_file: str, flag_values: flags.FlagValues = flags.FLAGS,
                 argv: Sequence[str] | None = None) -> None:
  """Defines ``--config`` (default ``experiments/configs/<config_file>``), ``--workdir``, ``--data_dir``.

  ``argv``: the command line the ``--config.<field>`` overrides are read from
  (ml_collections reads ``sys.argv`` when None).
  """
  config_flags.DEFINE_config_file(
      "config", str(CONFIG_DIR / config_file),
      "Config file and preset, e.g. experiments/configs/cifar.py:smoke; override fields with "
      "--config.<field>=<value>.", flag_values=flag_values, lock_config=False,
      sys_argv=None if argv is None else list(argv))
  flags.DEFINE_string("workdir", None, "Directory of the run (created; an existing run resumes).",
                      flag_values=flag_values)
  flags.DEFINE_string("data_dir", None, "Where to look for the data set first.",
                      flag_values=flag_values)
  flags.DEFINE_string("coordinator_address", None,
                      "Several processes: HOST:PORT of process 0's coordinator "
                      "(jax.distributed.initialize).", flag_values=flag_values)
  flags.DEFINE_integer("num_processes", None, "Several processes: how many in all.",
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer("process_id", None, "Several processes: this one's index, 0 .. "
                       "num_processes - 1 (0 writes the run's files).", lower_bound=0,
                       flag_values=flag_values)
  flags.DEFINE_boolean("verbose", False, "Print the traceback of a failure under its one-line "
                       "message.", flag_values=flag_values)
  flags.mark_flag_as_required("workdir", flag_values=flag_values)


DISTRIBUTED_FLAGS = ("coordinator_address", "num_processes", "process_id")


def distributed_args(flag_values: flags.FlagValues = flags.FLAGS) -> dict | None:
  """The ``jax.distributed.initialize`` arguments of the flags, None for one process.

  Raises:
    ValueError: only some of the three flags given, ``--process_id`` out of range, or the
      flags without ``--config.data_parallel=true``.
  """
  values = {name: flag_values[name].value for name in DISTRIBUTED_FLAGS}
  given = [name for name, v in values.items() if v is not None]
  if not given:
    return None
  if len(given) < len(values):
    missing = [f"--{name}" for name in DISTRIBUTED_FLAGS if name not in given]
    raise ValueError(f"several processes need --coordinator_address, --num_processes and "
                     f"--process_id together; missing {', '.join(missing)}")
  if values["process_id"] >= values["num_processes"]:
    raise ValueError(f"--process_id={values['process_id']} must be below "
                     f"--num_processes={values['num_processes']}")
  if flag_values.config.get("data_parallel") is not True:
    raise ValueError("--coordinator_address / --num_processes / --process_id run the loop over "
                     "several processes' devices: add --config.data_parallel=true")
  return values


def run_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> int:
  """Runs the parsed flags' config through ``experiments.train.run``; returns the exit status.

  ``--verbose`` holds while it runs (``experiments.errors.set_verbose``: the libraries'
  tracebacks too), and is undone after (an in-process caller's next run starts quiet).
  """
  from experiments import errors  # pylint: disable=import-outside-toplevel
  previous = errors.verbose()
  errors.set_verbose(flag_values.verbose)
  try:
    return _run_from_flags(flag_values)
  finally:
    errors.set_verbose(previous)


def _run_from_flags(flag_values: flags.FlagValues) -> int:
  from experiments import parallel  # pylint: disable=import-outside-toplevel
  from experiments import train  # pylint: disable=import-outside-toplevel

  try:
    flag_values.config.to_dict()
  except Exception as e:  # pylint: disable=broad-except
    # ml_collections loads the config file lazily: a missing or broken one surfaces here.
    print("error: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()),
          file=sys.stderr)
    return 2
  try:
    distributed = distributed_args(flag_values)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if distributed is not None:
    try:
      parallel.initialize_distributed(**distributed)
    except Exception as e:  # pylint: disable=broad-except
      # E.g. JAX already computed in this process, or the coordinator is unreachable.
      logging.error("jax.distributed.initialize failed: %s", e)
      print(f"error: jax.distributed.initialize({distributed}) failed: {type(e).__name__}: {e}",
            file=sys.stderr)
      return 1
  try:
    result = train.run(flag_values.config, flag_values.workdir, flag_values.data_dir)
  except Exception as e:  # pylint: disable=broad-except
    return _report(e, flag_values.verbose)
  if not parallel.is_primary():
    return 0
  keys = ("step", "epoch", "train_loss", "test_loss", "test_accuracy")
  print(" ".join(f"{k}={result.summary[k]:.6g}" for k in keys if k in result.summary)
        + f"  ({result.workdir})")
  return 0


def exit_status(error: BaseException) -> int:
  """The exit status of a failure (see the module docstring)."""
  from experiments import errors  # pylint: disable=import-outside-toplevel
  from experiments import train  # pylint: disable=import-outside-toplevel
  from experiments.data import common as data_common  # pylint: disable=import-outside-toplevel
  if isinstance(error, train.Interrupted):
    return 128 + error.signum
  if isinstance(error, (errors.RunError, data_common.DatasetNotFoundError,
                        data_common.ChecksumError, OSError)):
    return 1
  if isinstance(error, ValueError):
    return 2
  return 1


def _report(error: BaseException, verbose: bool) -> int:
  """Logs and prints ``error`` in one line (with its traceback when ``verbose``); its exit status."""
  from experiments import errors  # pylint: disable=import-outside-toplevel
  from experiments import train  # pylint: disable=import-outside-toplevel
  status = exit_status(error)
  known = isinstance(error, (errors.RunError, ValueError, OSError))
  if isinstance(error, OSError) and not isinstance(error, errors.RunError) and error.filename:
    message = f"{error.filename}: {error.strerror or error}"
  else:
    message = str(error) if known else f"unexpected {errors.short(error)}"
  if not known and not verbose:
    message += " (run with --verbose for the traceback)"
  prefix = "interrupted" if isinstance(error, train.Interrupted) else "error"
  (logging.warning if prefix == "interrupted" else logging.error)("%s", message)
  if verbose:
    traceback.print_exception(error, file=sys.stderr)
  print(f"{prefix}: {message}", file=sys.stderr)
  return status


_TRACEBACK = "Traceback (most recent call last):"
_VERBOSE = re.compile(r"--?verbose(=(true|1|yes))?", re.IGNORECASE)


def _flag_error_line(error: BaseException) -> str:
  """One line for an error of the flags: ``Type: message``, with the reason of a config file
  that failed to load (ml_collections puts that exception's traceback into its message; its
  last exception is the reason, e.g. ``ValueError: unknown preset ...``)."""
  text = str(error).strip()
  head, marker, trace = text.rpartition(_TRACEBACK)
  if marker:
    lines = trace.splitlines()
    # The frames are indented; the exception's own lines (the reason) follow them.
    start = next((i for i, line in enumerate(lines) if line and not line[0].isspace()),
                 len(lines))
    reason = " ".join(line.strip() for line in lines[start:] if line.strip())
    text = " ".join(f"{head} {reason}".split())
  else:
    text = text.splitlines()[0] if text else ""
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unknown_field_line(error: BaseException, argv: Sequence[str]) -> str | None:
  """``--config.<field>: no such field ...`` when ``error`` is ml_collections' AttributeError /
  KeyError for an override of a field the config does not have; None otherwise."""
  if not isinstance(error, (AttributeError, KeyError)):
    return None
  while error.args and isinstance(error.args[0], (AttributeError, KeyError)):
    error = error.args[0]  # a nested field: AttributeError(KeyError(...))
  message = str(error.args[0]) if error.args else ""
  first, _, rest = message.strip().partition("\n")
  name = first.strip().strip("\"'")
  hint = " ".join(rest.split())  # ml_collections: 'Did you mean "block_size" instead of ...?'
  given = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  field = next((g for g in given if name in g.split(".")[1:]), None)
  if field is None:
    return None
  parts = field.split(".")[1:]
  parent = ".".join(["config", *parts[:parts.index(name)]])
  return f"--{field}: {parent} has no field {name!r}" + (f" ({hint})" if hint else "")


def _parse(flag_values: flags.FlagValues, argv: Sequence[str]) -> list[str] | int:
  """The remaining arguments after parsing ``argv``, or exit status 2 after a one-line error
  (under the error's full text when ``argv`` has ``--verbose``)."""
  try:
    return flag_values(list(argv))
  except Exception as e:  # pylint: disable=broad-except
    # ml_collections raises AttributeError / KeyError for --config.<unknown field>, OSError /
    # ImportError-like errors for a config file that is missing or does not load, and whatever
    # the config file's own code raises (it runs when parsed).
    if any(_VERBOSE.fullmatch(arg) for arg in argv[1:]):
      traceback.print_exception(e, file=sys.stderr)
    line = _unknown_field_line(e, argv) or _flag_error_line(e)
    print(f"error: {line}", file=sys.stderr)
    return 2


def main(argv: Sequence[str], config_file: str) -> int:
  """Parses ``argv`` (``argv[0]`` is the program name) with fresh flags and runs: for in-process use.

  Returns:
    The exit status (see the module docstring).
  """
  flag_values = flags.FlagValues()
  define_flags(config_file, flag_values, argv)
  parsed = _parse(flag_values, argv)
  if isinstance(parsed, int):
    return parsed
  if len(parsed) > 1:
    print(f"error: unexpected arguments {list(parsed[1:])}; fields go as --config.<field>=...",
          file=sys.stderr)
    return 2
  return run_from_flags(flag_values)


def absl_run(config_file: str) -> None:
  """The ``__main__`` of an entry point: XLA flags first, then the flags and the run (``app.run``)."""
  from absl import app  # pylint: disable=import-outside-toplevel
  from experiments import xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.set_entry_point_flags()
  define_flags(config_file)
  app.run(absl_main, flags_parser=_absl_parse)


def _absl_parse(argv: Sequence[str]) -> list[str]:
  """``app.run``'s flag parser: a bad flag or config file is one line and exit status 2."""
  parsed = _parse(flags.FLAGS, argv)
  if isinstance(parsed, int):
    sys.exit(parsed)
  return parsed


def absl_main(argv: Sequence[str]) -> int:
  """``app.run`` target after :func:`define_flags` on the global flags."""
  if len(argv) > 1:
    print(f"error: unexpected arguments {list(argv[1:])}; fields go as --config.<field>=...",
          file=sys.stderr)
    return 2
  return run_from_flags()
