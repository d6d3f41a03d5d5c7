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
  # The slice's place in its series (`items.SliceGeometry`): series order for 2.5D and
  # sequence models. NaN / -1 where the file does not say.
  series_id: str = ""
  position: float = float("nan")  # along the slice normal, mm
  instance: int = -1


# Kept in each cached PNG's text chunks, so a resumed build reads them without the source.
_TEXT = ("study_id", "patient_key", "series_id", "position", "instance")


def _cached(target: str) -> Result | None:
  """The result of an earlier conversion, or None if there is none (or it predates series
  order: then the file is converted again)."""
  if not os.path.exists(target):
    return None
  with Image.open(target) as im:
    text = dict(im.text)
  if not set(_TEXT) <= text.keys():
    return None
  return Result(target, text["study_id"], text["patient_key"], series_id=text["series_id"],
                position=float(text["position"]), instance=int(text["instance"]))


def run(job: Job) -> Result:
  """Convert one file unless its cached image exists; never raises for a bad file."""
  cached = _cached(job.target)
  if cached is not None:
    return cached
  try:
    s = _ROUTES[job.kind](job.source, windows=job.windows, stored_size=job.size)
  except InputError as e:
    return Result(job.target, error=e.reason)
  except Exception as e:  # noqa: BLE001  (one odd file must not end a build)
    return Result(job.target, error=f"unexpected {type(e).__name__} while reading ({e})")
  g = s.geometry
  result = Result(job.target, g.study_instance_uid, g.patient_key, series_id=g.series_instance_uid,
                  position=float("nan") if g.position is None else g.position,
                  instance=-1 if g.instance_number is None else g.instance_number) if g else (
      Result(job.target))
  info = PngImagePlugin.PngInfo()
  for key in _TEXT:
    info.add_text(key, str(getattr(result, key)))
  tmp = Path(job.target).with_suffix(f".{os.getpid()}.tmp")
  model = s.model_image
  if job.jpeg_quality:
    model = _jpeg_round_trip(model, job.jpeg_quality)
  # Level 1: a quarter of the default's encode time for ~7% more bytes (noisy CT compresses
  # poorly at any level); these bytes go into the TFDS records as they are.
  Image.fromarray(model.squeeze(-1) if model.shape[-1] == 1 else model).save(
      tmp, format="PNG", pnginfo=info, compress_level=1)
  os.replace(tmp, job.target)  # atomic: an interrupted build never leaves half a PNG
  return result


def _jpeg_round_trip(model: np.ndarray, quality: int) -> np.ndarray:
  """(S, S, C) uint8 as a JPEG export at `quality` would give it back (blocks, ringing)."""
  buf = io.BytesIO()
  Image.fromarray(model.squeeze(-1) if model.shape[-1] == 1 else model).save(
      buf, format="JPEG", quality=quality)
  with Image.open(buf) as im:
    return np.asarray(im).reshape(model.shape)
