"""One CT slice (or a multi-frame series) from DICOM to Hounsfield units with its geometry.

Decoding only: HU become model pixels in `ichflax.data.image`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np
import pydicom
from PIL import Image
from pydicom import uid
from pydicom.pixels import get_decoder, pixel_array

from ichflax.data import filetypes, image
from ichflax.data.items import InputError, SliceGeometry

Source = str | os.PathLike | BinaryIO | bytes
# The pip packages behind each pydicom decoding plugin (all in requirements.txt).
_PLUGIN_PACKAGES = {"gdcm": "python-gdcm", "pylibjpeg": "pylibjpeg, pylibjpeg-libjpeg, "
                    "pylibjpeg-openjpeg, pylibjpeg-rle", "pyjpegls": "pyjpegls"}
# Tags without which pixel data has no defined layout.
_PIXEL_TAGS = ("Rows", "Columns", "BitsAllocated")


class DicomError(InputError):
  """A DICOM file that cannot be turned into CT slices; the message names the file and why."""


def quiet_pydicom() -> None:
  """pydicom's validation warnings quote tag values (a patient's name, a date): never log them.

  Its decoders also log each failed plugin with a traceback; ichflax reports the file in its
  own words instead. Process-wide, so the entry points (app.py, the predict CLI) call it.
  """
  pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
  logging.getLogger("pydicom").setLevel(logging.CRITICAL)
  warnings.filterwarnings("ignore", module="pydicom")


def _name(source: Source) -> str:
  if isinstance(source, (str, os.PathLike)):
    return os.fspath(source)
  return getattr(source, "name", None) or "<uploaded file>"


def _read(source: Source) -> pydicom.FileDataset:
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
    return pydicom.dcmread(fp, force=signature != filetypes.DICOM_PREAMBLE)
  except Exception:  # noqa: BLE001  (pydicom raises many types for damaged files)
    raise DicomError(name, "not a readable DICOM file: its header is damaged or truncated; copy "
                     "or export it again") from None


def header(ds: pydicom.Dataset, keyword: str, convert: Callable[[Any], Any], default: Any, *,
           name: str) -> Any:
  """One header value, converted; `default` when absent or empty.

  Every value ichflax reads from a DICOM header goes through here, so a damaged value ("1A" in
  an integer field, a short position) refuses that one file with a clear reason instead of
  escaping as an exception that stops a batch.
  """
  try:
    value = ds.get(keyword)
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
      return default
    return convert(value)
  except Exception:  # noqa: BLE001  (pydicom converts lazily: any type can surface here)
    raise DicomError(name, f"has a malformed {keyword} value in its header; re-export it from "
                     "the scanner or PACS") from None


def patient_key(patient_id: str) -> str:
  """A short one-way digest of a PatientID ("" for none): equal for one patient's files, so a
  build can split by patient, and never the ID itself (nothing shows or stores that)."""
  if not patient_id.strip():
    return ""
  return hashlib.sha256(f"ichflax-patient:{patient_id.strip()}".encode()).hexdigest()[:16]


def is_dicomdir(ds: pydicom.Dataset) -> bool:
  """A DICOMDIR: the index of a DICOM export (media), listing the image files beside it."""
  meta = getattr(ds, "file_meta", None) or {}
  return (meta.get("MediaStorageSOPClassUID") == uid.MediaStorageDirectoryStorage
          or "DirectoryRecordSequence" in ds)


def _position(value) -> tuple[float, float, float]:
  x, y, z = (float(v) for v in value)
  return x, y, z


def _normal(value) -> tuple[float, float, float] | None:
  """The slice normal of an ImageOrientationPatient (row x column direction), None if degenerate.

  Plain floats, not numpy: with two small numpy arrays per file here, the page's burst of four
  120-slice uploads (tests/test_held.py) grew RSS by 207-215 MB instead of staying under the
  180 MB its held views allow (the small buffers likely pin freed heap glibc could return).
  """
  r0, r1, r2, c0, c1, c2 = (float(v) for v in value)
  n = (r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0)
  length = math.sqrt(sum(x * x for x in n))
  return tuple(x / length for x in n) if length > 1e-6 else None


def _group_item(ds: pydicom.Dataset, index: int, sequence: str, name: str) -> pydicom.Dataset:
  """The functional-group item `sequence` of frame `index` (Enhanced CT): per frame, then shared.

  Classic images carry the same attributes at the top level, so the dataset itself is the
  fallback.
  """
  for groups, i in (("PerFrameFunctionalGroupsSequence", index),
                    ("SharedFunctionalGroupsSequence", 0)):
    items = header(ds, groups, list, [], name=name)
    if i < len(items):
      inner = header(items[i], sequence, list, [], name=name)
      if inner:
        return inner[0]
  return ds


def _decoder_problem(ds: pydicom.Dataset) -> str | None:
  """Why this file's pixel data cannot be decoded here, before trying; None when it can."""
  ts = (getattr(ds, "file_meta", None) or {}).get("TransferSyntaxUID")
  if not ts:
    return ("does not say how its pixel data is encoded (no Transfer Syntax UID in its file "
            "meta); export it again from the scanner or PACS")
  ts = uid.UID(str(ts))
  try:
    decoder = get_decoder(ts)
  except (NotImplementedError, ValueError):
    return (f"uses transfer syntax {ts.name} ({ts}), which ichflax has no decoder for; export "
            "the series uncompressed, or as JPEG Lossless or JPEG 2000")
  if not decoder.is_available:
    plugins = sorted({m.split(" - ")[0].strip() for m in decoder.missing_dependencies})
    packages = ", ".join(_PLUGIN_PACKAGES.get(p, p) for p in plugins)
    return (f"is compressed as {ts.name} and no decoder for it is installed; install ichflax's "
            f"requirements (`pip install -r requirements.txt`: {packages})")
  return None


