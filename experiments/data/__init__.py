"""Data sets for the experiments: a registry from name to loader, and :func:`load_dataset`.

Every loader takes ``data_dir`` (or None) and returns a :class:`Dataset`; files are
looked up in ``data_dir``, then ``$MBAG_DATA_DIR``, then ``~/.cache/mbag`` (see
:mod:`experiments.data.common`). What to put there:

========  ==========================================================================
cifar10   ``cifar-10-python.tar.gz`` (md5 c58f30108f718f92721af3b95e74349a) or its
          extracted ``cifar-10-batches-py/``; downloaded when missing and possible.
mnist     ``train-images-idx3-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``.
faces     ``newfaces_rot_single.mat`` (https://www.cs.toronto.edu/~jmartens/).
curves    ``digs3pts_1.mat`` (same page).
digits    nothing: scikit-learn ships it.
========  ==========================================================================
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

DATASETS: dict[str, Callable[[str | None], Dataset]] = {
    "cifar10": load_cifar10,
    "mnist": load_mnist,
    "faces": load_faces,
    "curves": load_curves,
    "digits": load_digits,
}


def load_dataset(name: str, data_dir: str | None) -> Dataset:
  """Loads the data set registered as ``name`` (see :data:`DATASETS`).

  Args:
    name: a key of :data:`DATASETS`.
    data_dir: the directory searched first, or None.

  Returns:
    The :class:`Dataset`.

  Raises:
    ValueError: ``name`` is not registered.
    DatasetNotFoundError, ChecksumError: from the loader.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
  return DATASETS[name](data_dir)


__all__ = (
    "DATASETS",
    "ChecksumError",
    "Dataset",
    "DatasetNotFoundError",
    "augment_cifar",
    "load_cifar10",
    "load_curves",
    "load_dataset",
    "load_digits",
    "load_faces",
    "load_mnist",
    "normalize_cifar",
)
