"""scikit-learn's 8x8 handwritten digits: a small real data set that ships with scikit-learn (offline).

1797 images of 64 pixels with intensities 0..16 (UCI "Optical Recognition of
Handwritten Digits", test part). Split: the first 1500 in scikit-learn's order train,
the last 297 test -- fixed and independent of any random number generator.
"""

from __future__ import annotations

import numpy as np

from experiments.data import common

NAME = "digits"
NUM_TEST = 297
MAX_INTENSITY = 16.0
NUM_CLASSES = 10


def load_digits(data_dir: str | None = None) -> common.Dataset:
  """Loads the digits: x = intensity / 16, float32 [N, 64] in [0, 1]; y int32 labels in [0, 10).

  Args:
    data_dir: ignored (the data ships with scikit-learn); accepted for the registry's signature.

  Returns:
    A :class:`common.Dataset` with 1500 train and 297 test examples and 10 classes.
  """
  del data_dir
  import sklearn  # pylint: disable=import-outside-toplevel
  from sklearn import datasets  # pylint: disable=import-outside-toplevel

  bunch = datasets.load_digits()
  x = (np.asarray(bunch.data, np.float64) / MAX_INTENSITY).astype(np.float32)
  y = np.asarray(bunch.target, np.int32)
  n_train = len(x) - NUM_TEST
  source = (f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}); pixels / 16; "
            f"first {n_train} train, last {NUM_TEST} test")
  return common.Dataset(NAME, x[:n_train], y[:n_train], x[n_train:], y[n_train:], NUM_CLASSES,
                        source)
