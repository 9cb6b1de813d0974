"""What the tests need from JAX across the versions the library supports (see pyproject.toml)."""

import jax

# jax.enable_x64 is jax >= 0.8; earlier versions have it in jax.experimental.
enable_x64 = getattr(jax, "enable_x64", None)
if enable_x64 is None:
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top  # noqa: F401


def spec_str(spec) -> str:
  """``str`` of a PartitionSpec as jax >= 0.8 writes it (``P('d', None)``)."""
  return str(spec).replace("PartitionSpec(", "P(")


def placement(spec) -> tuple:
  """A PartitionSpec without its trailing ``None`` entries: the same placement whether a jax
  version writes a replicated [n, b] array as ``P()`` or ``P(None, None)``."""
  entries = list(spec)
  while entries and entries[-1] is None:
    entries.pop()
  return tuple(entries)
