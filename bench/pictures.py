"""Pictures for the picture checks: phantom slices as people export them, and pictures that are
not CT slices at all (each made here, none seen by any model)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from ichflax.data import image, synth


def phantom_hu(seed: int, subjects: int, levels: int, size: int) -> list[np.ndarray]:
  """HU slices of new anatomy-phantom subjects from skull base to vertex (top 5% left out:
  a bare skull cap holds no tissue to judge)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(subjects):
    subject = synth.make_subject(rng, synth.sample_subtypes(rng))
    scanner = synth.Scanner.sample(rng, subject.head_mm)
    lo, hi = subject.z_range
    for q in np.linspace(0.02, 0.95, levels):
      out.append(synth.render_slice(subject, scanner, float(lo + q * (hi - lo)), size, rng).hu)
  return out


def _jpeg(picture: np.ndarray, quality: int) -> np.ndarray:
  buf = io.BytesIO()
  Image.fromarray(picture).save(buf, "JPEG", quality=quality)
  return np.asarray(Image.open(buf))


def _resized(picture: np.ndarray, scale: float) -> np.ndarray:
  side = round(picture.shape[0] * scale)
  return np.asarray(Image.fromarray(picture).resize((side, side), Image.BILINEAR))


def exports(hu: np.ndarray) -> dict[str, np.ndarray]:
  """One slice as a viewer, a converter or a hand-made screenshot exports it."""
  brain = image.window(hu, *image.WINDOWS["brain"])
  side = brain.shape[0]
  m = side // 12  # a mild crop keeps air around the head
  return {
      "brain window": brain,
      "subdural window": image.window(hu, *image.WINDOWS["subdural"]),
      "bone window": image.window(hu, *image.WINDOWS["bone"]),
      "three windows RGB": image.slice_to_uint8(hu, image.THREE_WINDOWS, side),
      "JPEG q20": _jpeg(brain, 20), "JPEG q75": _jpeg(brain, 75),
      "half size": _resized(brain, 0.5), "double size": _resized(brain, 2.0),
      "mild crop": brain[m:side - m, m:side - m],
  }


def not_ct(hu: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
  """(picture, what its refusal says) for pictures no head CT slice looks like; `hu`: a phantom
  slice for the pictures made from one (inverted, cropped tight, inside a viewer's interface)."""
  brain = image.window(hu, *image.WINDOWS["brain"])
  side = brain.shape[0]
  ramp = np.tile(np.linspace(0, 255, 300), (200, 1)).astype(np.uint8)
  yy, xx = np.mgrid[-100:100, -100:100]
  text = Image.new("L", (400, 300), 0)
  d = ImageDraw.Draw(text)
  for row in range(12):
    d.text((10, 10 + row * 24), "The quick brown fox jumps over the lazy dog " * 2, fill=255)
  ui = np.full((side + 60, side + 150), 45, np.uint8)  # a viewer: grey panels, a side bar
  ui[:, side + 40:] = 70
  ui[20:20 + side, 20:20 + side] = brain
  f = np.fft.fftfreq(256)
  k = np.hypot(*np.meshgrid(f, f))
  k[0, 0] = 1.0
  field = np.real(np.fft.ifft2(np.fft.fft2(np.random.default_rng(0).normal(size=(256, 256))) / k))
  texture = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)  # 1/f: natural
  ys, xs = np.nonzero(brain > 24)  # the head's extent: a tight crop cuts into it
  inset = (ys.max() - ys.min()) // 10
  tight = brain[ys.min() + inset:ys.max() - inset, xs.min() + inset:xs.max() - inset]
  return {
      "left-right gradient": (ramp, "edge is dark air"),
      "top-down gradient": (ramp.T.copy(), "edge is dark air"),
      "radial glow": (np.clip(255 - np.hypot(yy, xx) * 2.5, 0, 255).astype(np.uint8),
                      "white skull"),
      "bar chart": (_chart(), "dark"),
      "text on black": (np.asarray(text), "noise"),
      "text on white": (255 - np.asarray(text), "noise"),
      "viewer screenshot": (ui, "edge is dark air"),
      "natural texture": (texture, "dark"),
      "checkerboard": (((np.indices((256, 256)) // 32).sum(0) % 2 * 255).astype(np.uint8),
                       "scattered"),
      "inverted slice": (255 - brain, "edge is dark air"),
      "tight crop": (tight, "edge is dark air"),
  }


def side_by_side(hu: np.ndarray) -> np.ndarray:
  """Two brain-window copies of a slice side by side, as a viewer's 2-up export."""
  brain = image.window(hu, *image.WINDOWS["brain"])
  return np.concatenate([brain, brain], 1)


def _chart() -> np.ndarray:
  """A bar chart, black on white."""
  chart = Image.new("L", (400, 300), 255)
  d = ImageDraw.Draw(chart)
  d.line([(40, 260), (380, 260)], 0, 3)
  d.line([(40, 20), (40, 260)], 0, 3)
  for k, height in enumerate([80, 150, 60, 200, 120]):
    d.rectangle([60 + k * 60, 260 - height, 100 + k * 60, 260], fill=90)
  d.text((150, 10), "Chart title", fill=0)
  return np.asarray(chart)


def dark_chart() -> np.ndarray:
  """The bar chart on black: it passes the scope rules (air around, one part, bright around),
  so only the fitted picture statistics can tell it from a slice."""
  return 255 - _chart()
