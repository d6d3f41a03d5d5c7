"""One CT slice from DICOM to Hounsfield units, and HU to the stored model image.

`slice_to_uint8` is the single place where HU become model pixels: the dataset builders and the
Predictor both call it, so inference can never disagree with training.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
import pydicom
from PIL import Image

from ichflax.data import filetypes

Source = str | os.PathLike | BinaryIO | bytes
Window = tuple[float, float]  # (center, width) in HU

AIR_HU = -1024.0
# Largest slice accepted (DICOM or image): 16.7 M pixels, far above a CT slice, well below a bomb.
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


class DicomError(ValueError):
  """A file that cannot be turned into one CT slice; the message names the file and why."""

  def __init__(self, source: str, reason: str):
    super().__init__(f"{source}: {reason}")
    self.source = source
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
  """The non-identifying tags that order a slice within its series (no patient tags)."""

  sop_instance_uid: str
  study_instance_uid: str
  series_instance_uid: str
  instance_number: int | None
  position_z: float | None  # ImagePositionPatient[2], mm
  # What was scanned, for the scope check (`ichflax.scope`); None when the tag is absent.
  modality: str | None = None
  body_part: str | None = None


def windows_for(n: int) -> tuple[Window, ...]:
  """3 -> (brain, subdural, bone) as RGB; 1 -> the seed-style single brain window."""
  if n == 3:
    return THREE_WINDOWS
  if n == 1:
    return ONE_WINDOW
  raise ValueError(f"windows must be 3 (brain, subdural, bone) or 1 (brain), got {n}")


def _name(source: Source) -> str:
  if isinstance(source, (str, os.PathLike)):
    return os.fspath(source)
  return getattr(source, "name", None) or "<uploaded file>"


def _read(source: Source, **kwargs) -> pydicom.FileDataset:
  """dcmread with every failure turned into a DicomError that says what the file is."""
  name = _name(source)
  try:
    if isinstance(source, (str, os.PathLike)):
      with open(source, "rb") as f:
        head = f.read(filetypes.HEAD_BYTES)
      fp = source
    else:  # bytes or a file object: always the whole file, whatever was read from it before
      if not isinstance(source, bytes):
        source.seek(0)
        source = source.read()
      head, fp = source[:filetypes.HEAD_BYTES], io.BytesIO(source)
  except FileNotFoundError:
    raise DicomError(name, "file not found") from None
  except OSError as e:
    raise DicomError(name, f"cannot open ({e.strerror or e})") from None
  signature = filetypes.match(head)
  if signature is not None and signature.kind != filetypes.DICOM:
    hint = (", or open the picture as a PNG/JPG image" if signature.kind in filetypes.PICTURES
            else "")
    raise DicomError(name, f"not a DICOM file: it is {signature.description}; give the original "
                     f".dcm slice{hint}")
  if not head:
    raise DicomError(name, "empty file (0 bytes)")
  try:
    # force=True also accepts the preamble-less DICOMs some exporters write; a non-DICOM file
    # then fails below for having no image.
    return pydicom.dcmread(fp, force=signature != filetypes.DICOM_PREAMBLE, **kwargs)
  except Exception as e:  # noqa: BLE001  (pydicom raises many types for damaged files)
    raise DicomError(name, f"not a readable DICOM file, possibly truncated ({e})") from None


def _geometry(ds: pydicom.Dataset) -> SliceGeometry:
  with pydicom.config.disable_value_validation():  # RSNA "ID_<hex>" UIDs are not DICOM UIDs
    pos = ds.get("ImagePositionPatient")
    num = ds.get("InstanceNumber")
    return SliceGeometry(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        instance_number=int(num) if num not in (None, "") else None,
        position_z=float(pos[2]) if pos is not None and len(pos) == 3 else None,
        modality=str(ds.get("Modality", "") or "").strip() or None,
        body_part=str(ds.get("BodyPartExamined", "") or "").strip() or None)


def _pixels(ds: pydicom.Dataset, name: str) -> np.ndarray:
  if "PixelData" not in ds:
    kind = ds.get("Modality", "") or ds.get("SOPClassUID", "unknown kind")
    raise DicomError(name, f"has no pixel data (a non-image DICOM object: {kind}); "
                     "a single CT image slice is needed")
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  if frames > 1:
    raise DicomError(name, f"is a multi-frame DICOM ({frames} frames); only single slices "
                     "are supported: export the series as one file per slice")
  if int(ds.get("SamplesPerPixel", 1)) != 1:
    raise DicomError(name, "is a colour image; a CT slice has one grayscale sample per pixel")
  rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
  if rows * cols > MAX_PIXELS:  # checked before decoding: a tiny compressed file can be huge
    raise DicomError(name, f"is {cols}x{rows} pixels, over the {MAX_PIXELS:,}-pixel limit for "
                     "one slice; a CT slice is usually 512x512")
  try:
    px = ds.pixel_array
  except Exception as e:  # noqa: BLE001  (each decoder plugin raises its own types)
    raise DicomError(name, f"pixel data cannot be decoded, possibly truncated ({e})") from None
  if px.ndim != 2 or min(px.shape) < 2:
    raise DicomError(name, f"pixel data has shape {px.shape}; expected one 2-D slice")
  return px


def read_hu(source: Source) -> np.ndarray:
  """float32 (H, W) Hounsfield units of a single-slice CT DICOM (path, file object or bytes)."""
  return read_slice(source)[0]


def read_slice(source: Source) -> tuple[np.ndarray, SliceGeometry]:
  """HU and ordering geometry from one read of the file (the dataset builders need both).

  Applies RescaleSlope/Intercept (absent: the values are taken as HU already), the RSNA 2019
  12-bit fix, MONOCHROME1 inversion, and maps padding (PixelPaddingValue, or anything below
  air such as the -2000 outside the scan circle) to air, -1024 HU.
  """
  name = _name(source)
  ds = _read(source)
  raw = _pixels(ds, name)
  try:  # damaged header values must be one clear error, not a crash mid-build
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    has_intercept = ds.get("RescaleIntercept") is not None
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    wrapped_12_bit = (int(ds.get("BitsStored", 16)) == 12 and has_intercept
                      and int(ds.get("PixelRepresentation", 0)) == 0 and intercept > -100)
    padding = ds.get("PixelPaddingValue")
    geometry = _geometry(ds)
  except (ValueError, TypeError, IndexError) as e:
    raise DicomError(name, f"has a malformed header value ({type(e).__name__}); re-export the "
                     "slice from the scanner or PACS") from None
  x = raw.astype(np.float32)
  if wrapped_12_bit:
    # Some RSNA 2019 slices store 12-bit values shifted by +1000 and wrapped modulo 4096 with an
    # intercept near 0; the RSNA community's fix undoes the wrap and uses intercept -1000.
    x = x + 1000
    x[x >= 4096] -= 4096
    intercept = -1000.0
  hu = x * slope + intercept
  padded = raw == padding if padding is not None else np.zeros(raw.shape, bool)
  if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1" and not padded.all():
    # MONOCHROME1 shows low values bright: mirror within the slice's range so bright = dense
    # (padding excluded, or it would shift the mirror point).
    tissue = hu[~padded]
    hu = tissue.max() + tissue.min() - hu
  hu[padded] = AIR_HU
  return np.maximum(hu, AIR_HU).astype(np.float32), geometry


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
  hu = pad_to_square(hu, AIR_HU)
  if hu.shape[0] != size:
    hu = np.asarray(Image.fromarray(hu).resize((size, size), RESAMPLE))
  return np.stack([window(hu, c, wd) for c, wd in windows], axis=-1)
