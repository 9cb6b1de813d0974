"""Both entry points run their smoke preset end to end, in process, on generated files in the real formats.

CIFAR-10: a tiny ``cifar-10-python.tar.gz`` of pickled batches (the official layout) whose
checksums are handed to the loader by monkeypatching its constants; MNIST: uncompressed IDX
files (no official checksum; the loader checks their headers).
"""

import json
import math
import pathlib
import re

import pytest

from experiments import autoencoder as autoencoder_main
from experiments import cifar as cifar_main
from experiments.data import cifar10
from experiments.data import common as data_common
from experiments.data import testing

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"


def _records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
  fake = testing.write_cifar10(str(tmp_path / "data"), per_batch=8, num_test=12)
  monkeypatch.setattr(cifar10, "TARBALL_MD5", fake.tarball_md5)
  monkeypatch.setattr(cifar10, "BATCH_MD5", fake.batch_md5)
  return tmp_path / "data"


def test_cifar_entry_point_runs_the_smoke_preset(cifar_dir, tmp_path, capsys):
  workdir = tmp_path / "run"
  status = cifar_main.main([
      "cifar", f"--config={CONFIG_DIR / 'cifar.py'}:smoke", "--config.optimizer=adam",
      "--config.seed=3", "--config.batch_size=8", f"--workdir={workdir}", f"--data_dir={cifar_dir}"])
  assert status == 0
  config = json.loads((workdir / "config.json").read_text())
  assert (config["task"], config["dataset"], config["optimizer"], config["seed"], config["preset"]) == (
      "cifar", "cifar10", "adam", 3, "smoke")
  assert config["model"]["depth"] == 8 and config["num_train"] == 40 and config["num_test"] == 12
  assert "md5 verified" in config["dataset_source"]
  records = _records(workdir)
  # 40 images / batch 8 = 5 steps per epoch, 2 epochs; a record every 4 steps and at each epoch end
  assert [(r["step"], r["epoch"]) for r in records] == [(4, 1), (5, 1), (8, 2), (10, 2)]
  assert [r["learning_rate"] for r in records] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
  assert records[-1]["test_accuracy"] in [k / 12 for k in range(13)]
  assert (workdir / "checkpoints" / "10").is_dir()
  assert "step=10 epoch=2" in capsys.readouterr().out


def test_autoencoder_entry_point_runs_the_smoke_preset(tmp_path, capsys):
  testing.write_mnist(str(tmp_path / "data"), num_train=48, num_test=20, gz=False)
  workdir = tmp_path / "run"
  status = autoencoder_main.main([
      "autoencoder", "--config=" + str(CONFIG_DIR / "autoencoder.py") + ":smoke",
      "--config.batch_size=16", f"--workdir={workdir}", f"--data_dir={tmp_path / 'data'}"])
  assert status == 0
  config = json.loads((workdir / "config.json").read_text())
  assert (config["task"], config["dataset"], config["optimizer"], config["preset"]) == (
      "autoencoder", "mnist", "mbag", "smoke")
  assert config["model"]["encoder_widths"] == [32, 8]
  assert config["optimizer_config"]["mbag"]["initial_accumulator_value"] == 0.1
  records = _records(workdir)
  assert [r["step"] for r in records] == [3, 4, 6]  # 48 / 16 = 3 steps per epoch; a record every 4
  last = records[-1]
  # binary cross-entropy summed over the 784 pixels, its per-pixel mean logged beside it
  assert last["test_loss"] == pytest.approx(784 * last["test_bce_per_pixel"], rel=1e-5)
  assert 0 < last["test_squared_error"] < 784
  assert "step=6 epoch=2" in capsys.readouterr().out


def test_missing_data_is_a_clear_error_and_exit_status_1(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("MBAG_DATA_DIR", str(tmp_path / "env"))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

  def no_network(url, destination):
    raise OSError(f"no network in tests ({url})")

  monkeypatch.setattr(data_common, "urllib_downloader", no_network)
  (tmp_path / "none").mkdir()
  status = autoencoder_main.main([
      "autoencoder", f"--config={CONFIG_DIR / 'autoencoder.py'}:smoke",
      "--config.dataset=faces", f"--workdir={tmp_path / 'run'}", f"--data_dir={tmp_path / 'none'}"])
  assert status == 1
  err = capsys.readouterr().err
  assert "FACES not found" in err and "newfaces_rot_single.mat" in err
  assert str(tmp_path / "none") in err and "no network in tests" in err


def test_diverging_run_stops_with_a_clear_error_and_exit_status_1(tmp_path, capsys):
  workdir = tmp_path / "run"
  status = cifar_main.main([
      "cifar", f"--config={CONFIG_DIR / 'digits.py'}:smoke", "--config.optimizer=adagrad",
      "--config.learning_rate=1e30", "--config.train_subset=128", f"--workdir={workdir}"])
  assert status == 1
  err = capsys.readouterr().err
  assert re.search(r"became non-finite at step \d+ \(epoch 1\)", err) and "--config.learning_rate" in err
  last = _records(workdir)[-1]  # the record of the bad steps is written, then the run stops
  assert not math.isfinite(last["train_loss"]) or not math.isfinite(last["grad_norm"])
  assert last["step"] == 4 and "test_loss" not in last  # 128 / 32 = 4 steps: no evaluation
  assert not list((workdir / "checkpoints").iterdir())  # nothing saved from a diverged state


def test_bad_flags_exit_with_status_2(tmp_path, capsys):
  status = cifar_main.main(["cifar", f"--config={CONFIG_DIR / 'cifar.py'}:smoke",
                            "--config.no_such_field=1", f"--workdir={tmp_path}"])
  assert status == 2
  assert "no_such_field" in capsys.readouterr().err
  assert cifar_main.main(["cifar", f"--config={CONFIG_DIR / 'cifar.py'}:fast",
                          f"--workdir={tmp_path}"]) == 2
