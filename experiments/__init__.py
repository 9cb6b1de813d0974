"""The paper's experiments: data, models, optimizers, configs and one training loop.

Entry points: ``python -m experiments.cifar`` (ResNet-56 on CIFAR-10) and
``python -m experiments.autoencoder`` (FACES / CURVES / MNIST autoencoders);
both call :func:`experiments.train.run`. Importing this package changes nothing in the
process (no XLA flags, no patches): the entry points set the XLA flags they need
(:mod:`experiments.xla_flags`), and the KFAC baseline patches kfac-jax when it is built.
This package is run from a clone of the repository; ``pip install`` ships only ``mbag``.
"""
