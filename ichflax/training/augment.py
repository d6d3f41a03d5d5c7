"""On-device training augmentation: one random affine per example, one resampling to model size.

The paper used Keras ImageDataGenerator (zoom, shear, shift, rotation, flip). Here the whole
family is composed into a single affine map per example and the stored image is sampled once,
straight at the model size, so there is no resize-then-warp double interpolation. Two ways to
draw the map: ichflax's (isotropic zoom and stretch as scales, shear as a factor, black fill)
and Keras's own (`cfg.keras`: ImageDataGenerator's parameters and matrix, `keras_params` /
`keras_matrix`), so the paper's code is expressible exactly. With antialiased resizing each
output pixel averages a few sub-samples (a box filter), so downscaling a stored 256 px slice to
64 px does not alias, matching the eval path; with nearest resizing it takes the nearest pixel.
Runs inside the jitted train step; the key fixes every draw, so runs are reproducible.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

from ichflax.config import AugmentConfig
from ichflax.models import preprocess


def model_input(images: jax.Array, key: jax.Array, cfg: AugmentConfig, image_size: int,
                variant: str, dtype=jnp.float32, *, resize: str = "antialiased",
                normalization: str = "backbone", context: int = 1) -> jax.Array:
  """uint8 (B, S, S, C) -> augmented, normalised float (B, size, size, 3K); eval path when off.

  The K slices of a 2.5D example (`context`) move and change look together, as one scan does.
  """
  if not cfg.enabled:
    return preprocess.model_input(images, image_size, variant, dtype, resize=resize,
                                  normalization=normalization, context=context)
  x = preprocess.to_rgb(images, context)
  mats = jax.vmap(lambda k: random_affine(k, cfg, image_size))(
      jax.random.split(key, x.shape[0]))
  x = jax.vmap(lambda img, m: warp(img, m, image_size, nearest=resize == "nearest",
                                   fill=cfg.fill))(x, mats)
  if cfg.appearance > 0:
    def look(img, k):  # one draw for all slices of the example
      slices = img.reshape(*img.shape[:2], context, 3)
      same = jax.vmap(lambda s: appearance(s, k, cfg.appearance), in_axes=2, out_axes=2)
      return same(slices).reshape(img.shape)
    x = jax.vmap(look)(x, jax.random.split(jax.random.fold_in(key, 1), x.shape[0]))
  return preprocess.normalize(x, variant, normalization).astype(dtype)


def appearance(image: jax.Array, key: jax.Array, strength: float) -> jax.Array:
  """One example's look randomised, (S, S, 3) float pixels in [0, 255] -> the same.

  Why: a model trained on one generator's DICOMs must also read what users upload: other
  display windows and levels, gamma-mapped exports, grey brain-window screenshots (serving
  repeats grey into all three channels), softer or sharper reconstructions, noisier scans and
  8-bit pictures. Each is drawn per example; `strength` scales every range (0: unchanged).
  """
  kc, kb, kg, kgrey, ks, kn, knoise = jax.random.split(key, 7)
  s = strength
  contrast = jnp.exp(jax.random.uniform(kc, (3,), minval=-0.25, maxval=0.25) * s)
  shift = jax.random.uniform(kb, (3,), minval=-20.0, maxval=20.0) * s
  x = jnp.clip((image - 127.5) * contrast + 127.5 + shift, 0.0, 255.0)
  gamma = jnp.exp(jax.random.uniform(kg, minval=-0.3, maxval=0.3) * s)
  x = 255.0 * (x / 255.0) ** gamma
  x = jnp.where(jax.random.bernoulli(kgrey, 0.3 * s), jnp.broadcast_to(x[..., :1], x.shape), x)
  blurred = _blur3(x)
  amount = jax.random.uniform(ks, minval=-0.8, maxval=1.0) * s  # < 0 blurs, > 0 sharpens
  x = x + amount * (x - blurred)
  sigma = jax.random.uniform(kn, minval=0.0, maxval=6.0) * s
  x = x + sigma * jax.random.normal(knoise, x.shape[:2] + (1,))  # one grain for all channels
  return jnp.clip(jnp.round(x), 0.0, 255.0)


def _blur3(x: jax.Array) -> jax.Array:
  """Separable [1, 2, 1] / 4 blur of (S, S, C), edges repeated."""
  def along(v, axis):
    pad = [(0, 0)] * v.ndim
    pad[axis] = (1, 1)
    v = jnp.pad(v, pad, mode="edge")
    n = x.shape[axis]
    take = lambda start: jax.lax.slice_in_dim(v, start, start + n, axis=axis)  # noqa: E731
    return 0.25 * take(0) + 0.5 * take(1) + 0.25 * take(2)
  return along(along(x, 0), 1)


def random_affine(key: jax.Array, cfg: AugmentConfig, image_size: int = 224) -> jax.Array:
  """(2, 3) map from output to input coordinates, both normalised to [-1, 1], (x, y) order.

  `image_size` matters to Keras's semantics only (its shifts are whole-image pixels).
  """
  if cfg.keras:
    return keras_matrix(keras_params(key, cfg, image_size), image_size)
  kz, ks, kst, kr, kt, kf = jax.random.split(key, 6)
  zoom = jax.random.uniform(kz, minval=1 - cfg.zoom, maxval=1 + cfg.zoom)
  stretch = jax.random.uniform(kst, minval=1 - cfg.stretch, maxval=1 + cfg.stretch)
  shear = jax.random.uniform(ks, minval=-cfg.shear, maxval=cfg.shear)
  angle = jnp.deg2rad(jax.random.uniform(kr, minval=-cfg.rotation, maxval=cfg.rotation))
  shift = jax.random.uniform(kt, (2,), minval=-cfg.shift, maxval=cfg.shift) * 2  # [-1, 1] units
  flip = jnp.where(jnp.logical_and(cfg.flip, jax.random.bernoulli(kf)), -1.0, 1.0)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  rotate = jnp.array([[cos, -sin], [sin, cos]])
  shear_m = jnp.array([[1.0, shear], [0.0, 1.0]])
  # Zoom > 1 enlarges the content, so output coordinates shrink by it when mapped to the input.
  scale = jnp.diag(jnp.array([flip * stretch, 1.0 / stretch]) / zoom)
  return jnp.concatenate([rotate @ shear_m @ scale, shift[:, None]], axis=1)


def zoom_range(cfg: AugmentConfig) -> tuple[float, float]:
  """Keras's zoom_range: [zoom_low, zoom_high], defaulting to [1 - zoom, 1 + zoom]."""
  low = 1 - cfg.zoom if cfg.zoom_low is None else cfg.zoom_low
  high = 1 + cfg.zoom if cfg.zoom_high is None else cfg.zoom_high
  return low, high


