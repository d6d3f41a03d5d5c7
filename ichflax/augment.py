"""On-device training augmentation: one random affine per example, one resampling to model size.

The paper used Keras ImageDataGenerator (zoom, shear/stretch, shift, rotation, flip). Here the
whole family is composed into a single affine map per example and the stored image is sampled
once, straight at the model size, so there is no resize-then-warp double interpolation. Each
output pixel averages a few sub-samples (a box filter) so that downscaling a stored 256 px slice
to 64 px does not alias, matching the antialiased resize of the eval path.
Runs inside the jitted train step; the key fixes every draw, so runs are reproducible.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ichflax.config import AugmentConfig
from ichflax.models import preprocess


def model_input(images: jax.Array, key: jax.Array, cfg: AugmentConfig, image_size: int,
                variant: str, dtype=jnp.float32) -> jax.Array:
  """uint8 (B, S, S, C) -> augmented, normalised float (B, size, size, 3); eval path when off."""
  if not cfg.enabled:
    return preprocess.model_input(images, image_size, variant, dtype)
  x = preprocess.to_rgb(images)
  mats = jax.vmap(lambda k: random_affine(k, cfg))(jax.random.split(key, x.shape[0]))
  x = jax.vmap(lambda img, m: warp(img, m, image_size))(x, mats)
  return preprocess.normalize(x, variant).astype(dtype)


def random_affine(key: jax.Array, cfg: AugmentConfig) -> jax.Array:
  """(2, 3) map from output to input coordinates, both normalised to [-1, 1], (x, y) order."""
  kz, ks, kst, kr, kt, kf = jax.random.split(key, 6)
  zoom = jax.random.uniform(kz, (), minval=1 - cfg.zoom, maxval=1 + cfg.zoom)
  stretch = jax.random.uniform(kst, (), minval=1 - cfg.stretch, maxval=1 + cfg.stretch)
  shear = jax.random.uniform(ks, (), minval=-cfg.shear, maxval=cfg.shear)
  angle = jnp.deg2rad(jax.random.uniform(kr, (), minval=-cfg.rotation, maxval=cfg.rotation))
  shift = jax.random.uniform(kt, (2,), minval=-cfg.shift, maxval=cfg.shift) * 2  # [-1, 1] units
  flip = jnp.where(jnp.logical_and(cfg.flip, jax.random.bernoulli(kf)), -1.0, 1.0)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  rotate = jnp.array([[cos, -sin], [sin, cos]])
  shear_m = jnp.array([[1.0, shear], [0.0, 1.0]])
  # Zoom > 1 enlarges the content, so output coordinates shrink by it when mapped to the input.
  scale = jnp.diag(jnp.array([flip * stretch, 1.0 / stretch]) / zoom)
  return jnp.concatenate([rotate @ shear_m @ scale, shift[:, None]], axis=1)


def warp(image: jax.Array, affine: jax.Array, size: int) -> jax.Array:
  """Samples float (S, S', C) at `affine`-mapped pixel centres of a size x size output.

  Bilinear, with f x f sub-samples per output pixel (f = input/output ratio, rounded up) and
  black (air) outside the slice.
  """
  in_h, in_w = image.shape[:2]
  f = max(1, math.ceil(max(in_h, in_w) / size))
  # Sub-sample centres of every output pixel, normalised to [-1, 1].
  grid = (jnp.arange(size * f, dtype=jnp.float32) + 0.5) / (size * f) * 2 - 1
  gx, gy = jnp.meshgrid(grid, grid)  # (size*f, size*f) each, x along columns
  pts = jnp.stack([gx.ravel(), gy.ravel(), jnp.ones(gx.size)])
  src_x, src_y = affine @ pts
  rows = (src_y + 1) / 2 * in_h - 0.5
  cols = (src_x + 1) / 2 * in_w - 0.5

  def sample(channel):
    out = jax.scipy.ndimage.map_coordinates(channel, [rows, cols], order=1, mode="constant",
                                            cval=0.0)
    return out.reshape(size, f, size, f).mean(axis=(1, 3))

  return jax.vmap(sample, in_axes=2, out_axes=2)(image)
