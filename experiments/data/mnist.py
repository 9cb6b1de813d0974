"""MNIST (for the autoencoder) from LeCun's IDX files, gzipped or not.

IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header -- two zero
bytes, a type code (0x08 = uint8), the number of dimensions -- then one big-endian
int32 per dimension, then the values in C order. The image files have magic
number 2051 (0x00000803: uint8, 3 dims [N, 28, 28]), the label files 2049
(0x00000801: uint8, 1 dim [N]). The autoencoder needs only the two image files.
A ``.gz`` file is checked against the official MD5 (the table torchvision uses);
uncompressed files have no official checksum, so they are checked by magic number
and shape only.
"""

from __future__ import annotations

from collections.abc import Mapping
import gzip
import zlib

import numpy as np

from experiments.data import common

NAME = "mnist"
URL_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's mirror of LeCun's files
TRAIN_IMAGES = "train-images-idx3-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str, expected_magic: int | None = None) -> np.ndarray:
  """Reads an IDX file (gzipped or not, told apart by its first bytes) into a numpy array.

  Args:
    path: the file.
    expected_magic: the magic number it must have (2051 images, 2049 labels), or None.

  Returns:
    The array, shape from the header, dtype from the type code (native byte order).

  Raises:
    ValueError: a wrong magic number, an unknown type code, or a size that does not
      match the header; the message names the file.
  """
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == _GZIP_MAGIC:
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
      raise ValueError(f"{path}: not a complete gzip file ({e}); delete it to download it "
                       f"again") from None
  if len(raw) < 4:
    raise ValueError(f"{path}: too short for an IDX file ({len(raw)} bytes)")
  magic = int.from_bytes(raw[:4], "big")
  if expected_magic is not None and magic != expected_magic:
    raise ValueError(f"{path}: IDX magic number {magic} (0x{magic:08x}), expected "
                     f"{expected_magic} (0x{expected_magic:08x})")
  type_code, ndim = raw[2], raw[3]
  if raw[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES:
    raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex()})")
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  dtype = np.dtype(_IDX_DTYPES[type_code])
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) - header != expected:
    raise ValueError(f"{path}: header says shape {shape} ({expected} bytes of data) but the "
                     f"file holds {len(raw) - header} bytes after the header")
  data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="))


def _load_images(name: str, dirs, md5: Mapping[str, str], download: bool,
                 downloader) -> tuple[np.ndarray, str]:
  gz = name + ".gz"
  path = common.find_or_download(
      "MNIST", f"{gz} (md5 {md5.get(gz)}) or the uncompressed {name}", dirs, (gz, name),
      URL_BASE + gz, md5.get(gz), download, downloader)
  if path.endswith(".gz"):
    common.check_md5(common.md5_file(path), md5[gz], path)
  images = read_idx(path, IMAGES_MAGIC)
  if images.shape[1:] != (28, 28):
    raise ValueError(f"{path}: MNIST images must be [N, 28, 28], got {images.shape}")
  return images, path


def load_mnist(data_dir: str | None = None, *, download: bool = True,
               downloader: common.Downloader | None = None,
               environ: Mapping[str, str] | None = None,
               md5: Mapping[str, str] | None = None) -> common.Dataset:
  """Loads MNIST's images for the autoencoder: x = pixels / 255, float32 [N, 784]; y = x.

  Each image file is looked up as ``<name>.gz`` then ``<name>`` in every directory
  of the lookup order (see ``common``); a missing one is downloaded gzipped.

  Args:
    data_dir: the ``--data_dir`` directory, searched first; None to skip it.
    download: whether to download missing files.
    downloader: ``(url, path) -> None`` (tests inject one); urllib when None.
    environ: the environment for the lookup (``os.environ`` when None).
    md5: expected MD5 per ``.gz`` file name (the official values when None).

  Returns:
    A :class:`common.Dataset` with x = y float32 [N, 784] in [0, 1] (60000 / 10000) and
    num_classes 0.

  Raises:
    DatasetNotFoundError, ChecksumError, ValueError (bad IDX header or shape).
  """
  md5 = GZ_MD5 if md5 is None else md5
  dirs = common.search_dirs(data_dir, environ)
  train, train_path = _load_images(TRAIN_IMAGES, dirs, md5, download, downloader)
  test, test_path = _load_images(TEST_IMAGES, dirs, md5, download, downloader)
  x_train = (train.reshape(len(train), -1) / np.float32(255)).astype(np.float32)
  x_test = (test.reshape(len(test), -1) / np.float32(255)).astype(np.float32)
  verified = lambda p: "md5 verified" if p.endswith(".gz") else "no official md5; IDX header checked"
  source = (f"{train_path} ({verified(train_path)}), {test_path} ({verified(test_path)}); "
            f"pixels / 255")
  return common.Dataset(NAME, x_train, x_train, x_test, x_test, 0, source)

