"""What every reader shares: a file in memory, a slice's place in its series, and the refusals.

Kept free of imports (no numpy, PIL, pydicom), so each reader (`dicom`, `nifti`, `inputs`,
`archives`, `sources`) can use it without importing another reader.
"""

from __future__ import annotations

import dataclasses


class InputError(ValueError):
  """An input that is not one readable CT slice; the message names it and says what to do.

  Every reader raises this (or a subclass), so a batch caller (builds, the CLI, the demo) catches
  one type, reports `source` and `reason` per item, and carries on.
  """

  def __init__(self, source: str, reason: str):
    super().__init__(f"{source}: {reason}")
    self.source = source
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Item:
  """One file (or zip member) held in memory; `name` is how messages name it."""

  name: str
  data: bytes


@dataclasses.dataclass(frozen=True)
class Problem:
  """A file that gave no slice: what it is and a reason that says what to do."""

  file: str
  reason: str

  def __str__(self) -> str:
    return f"{self.file}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
  """The non-identifying tags that order a slice within its series (no patient tags: only a
  digest of PatientID, `patient_key`, which keeps a patient's scans in one split).

  DICOM and NIfTI readers both produce it, and `sources` orders by it.
  """

  sop_instance_uid: str
  study_instance_uid: str
  series_instance_uid: str
  instance_number: int | None
  position_z: float | None  # ImagePositionPatient[2], mm
  # What was scanned, for the scope check (`ichflax.trust.scope`); None when the tag is absent.
  modality: str | None = None
  body_part: str | None = None
  # A one-way digest of PatientID (never the ID itself): builds split by patient with it.
  patient_key: str = ""
  # Along the slice normal (ImagePositionPatient . row x column direction), mm: the series order
  # a tilted gantry keeps; position_z where the orientation is not given.
  position: float | None = None

  def __post_init__(self):
    if self.position is None:
      object.__setattr__(self, "position", self.position_z)
