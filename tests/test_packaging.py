"""Hygiene: what ships, what importing does, and where flags and patches are set.

- ``pip install`` ships the library ``mbag`` alone; ``experiments``, ``theory`` and
  ``paper_figures`` run from the repository.
- Importing ``experiments`` changes nothing in the process: no XLA flag, no kfac-jax patch.
- The entry points set the XLA flags; building the KFAC baseline patches kfac-jax, and only for
  the kfac-jax releases it was checked against.
"""

import os
import pathlib
import subprocess
import sys
import tomllib

from absl import app
import kfac_jax
import pytest
import setuptools

from experiments import cli
from experiments import xla_flags
from experiments.optimizers import kfac

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_distribution_ships_only_mbag():
  pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
  find = pyproject["tool"]["setuptools"]["packages"]["find"]
  shipped = setuptools.find_packages(str(ROOT), include=find["include"])
  assert sorted(shipped) == ["mbag", "mbag._src"]
  pin = [d for d in pyproject["project"]["optional-dependencies"]["experiments"]
         if d.startswith("kfac-jax")]
  assert pin == ["kfac-jax>=0.0.8,<0.0.9"]
  assert kfac.KFAC_JAX_CHECKED == ((0, 0, 8), (0, 0, 9))  # the same range in the code


def test_importing_experiments_sets_no_flag_and_patches_nothing(tmp_path):
  code = """if True:
    import os
    import experiments, experiments.optimizers, experiments.train
    from kfac_jax._src import tag_graph_matcher as t
    print(os.environ.get("XLA_FLAGS", "<unset>"), t.eval_jaxpr_eqn.__module__)
    from experiments.optimizers import kfac
    kfac.kfac(lambda *a: None, 1e-3)
    print(t.eval_jaxpr_eqn.__module__)
  """
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = str(ROOT)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=120, check=True).stdout.split()
  assert out == ["<unset>", "kfac_jax._src.tag_graph_matcher", "experiments.optimizers.kfac"]


@pytest.mark.parametrize("version", ["0.0.7", "0.0.9", "0.1.0", "1.0"])
def test_kfac_outside_the_checked_range_is_a_clear_error(version, monkeypatch):
  with pytest.raises(RuntimeError, match=rf"kfac-jax >= 0\.0\.8, < 0\.0\.9; kfac-jax {version} is "
                                         r"installed.*pip install 'kfac-jax>=0\.0\.8,<0\.0\.9'"):
    kfac.check_kfac_jax_version(version)
  monkeypatch.setattr(kfac_jax, "__version__", version)
  with pytest.raises(RuntimeError, match="checked against"):
    kfac.kfac(lambda *a: None, 1e-3)


@pytest.mark.parametrize("version", ["0.0.8", "0.0.8.post1"])
def test_kfac_in_the_checked_range_is_accepted(version):
  kfac.check_kfac_jax_version(version)


@pytest.mark.parametrize("before, after", [
    (None, xla_flags.CPU_SCHEDULER_FLAG),
    ("--xla_force_host_platform_device_count=8",
     "--xla_force_host_platform_device_count=8 " + xla_flags.CPU_SCHEDULER_FLAG),
    # the user's own value of the flag is kept
    ("--xla_cpu_enable_concurrency_optimized_scheduler=true",
     "--xla_cpu_enable_concurrency_optimized_scheduler=true"),
])
def test_entry_point_flags(before, after):
  environ = {} if before is None else {"XLA_FLAGS": before}
  assert xla_flags.set_entry_point_flags(environ) == after == environ["XLA_FLAGS"]


def test_the_entry_points_main_sets_the_flags_before_running(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  seen = {}
  monkeypatch.setattr(cli, "define_flags", lambda config_file: seen.setdefault("file", config_file))
  monkeypatch.setattr(app, "run", lambda main, **kw: seen.setdefault("flags", os.environ["XLA_FLAGS"]))
  cli.absl_run("cifar.py")
  assert seen == {"file": "cifar.py", "flags": xla_flags.CPU_SCHEDULER_FLAG}


def test_keep_freed_memory_sets_glibc_and_can_be_turned_off(monkeypatch):
  """On glibc the mallopt calls succeed (a wrong parameter number or value makes mallopt return 0);
  MBAG_KEEP_FREED_MEMORY=0 leaves the allocator alone and says so."""
  import ctypes.util  # pylint: disable=import-outside-toplevel
  import platform  # pylint: disable=import-outside-toplevel
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    pytest.skip("glibc only")
  assert ctypes.util.find_library("c")
  monkeypatch.setattr(xla_flags, "_kept", False)
  assert xla_flags.keep_freed_memory({"MBAG_KEEP_FREED_MEMORY": "0"}) is False
  assert xla_flags.freed_memory_kept() is False
  assert xla_flags.keep_freed_memory({}) is True
  assert xla_flags.freed_memory_kept() is True
