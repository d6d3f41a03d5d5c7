"""Augmentation: identity when off, one resampling that agrees with the eval resize, seeded."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ichflax import augment
from ichflax.config import AugmentConfig
from ichflax.models import preprocess

NONE = AugmentConfig(zoom=0, shear=0, stretch=0, shift=0, rotation=0, flip=False)


def _smooth_batch(n=4, size=64, channels=1):
  yy, xx = np.mgrid[:size, :size]
  img = 128 + 90 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 30 * (xx / size)  # not mirror-symmetric
  return np.repeat(img[None, :, :, None], n, 0).repeat(channels, -1).astype(np.uint8)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _jitted(images, key, cfg, size, variant):
  return augment.model_input(images, key, cfg, size, variant)


def test_off_is_exactly_the_eval_path():
  x = _smooth_batch(channels=3)
  got = _jitted(x, jax.random.key(0), AugmentConfig(enabled=False), 32, "keras")
  np.testing.assert_array_equal(got, preprocess.model_input(x, 32, "keras"))


def test_zero_ranges_agree_with_the_antialiased_resize():
  x = _smooth_batch(n=1)
  got = _jitted(x, jax.random.key(0), NONE, 32, "torchvision")
  want = preprocess.model_input(x, 32, "torchvision")
  assert got.shape == (1, 32, 32, 3) and got.dtype == jnp.float32
  # Box vs triangle filter differ slightly; the border blends with black air outside the slice.
  np.testing.assert_allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], atol=2.0 / 255 / 0.22)


def test_flip_mirrors_some_examples_and_keeps_others():
  x = _smooth_batch(n=8, size=32)
  got = np.asarray(_jitted(x, jax.random.key(3), dataclasses.replace(NONE, flip=True),
                           32, "keras"))
  plain = np.asarray(preprocess.model_input(x, 32, "keras"))
  flipped = [np.allclose(g, plain[0, :, ::-1], atol=1e-3) for g in got]
  same = [np.allclose(g, plain[0], atol=1e-3) for g in got]
  assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_seeded_and_per_example():
  x = _smooth_batch(n=4, size=64)
  cfg = AugmentConfig()
  a = np.asarray(_jitted(x, jax.random.key(7), cfg, 32, "keras"))
  b = np.asarray(_jitted(x, jax.random.key(7), cfg, 32, "keras"))
  c = np.asarray(_jitted(x, jax.random.key(8), cfg, 32, "keras"))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # The same image four times gets four different warps.
  assert all(not np.allclose(a[0], a[i]) for i in range(1, 4))


def test_random_affine_ranges():
  cfg = AugmentConfig(zoom=0.2, shear=0.0, stretch=0.0, shift=0.0, rotation=0.0, flip=False)
  draw = jax.jit(jax.vmap(lambda k: augment.random_affine(k, cfg)))
  mats = draw(jax.random.split(jax.random.key(0), 64))
  scale = np.asarray(mats[:, 0, 0])
  np.testing.assert_allclose(mats[:, 1, 1], scale, rtol=1e-6)  # uniform zoom, no stretch
  assert np.all((scale >= 1 / 1.2 - 1e-6) & (scale <= 1 / 0.8 + 1e-6))
  np.testing.assert_allclose(mats[:, :, 2], 0.0)