def keras_params(key: jax.Array, cfg: AugmentConfig, size: int) -> dict[str, jax.Array]:
  """One draw of `ImageDataGenerator.get_random_transform` for a size x size image.

  theta and shear in degrees from U(-range, range); tx, ty in pixels, a fraction of the side
  from U(-shift, shift); zx and zy drawn apart from U(zoom_low, zoom_high); flip with p = 1/2.
  """
  kr, kx, ky, ks, kz, kf = jax.random.split(key, 6)
  low, high = zoom_range(cfg)

  def sym(k, r):
    return jax.random.uniform(k, minval=-r, maxval=r)

  zx, zy = jax.random.uniform(kz, (2,), minval=low, maxval=high)
  return {"theta": sym(kr, cfg.rotation), "tx": sym(kx, cfg.shift) * size,
          "ty": sym(ky, cfg.shift) * size, "shear": sym(ks, cfg.shear), "zx": zx, "zy": zy,
          "flip": jnp.logical_and(cfg.flip, jax.random.bernoulli(kf))}


def keras_matrix(p: dict[str, jax.Array], size: int) -> jax.Array:
  """Keras's `apply_affine_transform` (then the horizontal flip) as a normalised (2, 3) map.

  Keras builds rotation . shift . shear . zoom in (x, y) pixel coordinates about the image
  centre and maps output to input pixels (so zoom < 1 enlarges the content); in coordinates
  centred and scaled to [-1, 1] the linear part is the same and the shift is 2 t / size. Its
  flip mirrors the transformed image, i.e. the output x before the map.
  """
  theta, shear = jnp.deg2rad(p["theta"]), jnp.deg2rad(p["shear"])
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rotate = jnp.array([[cos, -sin], [sin, cos]])
  shear_m = jnp.array([[1.0, -jnp.sin(shear)], [0.0, jnp.cos(shear)]])
  flip = jnp.where(p["flip"], -1.0, 1.0)
  linear = rotate @ shear_m @ jnp.diag(jnp.array([p["zx"], p["zy"]])) @ jnp.diag(
      jnp.array([flip, 1.0]))
  shift = rotate @ jnp.array([p["tx"], p["ty"]]) * (2.0 / size)
  return jnp.concatenate([linear, shift[:, None]], axis=1)


