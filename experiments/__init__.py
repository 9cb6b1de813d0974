"""The paper's experiments: data, models, optimizers, configs and one training loop.

Entry points: ``python -m experiments.cifar`` (ResNet-56 on CIFAR-10) and
``python -m experiments.autoencoder`` (FACES / CURVES / MNIST autoencoders);
both call :func:`experiments.train.run`.

Importing this package before JAX starts its CPU backend sets the XLA flag
``--xla_cpu_enable_concurrency_optimized_scheduler=false`` (unless XLA_FLAGS
already mentions it): with jaxlib 0.10.2 on a 2-core CPU, programs holding
several batched ``eigh`` calls (Shampoo's roots, AdaBlock's per-step
eigendecompositions) deadlock intermittently under the concurrency-optimised
scheduler (all XLA threads idle, the step never completes); with the flag
they complete. It changes nothing on GPUs.
"""

import os

_SCHEDULER_FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"


def _avoid_cpu_scheduler_deadlock() -> None:
  flags = os.environ.get("XLA_FLAGS", "")
  if _SCHEDULER_FLAG not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --{_SCHEDULER_FLAG}=false".strip()


_avoid_cpu_scheduler_deadlock()
