"""Augmentation: identity when off, one resampling that agrees with the eval resize, seeded;
Keras's own draws and matrix (ImageDataGenerator) as the reference of the `keras` reading."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ichflax import config
from ichflax.config import AugmentConfig
from ichflax.models import preprocess
from ichflax.training import augment

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


def test_warp_supersamples_so_fine_detail_does_not_alias():
  """A one-pixel checkerboard shrunk 3x. Per axis the +-1 alternation is weighed by a triangle
  3 pixels wide each way (antialiased resize: 1/9 of it is left) or by warp's box of 3
  sub-samples (1/3 left), so the board becomes (1 -+ 1/81) / 2 or (1 -+ 1/9) / 2, 4/81 apart; one
  sample per output pixel would hit a single square, 0 or 1, 40/81 off."""
  board = (np.indices((96, 96)).sum(0) % 2).astype(np.float32)[..., None]
  got = augment.warp(jnp.asarray(board), jnp.eye(3)[:2], 32, fill="constant")
  want = jax.image.resize(board, (32, 32, 1), "linear", antialias=True)
  parity = np.indices((30, 30)).sum(0) % 2  # output (1, 1) centres on input (4, 4): a 0 square
  np.testing.assert_allclose(want[1:-1, 1:-1, 0], np.where(parity, 41, 40) / 81, atol=1e-5)
  np.testing.assert_allclose(got[1:-1, 1:-1], want[1:-1, 1:-1], atol=0.06)


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


def _affines(n=256, **ranges) -> np.ndarray:
  """n (2, 3) maps from `random_affine` with only the given ranges on, from a fixed key.

  Not jitted: op by op is a few times faster here than compiling each configuration."""
  draw = jax.vmap(lambda k: augment.random_affine(k, dataclasses.replace(NONE, **ranges)))
  return np.asarray(draw(jax.random.split(jax.random.key(0), n)), np.float64)


def _fills(x: np.ndarray, low: float, high: float) -> bool:
  """Inside [low, high] and reaching within 5 % of both ends: the whole range is drawn."""
  margin = 0.05 * (high - low)
  return bool(x.min() >= low - 1e-6 and x.max() <= high + 1e-6
              and x.min() < low + margin and x.max() > high - margin)


def _identity_except(mats: np.ndarray, *free: tuple[int, int]) -> None:
  """Every entry of every (2, 3) map but the `free` ones is the identity's (no shift)."""
  fixed = np.ones((2, 3), bool)
  for entry in free:
    fixed[entry] = False
  np.testing.assert_allclose(mats[:, fixed], np.broadcast_to(np.eye(2, 3)[fixed],
                                                             mats[:, fixed].shape), atol=1e-6)


def test_random_affine_ranges():
  mats = _affines(zoom=0.2)
  _identity_except(mats, (0, 0), (1, 1))
  np.testing.assert_allclose(mats[:, 1, 1], mats[:, 0, 0], rtol=1e-6)  # uniform, no stretch
  assert _fills(1 / mats[:, 0, 0], 0.8, 1.2)  # zoom > 1 enlarges: the map shrinks by it


def test_each_range_alone_draws_its_own_map_over_the_whole_range():
  """Each parameter alone gives the map the docstring names, drawn over the whole of [-r, r]
  (or [1 - r, 1 + r]) from one key; every other entry stays the identity's."""
  rotation = _affines(rotation=30.0)
  theta = np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0])
  cos, sin = np.cos(theta), np.sin(theta)
  np.testing.assert_allclose(rotation[:, :, :2], np.moveaxis([[cos, -sin], [sin, cos]], 2, 0),
                             atol=1e-6)
  _identity_except(rotation, (0, 0), (0, 1), (1, 0), (1, 1))
  assert _fills(np.degrees(theta), -30, 30)
  stretch = _affines(stretch=0.2)
  _identity_except(stretch, (0, 0), (1, 1))
  np.testing.assert_allclose(stretch[:, 0, 0] * stretch[:, 1, 1], 1.0, rtol=1e-6)  # aspect only
  assert _fills(stretch[:, 0, 0], 0.8, 1.2)
  shear = _affines(shear=0.3)
  _identity_except(shear, (0, 1))
  assert _fills(shear[:, 0, 1], -0.3, 0.3)
  shift = _affines(shift=0.1)  # a tenth of the side is 0.2 in [-1, 1] units
  _identity_except(shift, (0, 2), (1, 2))
  assert _fills(shift[:, 0, 2], -0.2, 0.2) and _fills(shift[:, 1, 2], -0.2, 0.2)
  assert not np.allclose(shift[:, 0, 2], shift[:, 1, 2])  # x and y drawn apart


def test_flip_mirrors_x_with_probability_one_half():
  mats = _affines(flip=True)
  _identity_except(mats, (0, 0))
  assert set(mats[:, 0, 0]) == {-1.0, 1.0}
  assert 0.4 < np.mean(mats[:, 0, 0] < 0) < 0.6  # 256 fair draws: 0.5 +- 0.031 (sd)


