"""CIFAR augmentation and normalisation: pixels move where the sampled crop/flip say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.data import augment

MEAN = np.asarray(augment.CIFAR10_MEAN, np.float32)
STD = np.asarray(augment.CIFAR10_STD, np.float32)


def _images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _reference(images, offsets, flips, pad=4):
  """Plain numpy: zero-pad, slice, mirror, normalise."""
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = np.stack([padded[n, r:r + 32, c:c + 32] for n, (r, c) in enumerate(offsets)])
  out = np.where(np.asarray(flips)[:, None, None, None], out[:, :, ::-1], out)
  return (out / np.float32(255) - MEAN) / STD


def test_augment_matches_numpy_reference_for_the_sampled_parameters():
  images = _images(16)
  rng = jax.random.PRNGKey(3)
  offsets, flips = augment.sample_crop_and_flip(rng, 16)
  out = jax.jit(augment.augment_cifar)(rng, images)
  assert out.shape == (16, 32, 32, 3) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, _reference(images, np.asarray(offsets), flips), atol=1e-5)
  assert 0 < int(np.sum(flips)) < 16  # this key exercises both branches


def test_centre_crop_without_flip_is_identity():
  images = _images(2)
  out = augment.crop_and_flip(images, jnp.full((2, 2), 4), jnp.zeros(2, bool))
  np.testing.assert_array_equal(out, images)


def test_corner_crop_shifts_and_pads_with_black():
  images = _images(1)
  out = np.asarray(augment.crop_and_flip(images, jnp.array([[0, 8]]), jnp.array([False])))
  assert np.all(out[0, :4] == 0) and np.all(out[0, :, 28:] == 0)
  np.testing.assert_array_equal(out[0, 4:, :28], images[0, :28, 4:])


def test_flip_mirrors_columns():
  images = _images(1)
  out = np.asarray(augment.crop_and_flip(images, jnp.array([[4, 4]]), jnp.array([True])))
  np.testing.assert_array_equal(out[0, :, 0], images[0, :, 31])
  np.testing.assert_array_equal(out[0, 3, 10], images[0, 3, 21])


def test_crop_offsets_and_flips_are_uniform():
  offsets, flips = augment.sample_crop_and_flip(jax.random.PRNGKey(0), 9000)
  counts = np.bincount(np.asarray(offsets).ravel(), minlength=9)
  assert counts.shape == (9,)  # offsets only in 0..8
  np.testing.assert_allclose(counts / counts.sum(), 1 / 9, atol=0.01)
  assert abs(float(np.mean(flips)) - 0.5) < 0.02


def test_same_key_same_output_other_key_other_output():
  images = _images(8)
  a = augment.augment_cifar(jax.random.PRNGKey(1), images)
  b = augment.augment_cifar(jax.random.PRNGKey(1), images)
  c = augment.augment_cifar(jax.random.PRNGKey(2), images)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_normalisation_values_and_statistics():
  extremes = np.array([[[[0, 0, 0], [255, 255, 255]]]], np.uint8)
  out = np.asarray(augment.normalize_cifar(extremes))
  np.testing.assert_allclose(out[0, 0, 0], -MEAN / STD, rtol=1e-6)
  np.testing.assert_allclose(out[0, 0, 1], (1 - MEAN) / STD, rtol=1e-6)
  # A checkerboard of mean_c +- std_c (x255, rounded) in every channel: mean 0 and std 1
  # after normalisation, up to the rounding (0.5 / (255 std_c) < 0.01).
  signs = np.where(np.add.outer(np.arange(32), np.arange(32)) % 2 == 0, 1.0, -1.0)
  pixels = 255 * (MEAN + STD * signs[None, :, :, None] * np.ones((4, 1, 1, 3)))
  out = np.asarray(augment.normalize_cifar(np.round(pixels).astype(np.uint8)))
  np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=0.01)
  np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=0.01)


def test_bad_shape_is_refused():
  with pytest.raises(ValueError, match=r"RGB images \[N, H, W, 3\], got shape \(2, 32, 32\)"):
    augment.augment_cifar(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32), jnp.uint8))
