"""Benchmarks: scripts that print ratios measured side by side in one process."""


def hardware() -> str:
  """The first JAX device and the host CPU, e.g. ``"cpu (cpu), x86_64"`` (the results' field);
  ``", freed memory kept"`` is appended when :func:`experiments.xla_flags.keep_freed_memory`
  took effect in this process."""
  import platform  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from experiments import xla_flags  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  kept = ", freed memory kept" if xla_flags.freed_memory_kept() else ""
  return f"{device.device_kind} ({device.platform}), {platform.processor() or platform.machine()}{kept}"


def append_json_lines(path, records) -> None:
  """Appends each record of ``records`` to ``path`` as one JSON line (the results files' format)."""
  import json  # pylint: disable=import-outside-toplevel
  with open(path, "a", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
