"""What every data loader shares: the Dataset record, errors, file lookup, checksums, download.

Lookup rule (the same for every data set): a file is searched for, in this order,
  1. in ``data_dir`` (the ``--data_dir`` flag), when given;
  2. in ``$MBAG_DATA_DIR``, when set;
  3. in the user's cache directory, ``$XDG_CACHE_HOME/mbag`` or ``~/.cache/mbag``.
The first directory holding it wins. A missing file is downloaded (where the data
set has an official URL and the network allows) into the first of those
directories; when that fails, :class:`DatasetNotFoundError` names every path
searched and the file to put there. No loader ever falls back to other data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import hashlib
import os
import tarfile
import tempfile
from typing import NamedTuple
import urllib.request

from absl import logging
import numpy as np

ENV_VAR = "MBAG_DATA_DIR"
CACHE_SUBDIR = "mbag"
_CHUNK = 1 << 20

# downloader(url, destination_path): writes the bytes at ``url`` to ``destination_path``.
Downloader = Callable[[str, str], None]


class DatasetNotFoundError(FileNotFoundError):
  """A data set's files are in none of the searched directories and could not be downloaded."""


class ChecksumError(ValueError):
  """A data file's MD5 or SHA-256 differs from the official one (a corrupted or different file)."""


class Dataset(NamedTuple):
  """One data set, held in host memory as numpy arrays.

  Attributes:
    name: the registry name ("cifar10", "mnist", "faces", "curves", "digits").
    x_train: inputs; uint8 NHWC [N, 32, 32, 3] for cifar10, float32 [N, D] in [0, 1] otherwise.
    y_train: int32 labels [N] for classification; for autoencoders the inputs themselves.
    x_test: as ``x_train``, the test split.
    y_test: as ``y_train``, the test split.
    num_classes: the number of classes; 0 for autoencoder data.
    source: where the arrays came from (file paths and what was done to them).
  """
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  source: str


@dataclasses.dataclass(frozen=True)
class SearchDir:
  """A directory of the lookup order and why it is in it (shown in error messages)."""
  path: str | None  # None: the origin is not configured (e.g. the env variable is unset).
  origin: str


