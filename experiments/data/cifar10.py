"""CIFAR-10 from the official python tarball ``cifar-10-python.tar.gz`` or its extracted folder.

The tarball holds ``cifar-10-batches-py/{data_batch_1..5, test_batch}``: pickles of
dicts with ``b"data"`` (uint8 [10000, 3072], each row one image in CHW order:
1024 red, 1024 green, 1024 blue values, rows top to bottom) and ``b"labels"``
(10000 ints in [0, 10)); see https://www.cs.toronto.edu/~kriz/cifar.html.
Each file is MD5-checked before it is unpickled: the tarball against the official
value from that page, each batch against the official per-file values (the table
torchvision's ``CIFAR10`` uses), so only the official bytes are ever unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
import pickle
import tarfile

import numpy as np

from experiments.data import common

NAME = "cifar10"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TARBALL = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_BATCH = "test_batch"
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)  # HWC


def load_cifar10(data_dir: str | None = None, *, download: bool = True,
                 downloader: common.Downloader | None = None,
                 environ: Mapping[str, str] | None = None,
                 tarball_md5: str | None = None,
                 batch_md5: Mapping[str, str] | None = None) -> common.Dataset:
  """Loads CIFAR-10 (50000 train / 10000 test images) by the lookup rule of ``common``.

  In each directory of the lookup order the tarball is tried first, then the
  extracted folder. When neither is anywhere, the tarball is downloaded from the
  official URL into the first configured directory (unless ``download=False``).

  Args:
    data_dir: the ``--data_dir`` directory, searched first; None to skip it.
    download: whether to download the tarball when it is missing.
    downloader: ``(url, path) -> None`` to fetch with (tests inject one); urllib when None.
    environ: the environment for the lookup (``os.environ`` when None).
    tarball_md5: the tarball's expected MD5 (the official value when None).
    batch_md5: the expected MD5 of each batch file (the official values when None).

  Returns:
    A :class:`common.Dataset` with x uint8 NHWC [N, 32, 32, 3], y int32 [N], 10 classes.

  Raises:
    DatasetNotFoundError: no tarball or folder in any searched directory, and no download.
    ChecksumError: a file's MD5 differs from the expected value.
    ValueError: a verified file does not have the CIFAR layout (only with custom checksums).
  """
  tarball_md5 = TARBALL_MD5 if tarball_md5 is None else tarball_md5
  batch_md5 = BATCH_MD5 if batch_md5 is None else batch_md5
  dirs = common.search_dirs(data_dir, environ)
  wanted = f"{TARBALL} (md5 {tarball_md5}) or its extracted folder {FOLDER}/"
  path = common.find_or_download("CIFAR-10", wanted, dirs, (TARBALL, FOLDER), URL, tarball_md5,
                                 download, downloader)
  if os.path.basename(path) == FOLDER:
    blobs = _read_folder(path, batch_md5)
  else:
    blobs = _read_tarball(path, tarball_md5, batch_md5)
  train = [_parse_batch(blobs[name], f"{path}:{name}") for name in TRAIN_BATCHES]
  x_test, y_test = _parse_batch(blobs[TEST_BATCH], f"{path}:{TEST_BATCH}")
  x_train = np.concatenate([x for x, _ in train])
  y_train = np.concatenate([y for _, y in train])
  return common.Dataset(NAME, x_train, y_train, x_test, y_test, NUM_CLASSES,
                        source=f"{path} (md5 verified)")


def _read_tarball(path: str, tarball_md5: str, batch_md5: Mapping[str, str]) -> dict[str, bytes]:
  common.check_md5(common.md5_file(path), tarball_md5, path)
  blobs = {}
  with tarfile.open(path, "r:gz") as tar:
    for name in (*TRAIN_BATCHES, TEST_BATCH):
      member = f"{FOLDER}/{name}"
      blobs[name] = common.read_member(tar, path, member)
      common.check_md5(common.md5_bytes(blobs[name]), batch_md5[name], f"{path}:{member}")
  return blobs


def _read_folder(folder: str, batch_md5: Mapping[str, str]) -> dict[str, bytes]:
  if not os.path.isdir(folder):
    raise common.DatasetNotFoundError(f"{folder} is not a directory; expected the folder "
                                      f"extracted from {TARBALL}")
  names = (*TRAIN_BATCHES, TEST_BATCH)
  missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
  if missing:
    raise common.DatasetNotFoundError(
        f"{folder} is incomplete: it lacks {', '.join(missing)}. Extract the full {TARBALL} "
        f"there (tar xzf {TARBALL}) or put the tarball itself beside it.")
  blobs = {}
  for name in names:
    file = os.path.join(folder, name)
    with open(file, "rb") as f:
      blobs[name] = f.read()
    common.check_md5(common.md5_bytes(blobs[name]), batch_md5[name], file)
  return blobs


def _parse_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
  """One batch pickle -> (uint8 NHWC images, int32 labels); raises ValueError naming ``where``."""
  batch = pickle.loads(blob, encoding="bytes")  # only MD5-verified bytes reach this line
  if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
    keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
    raise ValueError(f"{where}: not a CIFAR-10 batch; expected a dict with keys b'data' and "
                     f"b'labels', got {keys}")
  data = np.asarray(batch[b"data"])
  labels = np.asarray(batch[b"labels"])
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise ValueError(f"{where}: b'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
  if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where}: b'labels' must be {data.shape[0]} integers, got "
                     f"{labels.dtype} {labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
    raise ValueError(f"{where}: labels must lie in [0, {NUM_CLASSES}), got "
                     f"[{labels.min()}, {labels.max()}]")
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> NHWC
  return np.ascontiguousarray(images), labels.astype(np.int32)
