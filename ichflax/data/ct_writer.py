"""Writes one CT slice as a DICOM file the way RSNA 2019 files store it (the phantom's files).

Synthetic identities only. Kept apart from `dicom`, which reads: reading is what serving and
training need; writing is for the phantom, the demo examples and tests.
"""

from __future__ import annotations

import os

import numpy as np
import pydicom
from pydicom import uid as dicom_uid
from pydicom.dataset import FileDataset, FileMetaDataset

from ichflax.data import image
from ichflax.data.items import SliceGeometry

# How `write_ct` stores HU, mirroring what RSNA 2019 files contain: signed int16 with intercept
# -1024 and -2000 padding outside the scan circle; unsigned 12-bit with intercept -1024; and
# the wrapped 12-bit quirk (intercept 0) that `dicom.read_hu` corrects.
ENCODINGS = ("int16", "uint12", "rsna_wrapped")


def _encode(hu: np.ndarray, encoding: str) -> tuple[np.ndarray, int, int, float]:
  """(stored pixels, BitsStored, PixelRepresentation, RescaleIntercept)."""
  hu = np.rint(hu).astype(np.int32)
  if encoding == "int16":
    return np.clip(hu + 1024, -2000, 32767).astype(np.int16), 16, 1, -1024.0
  if encoding == "uint12":
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16), 12, 0, -1024.0
  if encoding == "rsna_wrapped":
    return np.mod(np.clip(hu, -1000, 3095), 4096).astype(np.uint16), 12, 0, 0.0
  raise ValueError(f"unknown encoding {encoding!r}: choose one of {', '.join(ENCODINGS)}")


def _set_tags(ds: FileDataset, geometry: SliceGeometry, patient_id: str) -> None:
  ds.file_meta.MediaStorageSOPInstanceUID = geometry.sop_instance_uid
  ds.SOPInstanceUID = geometry.sop_instance_uid
  ds.PatientID = patient_id
  ds.StudyInstanceUID = geometry.study_instance_uid
  ds.SeriesInstanceUID = geometry.series_instance_uid


def write_ct(path: str | os.PathLike, hu: np.ndarray, geometry: SliceGeometry, *,
             patient_id: str, pixel_spacing: float = 0.45, encoding: str = "int16",
             photometric: str = "MONOCHROME2", padding: np.ndarray | None = None) -> None:
  """Write one axial CT slice with the tags RSNA 2019 files carry (synthetic identities only).

  `padding`: optional bool mask of pixels outside the scan circle, stored as raw -2000
  (int16 encoding only), as many real scanners do.
  """
  if photometric == "MONOCHROME1" and encoding == "rsna_wrapped":
    raise ValueError("the wrapped RSNA encoding is MONOCHROME2 only")
  stored, bits, signed, intercept = _encode(np.asarray(hu), encoding)
  if padding is not None and encoding == "int16":
    stored[padding] = -2000
  if photometric == "MONOCHROME1":
    stored = (stored.max() + stored.min() - stored.astype(np.int32)).astype(stored.dtype)
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = dicom_uid.CTImageStorage
  meta.TransferSyntaxUID = dicom_uid.ExplicitVRLittleEndian
  ds = FileDataset(os.fspath(path), {}, file_meta=meta, preamble=b"\0" * 128)
  ds.SOPClassUID = dicom_uid.CTImageStorage
  ds.Modality = "CT"
  ds.InstanceNumber = geometry.instance_number or 1
  ds.ImagePositionPatient = [-115.0, -115.0, geometry.position_z or 0.0]
  ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.Rows, ds.Columns = stored.shape
  ds.PixelSpacing = [pixel_spacing, pixel_spacing]
  ds.BitsAllocated = 16
  ds.BitsStored = bits
  ds.HighBit = bits - 1
  ds.PixelRepresentation = signed
  ds.WindowCenter, ds.WindowWidth = image.WINDOWS["brain"]
  ds.RescaleIntercept = intercept
  ds.RescaleSlope = 1.0
  ds.PixelData = stored.tobytes()
  # RSNA files use "ID_<hex>" in UID fields; pydicom would warn on each, readers accept them.
  with pydicom.config.disable_value_validation():
    _set_tags(ds, geometry, patient_id)
    ds.save_as(path, enforce_file_format=True)
