"""One source file -> one cached model image (PNG): the unit of parallel, resumable builds.

The file is read by `ichflax.data.inputs`, the Predictor's own path, so a built dataset holds
exactly the model image serving would make, and a file serving refuses is skipped with the same
reason. A module of its own, free of TFDS and JAX imports, so that spawned workers start fast.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from ichflax.data import image, inputs
from ichflax.data.items import InputError

# How each kind of build reads its files: the routes `inputs.load_slice` dispatches to.
_ROUTES = {"dicom": inputs.dicom_slice, "image": inputs.picture_slice}


@dataclasses.dataclass(frozen=True)
class Job:
  """Convert `source` (a DICOM, or a PNG/JPG for the paper's folders) into `target`."""

  source: str
  target: str
  kind: str  # "dicom" | "image"
  size: int
  windows: tuple[image.Window, ...]
  jpeg_quality: int | None = None  # stored after a JPEG round trip at this quality


@dataclasses.dataclass(frozen=True)
class Result:
  target: str
  study_id: str = ""
  patient_key: str = ""  # `dicom.patient_key`: a digest, never the PatientID
  error: str | None = None  # why the file was skipped


def run(job: Job) -> Result:
  """Convert one file unless its cached image exists; never raises for a bad file."""
  if os.path.exists(job.target):
    with Image.open(job.target) as im:
      return Result(job.target, im.text.get("study_id", ""), im.text.get("patient_key", ""))
  try:
    s = _ROUTES[job.kind](job.source, windows=job.windows, stored_size=job.size)
  except InputError as e:
    return Result(job.target, error=e.reason)
  except Exception as e:  # noqa: BLE001  (one odd file must not end a build)
    return Result(job.target, error=f"unexpected {type(e).__name__} while reading ({e})")
  study = s.geometry.study_instance_uid if s.geometry else ""
  patient = s.geometry.patient_key if s.geometry else ""
  info = PngImagePlugin.PngInfo()
  info.add_text("study_id", study)
  info.add_text("patient_key", patient)
  tmp = Path(job.target).with_suffix(f".{os.getpid()}.tmp")
  model = s.model_image
  if job.jpeg_quality:
    model = _jpeg_round_trip(model, job.jpeg_quality)
  # Level 1: a quarter of the default's encode time for ~7% more bytes (noisy CT compresses
  # poorly at any level); these bytes go into the TFDS records as they are.
  Image.fromarray(model.squeeze(-1) if model.shape[-1] == 1 else model).save(
      tmp, format="PNG", pnginfo=info, compress_level=1)
  os.replace(tmp, job.target)  # atomic: an interrupted build never leaves half a PNG
  return Result(job.target, study, patient)


def _jpeg_round_trip(model: np.ndarray, quality: int) -> np.ndarray:
  """(S, S, C) uint8 as a JPEG export at `quality` would give it back (blocks, ringing)."""
  buf = io.BytesIO()
  Image.fromarray(model.squeeze(-1) if model.shape[-1] == 1 else model).save(
      buf, format="JPEG", quality=quality)
  with Image.open(buf) as im:
    return np.asarray(im).reshape(model.shape)
