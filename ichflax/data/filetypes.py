"""What kind of file some bytes are: the one signature table every reader consults.

The content decides, never the file name: a PNG renamed `.dcm` is a PNG. Kept free of heavy
imports (no PIL, pydicom), so the upload code can ask before anything is decoded.
"""

from __future__ import annotations

import dataclasses

PNG, JPEG, GIF, ZIP, DICOM = "png", "jpeg", "gif", "zip", "dicom"
NIFTI, GZIP = "nifti", "gzip"  # a gzip may hold a NIfTI volume (.nii.gz): `volumes` looks inside
# The 8-bit pictures a CT slice may come as (a GIF is a picture, but not one we read).
PICTURES = (PNG, JPEG)


@dataclasses.dataclass(frozen=True)
class Signature:
  """`magic` found at byte `offset` means a file of `kind`; `description` names it for people."""

  kind: str
  offset: int
  magic: bytes
  description: str


# A standard DICOM file: a 128-byte preamble, then "DICM".
DICOM_PREAMBLE = Signature(DICOM, 128, b"DICM", "a DICOM file")
# First match wins.
SIGNATURES = (
    Signature(PNG, 0, b"\x89PNG", "a PNG image"),
    Signature(JPEG, 0, b"\xff\xd8\xff", "a JPEG image"),
    Signature(GIF, 0, b"GIF8", "a GIF image"),
    Signature(ZIP, 0, b"PK\x03\x04", "a zip archive"),
    Signature(GZIP, 0, b"\x1f\x8b", "a gzip file"),
    DICOM_PREAMBLE,
    Signature(NIFTI, 344, b"n+1\0", "a NIfTI-1 volume"),
    Signature(NIFTI, 4, b"n+2\0", "a NIfTI-2 volume"),
    # A DICOM without the 128-byte preamble starts with its first tag: group 0002 or 0008, little
    # endian. Anything else with no "DICM" marker is not DICOM, whatever pydicom's force mode reads.
    Signature(DICOM, 0, b"\x02\x00", "a DICOM file"),
    Signature(DICOM, 0, b"\x08\x00", "a DICOM file"),
)
# Bytes to read from a file before `sniff` can tell every kind above.
HEAD_BYTES = max(s.offset + len(s.magic) for s in SIGNATURES)


def match(data: bytes) -> Signature | None:
  """The first signature the bytes (or the file's first HEAD_BYTES) carry, None if none."""
  return next((s for s in SIGNATURES if data[s.offset:s.offset + len(s.magic)] == s.magic), None)


def sniff(data: bytes) -> str | None:
  """The kind of file (PNG, JPEG, GIF, ZIP, GZIP, NIFTI, DICOM), or None for anything else."""
  signature = match(data)
  return signature and signature.kind

