"""Grad-CAM shown: the map at the input's size, the attention box drawn from it, the overlay.

The map itself (Selvaraju et al. 2017: each channel of the backbone's final feature map weighted
by the mean gradient of one class logit) is computed in `ichflax.models.inference`. The
box around its most salient region answers the paper's wish for "a border box around the
hemorrhage"; it is an attention box, not a segmentation: it shows where the model looked, not
the extent of a bleed.
"""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

# Fraction of the map's peak a pixel must reach to belong to the salient region.
BOX_THRESHOLD = 0.5
BOX_KIND = "attention box (Grad-CAM), not a segmentation"
_COLORMAP = (matplotlib.colormaps["jet"](np.arange(256))[:, :3] * 255).astype(np.uint8)
_BOX_COLOR = (0, 255, 0)


@dataclasses.dataclass(frozen=True)
class Box:
  """Pixel rectangle [x0, x1) x [y0, y1) in the input image's coordinates."""

  x0: int
  y0: int
  x1: int
  y1: int

  def as_list(self) -> list[int]:
    return [self.x0, self.y0, self.x1, self.y1]


def upsample(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of one (h, w) map to `shape` (H, W), float32 in [0, 1]."""
  h, w = shape
  up = Image.fromarray(np.asarray(cam, np.float32)).resize((w, h), Image.BILINEAR)
  return np.clip(np.asarray(up, np.float32), 0.0, 1.0)


def attention_box(cam: np.ndarray, threshold: float = BOX_THRESHOLD) -> Box | None:
  """Bounding box of the largest connected region with cam >= threshold * peak; None if flat."""
  cam = np.asarray(cam)
  peak = float(cam.max()) if cam.size else 0.0
  if peak <= 0:
    return None
  regions, count = ndimage.label(cam >= threshold * peak)
  sizes = ndimage.sum_labels(np.ones_like(cam), regions, index=np.arange(1, count + 1))
  ys, xs = np.nonzero(regions == 1 + int(np.argmax(sizes)))
  return Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def overlay(image: np.ndarray, cam: np.ndarray, box: Box | None, alpha: float = 0.45) -> np.ndarray:
  """uint8 RGB: the image with the heat map blended in where the map is high, and the box."""
  image = np.asarray(image, np.uint8)
  rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
  heat = _COLORMAP[np.rint(np.clip(cam, 0, 1) * 255).astype(np.uint8)].astype(np.float32)
  weight = alpha * np.clip(cam, 0, 1)[..., None]
  out = Image.fromarray(np.rint(rgb * (1 - weight) + heat * weight).astype(np.uint8))
  if box is not None:
    width = max(1, round(max(out.size) / 256))
    ImageDraw.Draw(out).rectangle((box.x0, box.y0, box.x1 - 1, box.y1 - 1), outline=_BOX_COLOR,
                                  width=width)
  return np.asarray(out)
