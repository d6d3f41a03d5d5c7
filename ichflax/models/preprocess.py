"""Each backbone's own input normalisation, and the eval-time path from stored uint8 images.

Pretrained weights only mean something on inputs normalised the way they were trained, so the
variant name picks the normalisation and every caller (training, evaluation, the Predictor)
goes through these functions instead of re-implementing them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ichflax.models.resnet import get_variant

# Keras "caffe" mode: BGR channel order, ImageNet mean subtracted, no scaling.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# torchvision: RGB scaled to [0, 1], then ImageNet mean / std.
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def normalize(x: jax.Array, variant: str, normalization: str = "backbone") -> jax.Array:
  """x: float NHWC, RGB (or K slices' RGB, slice-major), values in [0, 255] -> the backbone's
  normalised input (float32).

  normalization "rescale" is x / 255 alone: what the paper's code fed its ImageNet ResNet50
  (`ImageDataGenerator(rescale=1./255)`, no `preprocess_input`).
  """
  get_variant(variant)
  x = jnp.asarray(x, jnp.float32)
  if normalization == "rescale":
    return x / 255.0
  if normalization != "backbone":
    raise ValueError(f"unknown normalisation {normalization!r}: choose backbone or rescale")
  rgb = x.reshape(*x.shape[:-1], x.shape[-1] // 3, 3)  # each slice's three channels
  if variant == "keras":
    rgb = rgb[..., ::-1] - jnp.asarray(CAFFE_BGR_MEAN, jnp.float32)
  else:
    rgb = (rgb / 255.0 - jnp.asarray(TORCH_MEAN, jnp.float32)) / jnp.asarray(TORCH_STD,
                                                                           jnp.float32)
  return rgb.reshape(x.shape)


def to_rgb(images: jax.Array, context: int = 1) -> jax.Array:
  """(B, H, W, K or 3K) images of K slices (`ichflax.data.context`) -> float32 (B, H, W, 3K);
  each grey CT window is tiled to RGB."""
  k = context
  if images.ndim != 4 or images.shape[-1] not in (k, 3 * k):
    raise ValueError(
        f"expected images of shape (batch, height, width, {k} or {3 * k}) for {k} slice(s), got "
        f"{tuple(images.shape)}; add a batch axis for a single image and a channel axis for a "
        "grey one")
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] == 3 * k:
    return images
  return jnp.repeat(images, 3, axis=-1)  # slice-major: each slice's grey becomes its RGB


def model_input(images_uint8: jax.Array, image_size: int, variant: str, dtype=jnp.float32, *,
                resize: str = "antialiased", normalization: str = "backbone",
                context: int = 1) -> jax.Array:
  """Stored uint8 batch -> normalised model input of image_size x image_size (jit-friendly).

  resize "antialiased": bilinear with antialiasing, so a downscale does not alias fine bleeds
  away; "nearest": PIL's nearest neighbour (`nearest_index`), what Keras
  `load_img(target_size=...)` did to the paper's 128 px PNGs. `context`: slices per example.
  """
  x = to_rgb(images_uint8, context)
  b, h, w, c = x.shape
  if (h, w) != (image_size, image_size):
    if resize == "nearest":
      rows = nearest_index(h, image_size)
      cols = nearest_index(w, image_size)
      x = x[:, rows][:, :, cols]
    elif resize == "antialiased":
      x = jax.image.resize(x, (b, image_size, image_size, c), method="bilinear", antialias=True)
    else:
      raise ValueError(f"unknown resize {resize!r}: choose antialiased or nearest")
  return normalize(x, variant, normalization).astype(dtype)


def nearest_index(size_in: int, size_out: int) -> np.ndarray:
  """Source index of each output pixel under PIL's nearest-neighbour resize.

  PIL walks the row adding in/out to a float64 start of in/out / 2 and truncates, so its
  rounding drifts from floor((i + 0.5) x in / out); the same running sum reproduces it exactly.
  """
  step = size_in / size_out
  coords = np.add.accumulate(np.r_[0.5 * step, np.full(size_out - 1, step)])
  return np.minimum(coords.astype(np.int64), size_in - 1)
