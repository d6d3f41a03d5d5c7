"""HU or an 8-bit picture -> the stored model image: pure numpy and PIL, no file formats.

`slice_to_uint8` is the single place where HU become model pixels and `picture_to_model` the
one for an already-windowed picture: the dataset builders and the Predictor both call them, so
inference can never disagree with training. The readers (`dicom`, `nifti`) only decode to HU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

Window = tuple[float, float]  # (center, width) in HU

# What padding and anything below air become: air, the lowest HU a CT stores.
AIR_FILL_HU = -1024.0
# Largest slice accepted (DICOM, NIfTI or image): 16.7 M pixels, far above a CT slice, well below
# a bomb.
MAX_PIXELS = 4096 * 4096
WINDOWS: dict[str, Window] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "bone": (600.0, 2800.0),
}
# Default model input: one window per RGB channel. The seed used one grayscale window; we
# document brain 40/80 as that single window (`windows_for(1)`).
THREE_WINDOWS: tuple[Window, ...] = (WINDOWS["brain"], WINDOWS["subdural"], WINDOWS["bone"])
ONE_WINDOW: tuple[Window, ...] = (WINDOWS["brain"],)
# PIL's bilinear filter widens its support when shrinking, so downsizing is antialiased.
RESAMPLE = Image.Resampling.BILINEAR


# How many of those windows a dataset stores, in words: the training config and `data build`
# offer the same choice.
INPUT_MODES = ("windows", "grey")


def channels_for(input_mode: str) -> int:
  """windows -> 3 (brain, subdural, bone as RGB); grey -> 1 (the brain window)."""
  return 1 if input_mode == "grey" else 3


def windows_for(n: int) -> tuple[Window, ...]:
  """3 -> (brain, subdural, bone) as RGB; 1 -> the seed-style single brain window."""
  if n == 3:
    return THREE_WINDOWS
  if n == 1:
    return ONE_WINDOW
  raise ValueError(f"windows must be 3 (brain, subdural, bone) or 1 (brain), got {n}")


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
  """uint8 image of one display window: center - width/2 -> 0, center + width/2 -> 255."""
  if width <= 0:
    raise ValueError(f"window width must be positive, got {width}")
  low = center - width / 2
  scaled = (np.asarray(hu, np.float32) - low) * (255.0 / width)
  return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def pad_to_square(image: np.ndarray, fill: float) -> np.ndarray:
  """(H, W, ...) centred in a square of side max(H, W), the border set to `fill` (air)."""
  h, w = image.shape[:2]
  if h == w:
    return image
  side = max(h, w)
  out = np.full((side, side) + image.shape[2:], fill, image.dtype)
  top, left = (side - h) // 2, (side - w) // 2
  out[top:top + h, left:left + w] = image
  return out


def unpad(square: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """The inverse of `pad_to_square`: the centred (H, W) region of a square map."""
  h, w = shape
  side = square.shape[0]
  top, left = (side - h) // 2, (side - w) // 2
  return square[top:top + h, left:left + w]


def slice_to_uint8(hu: np.ndarray, windows: Sequence[Window] = THREE_WINDOWS,
                   size: int = 256) -> np.ndarray:
  """uint8 (size, size, len(windows)): pad to square with air, resize HU (bilinear), window.

  Resizing HU before windowing keeps edges of each window sharp and costs one resize only.
  """
  hu = np.asarray(hu, np.float32)
  if hu.ndim != 2:
    raise ValueError(f"expected one 2-D slice of HU, got shape {hu.shape}")
  if not windows:
    raise ValueError("give at least one (center, width) window")
  hu = pad_to_square(hu, AIR_FILL_HU)
  if hu.shape[0] != size:
    hu = np.asarray(Image.fromarray(hu).resize((size, size), RESAMPLE))
  return np.stack([window(hu, c, wd) for c, wd in windows], axis=-1)


def picture_to_model(picture: np.ndarray, windows: Sequence[Window], size: int) -> np.ndarray:
  """uint8 (size, size, C) from an 8-bit picture, which is taken as already windowed.

  Pad to a centred square with black (as HU are padded with air), then grey for one window or
  RGB for three (grey is repeated; a colour picture becomes grey by PIL's luma), then PIL
  bilinear to `size`. Padding first and converting after gives the same pixels either way.
  """
  pil = Image.fromarray(pad_to_square(picture, 0))
  pil = pil.convert("L" if len(windows) == 1 else "RGB")
  pil = pil.resize((size, size), RESAMPLE)
  return np.asarray(pil).reshape(size, size, -1)
