"""CIFAR-10 augmentation and normalisation on the device (jit-able, randomness from jax.random).

Training images: zero-pad 4 pixels on each side, crop a random 32x32 window, flip
horizontally with probability 1/2 (He et al. 2016, Sec. 4.2), then normalise each
channel. Evaluation images are only normalised.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Per-channel mean and standard deviation of the 50000 CIFAR-10 training images, pixels
# scaled to [0, 1] (statistics over all pixels; not the often-quoted 0.2023/0.1994/0.2010,
# which average per-image standard deviations).
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)
PAD = 4


def _check_nhwc(images, name: str) -> None:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{name} expects RGB images [N, H, W, 3], got shape {images.shape}")


def normalize_cifar(images: jax.Array) -> jax.Array:
  r"""Per-channel normalisation, :math:`(x / 255 - \mu_c) / \sigma_c`.

  Args:
    images: uint8 (or 0..255 valued) [..., 3] images.

  Returns:
    float32 images of the same shape.
  """
  x = jnp.asarray(images).astype(jnp.float32) / 255.0
  mean = jnp.asarray(CIFAR10_MEAN, jnp.float32)
  std = jnp.asarray(CIFAR10_STD, jnp.float32)
  return (x - mean) / std


def sample_crop_and_flip(rng: jax.Array, batch_size: int,
                         pad: int = PAD) -> tuple[jax.Array, jax.Array]:
  """Draws each image's crop offset (uniform in {0..2 pad}^2) and flip (Bernoulli(1/2)).

  Args:
    rng: a jax.random key.
    batch_size: the number of images.
    pad: the padding on each side.

  Returns:
    (offsets int32 [N, 2] as (row, column) into the padded image, flips bool [N]).
  """
  crop_rng, flip_rng = jax.random.split(rng)
  offsets = jax.random.randint(crop_rng, (batch_size, 2), 0, 2 * pad + 1, dtype=jnp.int32)
  flips = jax.random.bernoulli(flip_rng, 0.5, (batch_size,))
  return offsets, flips


def crop_and_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array,
                  pad: int = PAD) -> jax.Array:
  """Zero-pads by ``pad``, takes the HxW window at ``offsets``, then mirrors where ``flips``.

  Output pixel ``[n, i, j]`` is padded pixel ``[n, offsets[n, 0] + i, offsets[n, 1] + j']``
  with ``j' = W - 1 - j`` for flipped images and ``j`` otherwise.

  Args:
    images: [N, H, W, C] of any dtype (padding is 0 in that dtype).
    offsets: int [N, 2], each in [0, 2 pad].
    flips: bool [N].
    pad: the padding on each side.

  Returns:
    Images of the input's shape and dtype.
  """
  _check_nhwc(images, "crop_and_flip")
  _, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  window = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
  cropped = jax.vmap(window)(padded, offsets)
  return jnp.where(flips[:, None, None, None], cropped[:, :, ::-1, :], cropped)


def augment_cifar(rng: jax.Array, images: jax.Array) -> jax.Array:
  """Training augmentation: 4-pixel zero pad, random 32x32 crop, random flip, normalisation.

  Args:
    rng: a jax.random key (fold in the step for a different draw per step).
    images: uint8 [N, H, W, 3].

  Returns:
    float32 [N, H, W, 3], normalised as :func:`normalize_cifar`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.zeros((2, 32, 32, 3), jnp.uint8)
    >>> jax.jit(augment_cifar)(jax.random.PRNGKey(0), x).shape
    (2, 32, 32, 3)
  """
  _check_nhwc(images, "augment_cifar")
  offsets, flips = sample_crop_and_flip(rng, images.shape[0])
  return normalize_cifar(crop_and_flip(images, offsets, flips))
