"""FACES and CURVES: the autoencoder benchmarks of Hinton & Salakhutdinov (2006), as Martens ships them.

Files (https://www.cs.toronto.edu/~jmartens/, no official checksums published, so
they are checked by variable name, shape and value range):

- ``newfaces_rot_single.mat``: variable ``newfaces_single``, float32 [625, 165600],
  one 25x25 face per column. Split as in Martens' ``nnet_demo_2.m`` (HFDemo/KFAC
  MATLAB code): ``total = 165600; trainsize = (total/40)*25; testsize = (total/40)*10;
  indata = newfaces_single(:, 1:trainsize); intest = newfaces_single(:, (end-testsize+1):end)``,
  i.e. the first 103500 columns train, the last 41400 test (the 20700 between unused).
- ``digs3pts_1.mat`` (CURVES, by Ruslan Salakhutdinov): variables ``bdata`` [20000, 784]
  (train) and ``bdatatest`` [10000, 784] (test), one 28x28 image per row; Martens
  loads them as ``indata = tmp.bdata'; intest = tmp.bdatatest'``.
  The pixel order within a row is the file's (MATLAB column-major for FACES: view a
  face as ``x.reshape(25, 25).T``); a fully connected autoencoder does not care. (The file also holds
  ``tdata``/``tdatatest``, which the autoencoder does not use.)

Both are MATLAB v5 files (the public Python ports read them with ``scipy.io.loadmat``);
a v7.3 (HDF5) file is refused with a message saying how to convert it. The CURVES
generator was never published; there is deliberately no procedural substitute here.

The contract is x in [0, 1]. CURVES already is. Should a file hold values outside
[0, 1] (Hinton & Salakhutdinov describe standardised face intensities, which this
code cannot confirm without the file), both splits are mapped by the one affine map
``(x - min) / (max - min)`` with min/max of the training split, the test split is
clipped to [0, 1], a warning is logged and ``Dataset.source`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from absl import logging
import numpy as np

from experiments.data import common

URL_BASE = "https://www.cs.toronto.edu/~jmartens/"
FACES_FILE = "newfaces_rot_single.mat"
FACES_KEY = "newfaces_single"
FACES_DIM = 625  # 25 x 25
CURVES_FILE = "digs3pts_1.mat"
CURVES_TRAIN_KEY = "bdata"
CURVES_TEST_KEY = "bdatatest"
CURVES_DIM = 784  # 28 x 28


def faces_split(total: int) -> tuple[int, int]:
  """(train size, test size) of Martens' FACES split: 25/40 first columns, 10/40 last ones."""
  return (total // 40) * 25, (total // 40) * 10


def read_mat(path: str) -> dict:
  """``scipy.io.loadmat(path)``; a v7.3 (HDF5) file raises ValueError saying how to convert it."""
  import scipy.io  # pylint: disable=import-outside-toplevel

  try:
    return scipy.io.loadmat(path)
  except NotImplementedError as e:  # scipy's answer to MATLAB v7.3 (HDF5) files
    raise ValueError(
        f"{path}: a MATLAB v7.3 (HDF5) file, which this loader does not read; re-save it in "
        f"MATLAB as v7 (load it, then `save('{path}', '-v7')`).") from e


def _get(mat: dict, key: str, path: str, dim: int, axis: int) -> np.ndarray:
  if key not in mat:
    found = sorted(k for k in mat if not k.startswith("__"))
    raise ValueError(f"{path}: no variable {key!r} (the file holds {found})")
  x = np.asarray(mat[key])
  if x.ndim != 2 or x.shape[axis] != dim or not np.issubdtype(x.dtype, np.number):
    want = f"[{dim}, N]" if axis == 0 else f"[N, {dim}]"
    raise ValueError(f"{path}: variable {key!r} must be a numeric {want} matrix, got "
                     f"{x.dtype} {x.shape}")
  return x


def to_unit_interval(x_train: np.ndarray, x_test: np.ndarray,
                     where: str) -> tuple[np.ndarray, np.ndarray, str]:
  """float32 copies in [0, 1]; values outside it are mapped affinely (see the module docstring).

  Returns:
    (x_train, x_test, note) where ``note`` describes the mapping ("" when none was needed).
  """
  # C order: the .mat arrays arrive column-major, and rows (examples) are what batches gather.
  x_train = np.ascontiguousarray(x_train, np.float32)
  x_test = np.ascontiguousarray(x_test, np.float32)
  lo = float(min(x_train.min(initial=0.0), x_test.min(initial=0.0)))
  hi = float(max(x_train.max(initial=1.0), x_test.max(initial=1.0)))
  if lo >= 0.0 and hi <= 1.0:
    return x_train, x_test, ""
  lo, hi = float(x_train.min()), float(x_train.max())
  if not hi > lo:
    raise ValueError(f"{where}: the training data is constant ({lo}); cannot map it to [0, 1]")
  scale = np.float32(1.0 / (hi - lo))
  x_train = (x_train - np.float32(lo)) * scale
  x_test = np.clip((x_test - np.float32(lo)) * scale, 0.0, 1.0)
  note = f"values rescaled from the training range [{lo:.6g}, {hi:.6g}] to [0, 1]"
  logging.warning("%s: %s (test split clipped to [0, 1])", where, note)
  return x_train, x_test, note


def _find(what: str, filename: str, data_dir, download, downloader, environ) -> str:
  dirs = common.search_dirs(data_dir, environ)
  return common.find_or_download(what, filename, dirs, (filename,), URL_BASE + filename, None,
                                 download, downloader)


def _dataset(name, x_train, x_test, path, detail) -> common.Dataset:
  x_train, x_test, note = to_unit_interval(x_train, x_test, path)
  source = f"{path} ({detail}; no official md5 exists" + (f"; {note})" if note else ")")
  return common.Dataset(name, x_train, x_train, x_test, x_test, 0, source)


def load_faces(data_dir: str | None = None, *, download: bool = True,
               downloader: common.Downloader | None = None,
               environ: Mapping[str, str] | None = None) -> common.Dataset:
  """Loads FACES (Martens' split: 103500 train / 41400 test, 625 pixels) from ``newfaces_rot_single.mat``.

  Args:
    data_dir: the ``--data_dir`` directory, searched first; None to skip it.
    download: whether to download the file from Martens' page when it is missing.
    downloader: ``(url, path) -> None`` (tests inject one); urllib when None.
    environ: the environment for the lookup (``os.environ`` when None).

  Returns:
    A :class:`common.Dataset`, x = y float32 [N, 625] in [0, 1], num_classes 0.

  Raises:
    DatasetNotFoundError; ValueError for a file without ``newfaces_single`` [625, N].
  """
  path = _find("FACES", FACES_FILE, data_dir, download, downloader, environ)
  faces = _get(read_mat(path), FACES_KEY, path, FACES_DIM, axis=0).T  # one face per row
  n_train, n_test = faces_split(len(faces))
  if n_train == 0:
    raise ValueError(f"{path}: {len(faces)} faces, fewer than the 40 Martens' split needs")
  detail = (f"{FACES_KEY!r}: first {n_train} of {len(faces)} columns train, last {n_test} test")
  return _dataset("faces", faces[:n_train], faces[len(faces) - n_test:], path, detail)


def load_curves(data_dir: str | None = None, *, download: bool = True,
                downloader: common.Downloader | None = None,
                environ: Mapping[str, str] | None = None) -> common.Dataset:
  """Loads CURVES (20000 train / 10000 test, 784 pixels) from ``digs3pts_1.mat``.

  Args:
    data_dir: the ``--data_dir`` directory, searched first; None to skip it.
    download: whether to download the file from Martens' page when it is missing.
    downloader: ``(url, path) -> None`` (tests inject one); urllib when None.
    environ: the environment for the lookup (``os.environ`` when None).

  Returns:
    A :class:`common.Dataset`, x = y float32 [N, 784] in [0, 1], num_classes 0.

  Raises:
    DatasetNotFoundError; ValueError for a file without ``bdata`` / ``bdatatest`` [N, 784].
  """
  path = _find("CURVES", CURVES_FILE, data_dir, download, downloader, environ)
  mat = read_mat(path)
  x_train = _get(mat, CURVES_TRAIN_KEY, path, CURVES_DIM, axis=1)
  x_test = _get(mat, CURVES_TEST_KEY, path, CURVES_DIM, axis=1)
  detail = f"{CURVES_TRAIN_KEY!r} train, {CURVES_TEST_KEY!r} test"
  return _dataset("curves", x_train, x_test, path, detail)