def test_keras_reading_zooms_x_and_y_apart_as_keras_inverse_scale():
  """Keras's zoom (`cfg.keras`): x and y drawn apart in [zoom_low, zoom_high], used as the
  output-to-input scale itself (so zoom < 1 enlarges), x mirrored with p = 1/2."""
  mats = _affines(keras=True, zoom_low=0.5, zoom_high=0.8, flip=True)
  _identity_except(mats, (0, 0), (1, 1))
  zx, zy = np.abs(mats[:, 0, 0]), mats[:, 1, 1]
  assert _fills(zx, 0.5, 0.8) and _fills(zy, 0.5, 0.8) and not np.allclose(zx, zy)
  assert 0.4 < np.mean(mats[:, 0, 0] < 0) < 0.6


def test_zero_ranges_with_nearest_resize_are_the_eval_path():
  """The paper code's reading (Keras draws, nearest resize, /255) at zero ranges is the eval
  path's PIL nearest resize exactly, up and down, in the caller's dtype."""
  cfg = dataclasses.replace(config.preset("paper-code").augment, zoom_low=1.0, zoom_high=1.0,
                            rotation=0.0, shift=0.0, shear=0.0, flip=False)
  x = _smooth_batch(n=2, size=64)
  for size in (32, 128):
    kwargs = {"resize": "nearest", "normalization": "rescale"}
    got = augment.model_input(x, jax.random.key(0), cfg, size, "keras", jnp.bfloat16, **kwargs)
    want = preprocess.model_input(x, size, "keras", jnp.bfloat16, **kwargs)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(got, want)


def test_outside_the_slice_is_black_air_or_the_edge_pixel():
  """Half the output mapped past the right edge: black for "constant", the edge for "nearest"."""
  white = jnp.ones((8, 8, 1))
  half_right = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # input x = output x + 1
  black = np.asarray(augment.warp(white, half_right, 8, fill="constant"))[..., 0]
  np.testing.assert_array_equal(black, np.repeat([[1.0] * 4 + [0.0] * 4], 8, axis=0))
  np.testing.assert_array_equal(augment.warp(white, half_right, 8, fill="nearest"), white)


@pytest.mark.parametrize("ranges,want", [
    ({"zoom": 0.2}, (0.8, 1.2)),  # Keras: a float z means [1 - z, 1 + z]
    ({"zoom": 0.2, "zoom_low": 0.5}, (0.5, 1.2)),
    ({"zoom": 0.2, "zoom_high": 1.0}, (0.8, 1.0)),
    ({"zoom": 0.2, "zoom_low": 0.0, "zoom_high": 1.0}, (0.0, 1.0)),  # the paper code's [0, 1]
])
def test_zoom_range_defaults_to_one_plus_minus_zoom(ranges, want):
  assert augment.zoom_range(dataclasses.replace(NONE, **ranges)) == pytest.approx(want)


def _keras_generator():
  from keras.src.legacy.preprocessing.image import ImageDataGenerator
  a = config.preset("paper-code").augment
  return ImageDataGenerator(zoom_range=[a.zoom_low, a.zoom_high], rotation_range=a.rotation,
                            width_shift_range=a.shift, height_shift_range=a.shift,
                            shear_range=a.shear, horizontal_flip=a.flip, fill_mode=a.fill)


def test_keras_parameter_ranges_match_image_data_generator():
  """Our draws and Keras's `get_random_transform` for the notebook's generator, 4000 each."""
  n, size = 4000, 224
  cfg = config.preset("paper-code").augment
  ours = jax.jit(jax.vmap(lambda k: augment.keras_params(k, cfg, size)))(
      jax.random.split(jax.random.key(0), n))
  gen = _keras_generator()
  draws = [gen.get_random_transform((size, size, 3), seed=i) for i in range(n)]
  theirs = {k: np.array([d[k] for d in draws], np.float64) for k in draws[0] if k in ours}
  theirs["flip"] = np.array([d["flip_horizontal"] for d in draws], np.float64)
  documented = {"theta": (-20, 20), "tx": (-0.05 * size, 0.05 * size),
                "ty": (-0.05 * size, 0.05 * size), "shear": (-0.05, 0.05), "zx": (0, 1),
                "zy": (0, 1), "flip": (0, 1)}
  for name, (low, high) in documented.items():
    a, b = np.asarray(ours[name], np.float64), theirs[name]
    for x in (a, b):  # both inside the documented range, and filling it
      assert x.min() >= low and x.max() <= high, name
      assert x.min() < low + 0.01 * (high - low) and x.max() > high - 0.01 * (high - low), name
    # Same law: means and spreads agree within sampling error (uniform: sd/sqrt(n) ~ 0.5%).
    np.testing.assert_allclose([a.mean(), a.std()], [b.mean(), b.std()],
                               atol=0.03 * (high - low), err_msg=name)
  assert not np.allclose(ours["zx"], ours["zy"])  # x and y zoom drawn apart