class ImageFile:
  """One DICOM image object, read once: its HU decoded frame by frame, on demand.

  A multi-frame object (NumberOfFrames > 1: classic multi-frame or Enhanced CT, whose per-frame
  functional groups carry each frame's position and rescale) is a series in one file; decoding
  one frame at a time keeps memory at one slice whatever the frame count.
  """

  def __init__(self, ds: pydicom.Dataset, name: str):
    self.ds, self.name = ds, name
    if is_dicomdir(ds):
      raise DicomError(name, "is a DICOMDIR (the index of a DICOM export), not an image; skipped: "
                       "give its whole folder, and the images beside it are read")
    if "PixelData" not in ds:
      kind = header(ds, "Modality", str, "", name=name) or "unknown kind"
      raise DicomError(name, f"has no pixel data (a non-image DICOM object: {kind}); skipped: "
                       "give the CT images of the series")
    self.frames = header(ds, "NumberOfFrames", int, 1, name=name)
    if self.frames < 1:
      raise DicomError(name, f"declares {self.frames} frames; re-export it from the scanner or "
                       "PACS")
    if header(ds, "SamplesPerPixel", int, 1, name=name) != 1:
      raise DicomError(name, "is a colour image (a screenshot or secondary capture?); give the CT "
                       "images themselves, one grayscale sample per pixel")
    layout = {keyword: header(ds, keyword, int, None, name=name) for keyword in _PIXEL_TAGS}
    for keyword, value in layout.items():
      if value is None:
        raise DicomError(name, f"lacks {keyword}, which its pixel data needs; export it again "
                         "from the scanner or PACS")
    rows, cols = layout["Rows"], layout["Columns"]
    if rows * cols > image.MAX_PIXELS:  # checked before decoding: a small file can be huge
      raise DicomError(name, f"is {cols}x{rows} pixels, over the {image.MAX_PIXELS:,}-pixel limit "
                       "for one slice; a CT slice is usually 512x512")
    problem = _decoder_problem(ds)
    if problem:
      raise DicomError(name, problem)
    self._bits_stored = header(ds, "BitsStored", int, 16, name=name)
    self._signed = header(ds, "PixelRepresentation", int, 0, name=name)
    self._padding = header(ds, "PixelPaddingValue", int, None, name=name)
    self._monochrome1 = header(ds, "PhotometricInterpretation", str, "",
                               name=name).strip() == "MONOCHROME1"
    with pydicom.config.disable_value_validation():  # RSNA "ID_<hex>" UIDs are not DICOM UIDs
      self._uids = tuple(header(ds, k, str, "", name=name) for k in (
          "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))
    self._patient_key = patient_key(header(ds, "PatientID", str, "", name=name))
    # What was scanned, for the scope check; None when a tag is absent or empty.
    self._scanned = tuple(header(ds, k, str, "", name=name).strip() or None
                          for k in ("Modality", "BodyPartExamined"))
    orient = _group_item(ds, 0, "PlaneOrientationSequence", name)
    self._normal = header(orient, "ImageOrientationPatient", _normal, None, name=name)
    self.geometries = tuple(self._geometry(i) for i in range(self.frames))

  def _geometry(self, index: int) -> SliceGeometry:
    ds, name = self.ds, self.name
    plane = _group_item(ds, index, "PlanePositionSequence", name)
    pos = header(plane, "ImagePositionPatient", _position, None, name=name)
    z = pos and pos[2]
    along = (None if pos is None or self._normal is None
             else sum(p * n for p, n in zip(pos, self._normal)))
    if self.frames > 1 and plane is ds and z is not None:  # classic multi-frame: one position
      step = header(ds, "SpacingBetweenSlices", float, None, name=name)
      z = None if step is None else z + index * step
      along = None if step is None or along is None else along + index * step
    number = (header(ds, "InstanceNumber", int, None, name=name) if self.frames == 1
              else index + 1)
    return SliceGeometry(*self._uids, number, z, *self._scanned, patient_key=self._patient_key,
                         position=along)

  def _rescale(self, index: int) -> tuple[float, float, bool]:
    """(slope, intercept, whether an intercept was given) for one frame."""
    item = _group_item(self.ds, index, "PixelValueTransformationSequence", self.name)
    slope = header(item, "RescaleSlope", float, 1.0, name=self.name) or 1.0
    intercept = header(item, "RescaleIntercept", float, None, name=self.name)
    return slope, intercept or 0.0, intercept is not None

  def hu(self, index: int = 0) -> np.ndarray:
    """float32 (H, W) Hounsfield units of one frame.

    Applies RescaleSlope/Intercept (absent: the values are taken as HU already), the RSNA 2019
    12-bit fix, MONOCHROME1 inversion, and maps padding (PixelPaddingValue, or anything below
    air such as the -2000 outside the scan circle) to air, -1024 HU.
    """
    raw = self._decode(index)
    slope, intercept, has_intercept = self._rescale(index)
    x = raw.astype(np.float32)
    if self._bits_stored == 12 and has_intercept and self._signed == 0 and intercept > -100:
      # Some RSNA 2019 slices store 12-bit values shifted by +1000 and wrapped modulo 4096 with
      # an intercept near 0; the RSNA community's fix undoes the wrap and uses intercept -1000.
      x = x + 1000
      x[x >= 4096] -= 4096
      intercept = -1000.0
    hu = x * slope + intercept
    padded = raw == self._padding  # all False without a PixelPaddingValue (None)
    if self._monochrome1 and not padded.all():
      # MONOCHROME1 shows low values bright: mirror within the slice's range so bright = dense
      # (padding excluded, or it would shift the mirror point).
      tissue = hu[~padded]
      hu = tissue.max() + tissue.min() - hu
    hu[padded] = image.AIR_FILL_HU
    return np.maximum(hu, image.AIR_FILL_HU).astype(np.float32)

  def _decode(self, index: int) -> np.ndarray:
    ts = uid.UID(str(self.ds.file_meta.TransferSyntaxUID))
    try:
      px = pixel_array(self.ds, index=index)
    except Exception as e:  # noqa: BLE001  (each decoder plugin raises its own types)
      if isinstance(e, Image.DecompressionBombError) or "decompression bomb" in str(e).lower():
        raise DicomError(self.name, f"its {ts.name} pixel data declares an image far larger than "
                         "its Rows x Columns (a decompression-bomb guard stopped it); export the "
                         "slice again") from None
      raise DicomError(self.name, f"its {ts.name} pixel data cannot be decoded: the file is "
                       "damaged or truncated; copy or export it again") from None
    if px.ndim != 2 or min(px.shape) < 2:
      raise DicomError(self.name, f"pixel data has shape {px.shape}, not one 2-D slice per frame; "
                       "export the series again from the scanner or PACS")
    return px


def open_image(source: Source) -> ImageFile:
  """A DICOM image object (one slice or many frames) checked and ready to decode frame by frame."""
  return ImageFile(_read(source), _name(source))


def read_hu(source: Source) -> np.ndarray:
  """float32 (H, W) Hounsfield units of a single-slice CT DICOM (path, file object or bytes)."""
  return read_slice(source)[0]


def read_slice(source: Source) -> tuple[np.ndarray, SliceGeometry]:
  """HU and ordering geometry of a single-slice DICOM from one read (see `ImageFile.hu`).

  A multi-frame object is a whole series: `ichflax.data.sources` reads it frame by frame.
  """
  dicom_file = open_image(source)
  if dicom_file.frames > 1:
    raise DicomError(dicom_file.name, f"is a multi-frame DICOM ({dicom_file.frames} frames, a "
                     "series in one file); read it as a series: `python -m ichflax.predict FILE` "
                     "or the app")
  return dicom_file.hu(0), dicom_file.geometries[0]

