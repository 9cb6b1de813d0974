"""XLA flags that the entry points set before JAX starts its backend (never on import).

``--xla_cpu_enable_concurrency_optimized_scheduler=false``: with jaxlib 0.10.2 on a 2-core CPU,
programs holding several batched ``eigh`` calls (Shampoo's roots, AdaBlock's per-step
eigendecompositions, MBAG with ``root_method="eigh"``) deadlock intermittently under the
concurrency-optimised scheduler (all XLA threads idle, the step never completes); with the flag
they complete. It changes nothing on GPUs. XLA reads ``XLA_FLAGS`` once, when the backend starts
(the first computation), so the entry points call :func:`set_entry_point_flags` in their
``__main__`` block; later calls have no effect on a running backend.

:func:`keep_freed_memory` (called by :func:`set_entry_point_flags` too) stops glibc from handing
freed buffers back to the kernel. XLA:CPU allocates a program's temporary buffer afresh at every
execution; glibc serves a large allocation from a new ``mmap`` (or trims the heap after freeing
it), so every step pays a page fault per 4 KiB page it touches. Measured on the
ResNet-56 tree (docs/performance.md): MBAG's steady update took 3,400-4,200 page faults and
8-13 ms more per step from this alone, in some processes and not in others (glibc's threshold
adapts to what was freed before). Set ``MBAG_KEEP_FREED_MEMORY=0`` to leave glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import MutableMapping

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 2**31 - 1
_kept = False


def freed_memory_kept() -> bool:
  """Whether :func:`keep_freed_memory` took effect in this process (benchmarks record it)."""
  return _kept


def keep_freed_memory(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Serves allocations from glibc's heap instead of fresh ``mmap`` regions, and never trims the
  heap (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``).

  Returns whether the setting took effect: False where the C library is not glibc, or when
  ``MBAG_KEEP_FREED_MEMORY=0``. The cost is memory that the process keeps instead of returning
  it (at most what it once held at a time). glibc still maps an allocation that a thread's own
  arena (64 MiB heaps) cannot hold.
  """
  if environ.get("MBAG_KEEP_FREED_MEMORY", "1") == "0":
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  global _kept
  _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
  return _kept


def set_entry_point_flags(environ: MutableMapping[str, str] = os.environ) -> str:
  """Appends :data:`CPU_SCHEDULER_FLAG` to ``XLA_FLAGS`` unless it names that flag already,
  and calls :func:`keep_freed_memory`.

  A value the user set for the flag is kept. Returns the resulting ``XLA_FLAGS``.
  """
  keep_freed_memory(environ)
  flags = environ.get("XLA_FLAGS", "")
  name = CPU_SCHEDULER_FLAG.split("=", 1)[0]
  if name not in flags:
    environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}".strip()
  return environ["XLA_FLAGS"]
