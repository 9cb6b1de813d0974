"""The test session is an entry point: it sets the XLA flags the entry points set, before JAX starts."""

from experiments import xla_flags

xla_flags.set_entry_point_flags()