def test_keras_matrix_is_apply_affine_transform():
  """One draw's warp equals Keras's own `apply_transform` (affine, then flip) on the image."""
  size = 48
  x = np.random.default_rng(2).random((size, size, 3)).astype(np.float32)
  gen = _keras_generator()
  for seed in range(4):
    params = gen.get_random_transform((size, size, 3), seed=seed)
    params["zx"], params["zy"] = 0.5 + params["zx"] / 2, 0.5 + params["zy"] / 2  # keep texture
    want = gen.apply_transform(x, params)
    p = {k: jnp.asarray(params[k]) for k in ("theta", "tx", "ty", "shear", "zx", "zy")}
    p["flip"] = jnp.asarray(bool(params["flip_horizontal"]))
    got = augment.warp(jnp.asarray(x), augment.keras_matrix(p, size), size, fill="nearest")
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


def test_augment_off_with_nearest_is_the_eval_path():
  x = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 1), np.uint8)
  cfg = dataclasses.replace(config.preset("paper-code").augment, enabled=False)
  got = augment.model_input(x, jax.random.key(0), cfg, 64, "keras", jnp.bfloat16,
                            resize="nearest", normalization="rescale")
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got, preprocess.model_input(x, 64, "keras", jnp.bfloat16,
                                                            resize="nearest",
                                                            normalization="rescale"))


@pytest.mark.parametrize("order, fill", [(1, "constant"), (1, "nearest"), (0, "constant"),
                                         (0, "nearest")])
def test_sample_is_map_coordinates_on_every_channel(order, fill):
  """All channels per gather (issue 24's CPU speed-up) must sample exactly what scipy-style
  map_coordinates does channel by channel, inside the slice, across its edges and outside it."""
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.uniform(0, 255, (9, 7, 3)), jnp.float32)
  rows = jnp.asarray(rng.uniform(-2.5, 10.5, 200), jnp.float32)
  cols = jnp.asarray(rng.uniform(-2.5, 8.5, 200), jnp.float32)
  if order == 0:
    rows, cols = jnp.floor(rows), jnp.floor(cols)
  want = jnp.stack([jax.scipy.ndimage.map_coordinates(image[..., c], [rows, cols], order=order,
                                                      mode=fill, cval=0.0) for c in range(3)],
                   axis=-1)
  got = augment.sample(image, rows, cols, order=order, fill=fill)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
  assert bool(jnp.any(got == 0.0)) == (fill == "constant")  # some points fall outside


def _three_windows(n=64, size=32):
  """Distinct channels, as brain / subdural / bone windows of one slice are."""
  base = _smooth_batch(n, size, 1).astype(np.float32)
  return np.concatenate([base, 0.6 * base + 40, 255 - base], -1).astype(np.uint8)


def test_appearance_off_changes_nothing_and_on_is_applied():
  x = _three_windows(4)
  plain = _jitted(x, jax.random.key(3), NONE, 32, "keras")
  off = _jitted(x, jax.random.key(3), dataclasses.replace(NONE, appearance=0.0), 32, "keras")
  np.testing.assert_array_equal(plain, off)
  on = _jitted(x, jax.random.key(3), dataclasses.replace(NONE, appearance=1.0), 32, "keras")
  assert np.abs(np.asarray(on) - np.asarray(plain)).mean() > 0.01  # the train step applies it


def test_appearance_draws_per_example_looks_a_user_upload_can_have():
  x = jnp.asarray(_three_windows(), jnp.float32)
  keys = jax.random.split(jax.random.key(0), x.shape[0])
  out = np.asarray(jax.vmap(lambda img, k: augment.appearance(img, k, 1.0))(x, keys))
  assert out.min() >= 0 and out.max() <= 255 and np.array_equal(out, np.round(out))  # 8-bit
  grey = np.all(out == out[..., :1], axis=(1, 2, 3))
  assert 0.15 < grey.mean() < 0.45  # ~30 % become grey brain-window pictures, not all
  means = out.reshape(len(out), -1).mean(1)
  assert means.std() > 3  # level and contrast differ between examples of the same image
  for a, b in zip(np.asarray(x), out):  # the same anatomy under another look
    assert np.corrcoef(a[..., 0].ravel(), b[..., 0].ravel())[0, 1] > 0.8
  again = np.asarray(jax.vmap(lambda img, k: augment.appearance(img, k, 1.0))(x, keys))
  np.testing.assert_array_equal(out, again)  # the key fixes every draw
  weak = np.asarray(jax.vmap(lambda img, k: augment.appearance(img, k, 0.1))(x, keys))
  assert np.abs(weak - np.asarray(x)).mean() < np.abs(out - np.asarray(x)).mean() / 3


def test_appearance_blur_and_sharpen_move_edges_the_two_ways():
  step = np.zeros((16, 16, 3), np.float32)
  step[:, 8:] = 200.0
  edge = lambda img: np.abs(np.diff(img[8, :, 0])).max()
  blurred = np.asarray(augment._blur3(jnp.asarray(step)))
  assert edge(blurred) < edge(step) and blurred[:, 0].max() == 0 and blurred[:, -1].min() == 200
