"""One source file -> one cached model image (PNG): the unit of parallel, resumable builds.

A module of its own, free of TFDS and JAX imports, so that spawned worker processes start fast.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from ichflax.data import dicom


@dataclasses.dataclass(frozen=True)
class Job:
  """Convert `source` (a DICOM, or a PNG/JPG for the seed's folders) into `target`."""

  source: str
  target: str
  kind: str  # "dicom" | "image"
  size: int
  windows: tuple[dicom.Window, ...]


@dataclasses.dataclass(frozen=True)
class Result:
  target: str
  study_id: str = ""
  error: str | None = None  # why the file was skipped


def _image_to_uint8(path: str, channels: int, size: int) -> np.ndarray:
  """An already windowed 8-bit picture (the seed's PNGs): grey or RGB, resized like DICOMs."""
  with Image.open(path) as im:
    im = im.convert("L" if channels == 1 else "RGB")
    w, h = im.size
    if w != h:  # pad to a centred square with black, as slice_to_uint8 pads with air
      square = Image.new(im.mode, (max(w, h),) * 2)
      square.paste(im, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
      im = square
    return np.asarray(im.resize((size, size), dicom.RESAMPLE)).reshape(size, size, channels)


def run(job: Job) -> Result:
  """Convert one file unless its cached image exists; never raises for a bad file."""
  if os.path.exists(job.target):
    with Image.open(job.target) as im:
      return Result(job.target, im.text.get("study_id", ""))
  study = ""
  try:
    if job.kind == "dicom":
      hu, geometry = dicom.read_slice(job.source)
      image = dicom.slice_to_uint8(hu, job.windows, job.size)
      study = geometry.study_instance_uid
    else:
      image = _image_to_uint8(job.source, len(job.windows), job.size)
  except dicom.DicomError as e:
    return Result(job.target, error=e.reason)
  except FileNotFoundError:
    return Result(job.target, error="file not found")
  except (OSError, UnidentifiedImageError, ValueError) as e:
    return Result(job.target, error=f"cannot read as an image ({e})")
  except Exception as e:  # pylint: disable=broad-except  (one odd file must not end a build)
    return Result(job.target, error=f"unexpected {type(e).__name__} while reading ({e})")
  info = PngImagePlugin.PngInfo()
  info.add_text("study_id", study)
  tmp = Path(job.target).with_suffix(f".{os.getpid()}.tmp")
  # Level 1: a quarter of the default's encode time for ~7% more bytes (noisy CT compresses
  # poorly at any level); these bytes go into the TFDS records as they are.
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
      tmp, format="PNG", pnginfo=info, compress_level=1)
  os.replace(tmp, job.target)  # atomic: an interrupted build never leaves half a PNG
  return Result(job.target, study)
