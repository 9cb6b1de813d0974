"""XLA flags that the entry points set before JAX starts its backend (never on import).

``--xla_cpu_enable_concurrency_optimized_scheduler=false``: with jaxlib 0.10.2 on a 2-core CPU,
programs holding several batched ``eigh`` calls (Shampoo's roots, AdaBlock's per-step
eigendecompositions, MBAG with ``root_method="eigh"``) deadlock intermittently under the
concurrency-optimised scheduler (all XLA threads idle, the step never completes); with the flag
they complete. It changes nothing on GPUs. XLA reads ``XLA_FLAGS`` once, when the backend starts
(the first computation), so the entry points call :func:`set_entry_point_flags` in their
``__main__`` block; later calls have no effect on a running backend.
"""

from __future__ import annotations

import os
from typing import MutableMapping

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def set_entry_point_flags(environ: MutableMapping[str, str] = os.environ) -> str:
  """Appends :data:`CPU_SCHEDULER_FLAG` to ``XLA_FLAGS`` unless it names that flag already.

  A value the user set for the flag is kept. Returns the resulting ``XLA_FLAGS``.
  """
  flags = environ.get("XLA_FLAGS", "")
  name = CPU_SCHEDULER_FLAG.split("=", 1)[0]
  if name not in flags:
    environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}".strip()
  return environ["XLA_FLAGS"]