def search_dirs(data_dir: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> list[SearchDir]:
  """The lookup order: ``data_dir``, then ``$MBAG_DATA_DIR``, then the user cache directory.

  Args:
    data_dir: the ``--data_dir`` argument, or None.
    environ: the environment to read (``os.environ`` when None).

  Returns:
    Three :class:`SearchDir` entries in lookup order; ``path`` is None for an unset origin.
  """
  environ = os.environ if environ is None else environ
  env_dir = environ.get(ENV_VAR) or None
  xdg = environ.get("XDG_CACHE_HOME") or None
  if xdg is None:
    home = environ.get("HOME") or os.path.expanduser("~")
    cache = os.path.join(home, ".cache", CACHE_SUBDIR)
  else:
    cache = os.path.join(xdg, CACHE_SUBDIR)
  expand = lambda p: None if p is None else os.path.abspath(os.path.expanduser(os.fspath(p)))
  return [SearchDir(expand(data_dir), "--data_dir"),
          SearchDir(expand(env_dir), f"${ENV_VAR}"),
          SearchDir(expand(cache), "user cache directory")]


def existing_dirs(dirs: Sequence[SearchDir]) -> list[str]:
  """The configured paths of ``dirs``, in order."""
  return [d.path for d in dirs if d.path is not None]


def find_first(dirs: Sequence[SearchDir], names: Sequence[str]) -> str | None:
  """The first ``dir/name`` that exists, directories outermost, ``names`` in order within each."""
  for directory in existing_dirs(dirs):
    for name in names:
      path = os.path.join(directory, name)
      if os.path.exists(path):
        return path
  return None


def searched_paths(dirs: Sequence[SearchDir], names: Sequence[str]) -> list[str]:
  return [os.path.join(d, n) for d in existing_dirs(dirs) for n in names]


def not_found_message(what: str, wanted: str, dirs: Sequence[SearchDir],
                      names: Sequence[str], download_error: str | None = None) -> str:
  """The text of a :class:`DatasetNotFoundError`: which file to put where, and all paths tried.

  Args:
    what: the data set's display name, e.g. "CIFAR-10".
    wanted: the files to provide, e.g. "cifar-10-python.tar.gz (md5 ...)".
    dirs: the lookup order from :func:`search_dirs`.
    names: the file names looked for in each directory.
    download_error: why the download failed, or None when none was attempted.
  """
  lines = [(f"{what} not found. Put {wanted} into one of these directories "
            f"(searched in this order):")]
  for i, d in enumerate(dirs, 1):
    lines.append(f"  {i}. {d.path if d.path is not None else '(not set)'}  [{d.origin}]")
  lines.append("Paths searched: " + ", ".join(searched_paths(dirs, names)))
  if download_error is not None:
    lines.append(f"Download failed: {download_error}")
  return "\n".join(lines)


def md5_file(path: str) -> str:
  """The hex MD5 digest of a file, read in 1 MiB chunks."""
  digest = hashlib.md5()  # integrity against the official checksums, not security
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def sha256_file(path: str) -> str:
  """The hex SHA-256 digest of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def check_sha256(actual: str, expected: str, path: str) -> None:
  """Raises :class:`ChecksumError` naming ``path`` and both digests when they differ."""
  if actual != expected:
    raise ChecksumError(
        f"{path}: SHA-256 checksum mismatch (expected {expected}, got {actual}); the file is "
        f"corrupted or not the official one. Delete it and fetch it again.")


def md5_bytes(data: bytes) -> str:
  return hashlib.md5(data).hexdigest()


def check_md5(actual: str, expected: str, path: str) -> None:
  """Raises :class:`ChecksumError` naming ``path`` when ``actual != expected``."""
  if actual != expected:
    raise ChecksumError(
        f"{path}: MD5 checksum mismatch (expected {expected}, got {actual}); the file is "
        f"corrupted or not the official one. Delete it and download it again.")


def urllib_downloader(url: str, destination: str) -> None:
  """Downloads ``url`` to ``destination`` with a tqdm progress bar (the default downloader)."""
  import tqdm  # pylint: disable=import-outside-toplevel

  with urllib.request.urlopen(url, timeout=60) as response:
    total = int(response.headers.get("Content-Length") or 0) or None
    with open(destination, "wb") as out, tqdm.tqdm(
        total=total, unit="B", unit_scale=True, desc=os.path.basename(url)) as bar:
      for chunk in iter(lambda: response.read(_CHUNK), b""):
        out.write(chunk)
        bar.update(len(chunk))


def download(url: str, directory: str, filename: str, md5: str | None,
             downloader: Downloader | None = None) -> str:
  """Downloads ``url`` to ``directory/filename`` atomically, verifying ``md5`` first.

  The bytes go to a temporary file in ``directory``; only when its MD5 matches is it
  renamed (``os.replace``, atomic on one file system) to ``filename``, so an
  interrupted or corrupted download never leaves a file under the final name.

  Args:
    url: where to fetch the file.
    directory: the destination directory (created).
    filename: the final file name.
    md5: the expected hex MD5, or None where no official checksum exists.
    downloader: ``(url, path) -> None``; :func:`urllib_downloader` when None.

  Returns:
    The path of the downloaded file.

  Raises:
    ChecksumError: the downloaded bytes do not have the expected MD5.
    OSError (and subclasses such as urllib.error.URLError): the download failed.
  """
  downloader = urllib_downloader if downloader is None else downloader
  os.makedirs(directory, exist_ok=True)
  final = os.path.join(directory, filename)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".part")
  os.close(fd)
  logging.info("Downloading %s to %s", url, final)
  try:
    downloader(url, tmp)
    if md5 is not None:
      check_md5(md5_file(tmp), md5, f"{tmp} (downloaded from {url})")
    os.replace(tmp, final)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return final


def find_or_download(what: str, wanted: str, dirs: Sequence[SearchDir], names: Sequence[str],
                     url: str | None, md5: str | None, download_enabled: bool,
                     downloader: Downloader | None) -> str:
  """The first existing ``dir/name``; else a fresh download of ``url`` as ``names[0]``.

  The download goes into the first configured directory of the lookup order.

  Raises:
    DatasetNotFoundError: not found and the download was disabled or failed.
    ChecksumError: the download arrived with the wrong MD5.
  """
  found = find_first(dirs, names)
  if found is not None:
    return found
  if not download_enabled or url is None:
    reason = None if url is None else f"downloading is disabled (would fetch {url})"
    raise DatasetNotFoundError(not_found_message(what, wanted, dirs, names, reason))
  target = existing_dirs(dirs)[0]
  try:
    return download(url, target, names[0], md5, downloader)
  except ChecksumError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (any failure: say so, never fall back)
    raise DatasetNotFoundError(not_found_message(
        what, wanted, dirs, names, f"{url} -> {target}: {type(e).__name__}: {e}")) from e


def read_member(tar: tarfile.TarFile, path: str, member: str) -> bytes:
  """The bytes of ``member`` of the open archive ``tar`` (read from ``path``).

  Raises:
    ValueError: naming ``path`` and ``member``, when the archive has no such file.
  """
  try:
    handle = tar.extractfile(member)
  except KeyError:
    handle = None
  if handle is None:
    raise ValueError(f"{path}: the archive has no file {member}")
  return handle.read()
