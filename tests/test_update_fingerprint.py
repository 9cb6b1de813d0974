"""benchmarks.update_fingerprint: what a bit-identity check before and after a refactor reads."""

import numpy as np

from benchmarks import update_fingerprint


def test_compare_names_every_kind_of_difference(tmp_path):
  a = {"x": np.zeros(3, np.float32), "s": np.zeros((), np.float32), "only_a": np.ones(1)}
  b = {"x": np.array([0, 0, 1e-7], np.float32), "s": np.zeros(1, np.float32), "only_b": np.ones(1)}
  assert update_fingerprint.compare(a, dict(a)) == []
  assert update_fingerprint.compare(a, b) == [
      "only_a: only in the first", "only_b: only in the second",
      "s: shape () vs (1,) (same values)", "x: max |difference| 1e-07"]
  np.savez(tmp_path / "a.npz", **a)
  assert update_fingerprint.main(["--compare", str(tmp_path / "a.npz"), str(tmp_path / "a.npz")]) == 0
  np.savez(tmp_path / "b.npz", **b)
  assert update_fingerprint.main(["--compare", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 1


def test_the_fingerprint_covers_every_algorithm_and_keeps_scalars_scalar():
  prints = update_fingerprint.fingerprint(steps=2)
  assert len(prints) == 4 * (3 * len(update_fingerprint.CASES) - len(update_fingerprint.ROOT_OPTIONS))
  assert prints["mbag/tau1/s"].shape == () and prints["mbag_n/default/dense"].shape == (40, 24)
  assert all(np.isfinite(v).all() for v in prints.values())
  # before the first root (step 4) MBAG and MBAG-EMA both step along lambda^{-1/2} g; MBAG-N not
  assert not np.array_equal(prints["mbag/default/dense"], prints["mbag_n/default/dense"])