def warp(image: jax.Array, affine: jax.Array, size: int, *, nearest: bool = False,
         fill: str) -> jax.Array:
  """Samples float (S, S', C) at `affine`-mapped pixel centres of a size x size output.

  Bilinear with f x f sub-samples per output pixel (f = input/output ratio, rounded up), or the
  nearest pixel (`nearest`, one sample). Outside the slice: black (air) for "constant", the
  nearest edge pixel for "nearest" (Keras's fill_mode='nearest').
  """
  in_h, in_w = image.shape[:2]
  f = 1 if nearest else max(1, math.ceil(max(in_h, in_w) / size))
  # Sub-sample centres of every output pixel, normalised to [-1, 1].
  grid = (jnp.arange(size * f, dtype=jnp.float32) + 0.5) / (size * f) * 2 - 1
  gx, gy = jnp.meshgrid(grid, grid)  # (size*f, size*f) each, x along columns
  pts = jnp.stack([gx.ravel(), gy.ravel(), jnp.ones(gx.size)])
  src_x, src_y = affine @ pts
  rows = (src_y + 1) / 2 * in_h - 0.5
  cols = (src_x + 1) / 2 * in_w - 0.5
  if nearest:  # PIL's rule, floor(x + 0.5) = the eval path's nearest resize at identity
    rows, cols = jnp.floor(rows + 0.5), jnp.floor(cols + 0.5)
  out = sample(image, rows, cols, order=0 if nearest else 1, fill=fill)
  c = image.shape[-1]
  return out.reshape(size, f, size, f, c).mean(axis=(1, 3))


def sample(image: jax.Array, rows: jax.Array, cols: jax.Array, *, order: int,
           fill: str) -> jax.Array:
  """(S, S', C) image at float pixel coordinates -> (points, C): `map_coordinates` on every
  channel at once.

  The same corners, weights and sums as `jax.scipy.ndimage.map_coordinates` (order 0 on whole
  coordinates, or 1; mode "constant" with cval 0, or "nearest"), but each corner gathers all C
  channels in one go: vmapped over channels it gathered one value per channel and transposed
  the image first, a seventh of a 64 px CPU train step (docs/benchmarks.md, issue 24).
  """
  h, w = image.shape[:2]

  def nodes(coord):
    lower = jnp.floor(coord)
    index = lower.astype(jnp.int32)
    if order == 0:
      return [(index, 1.0)]
    upper = coord - lower
    return [(index, 1 - upper), (index + 1, upper)]

  outputs = []
  for (r, wr), (q, wq) in itertools.product(nodes(rows), nodes(cols)):
    value = image[jnp.clip(r, 0, h - 1), jnp.clip(q, 0, w - 1)]
    if fill == "constant":
      valid = (r >= 0) & (r < h) & (q >= 0) & (q < w)
      value = jnp.where(valid[:, None], value, 0.0)
    elif fill != "nearest":
      raise ValueError(f"unknown fill {fill!r}: choose constant or nearest")
    outputs.append((jnp.asarray(wr) * wq)[..., None] * value)
  return sum(outputs[1:], outputs[0])
