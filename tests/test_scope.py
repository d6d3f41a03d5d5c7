"""The scope check: head CT slices (vertex and skull base included) pass; MR, other body parts,
photos, strips, uniform and noise images are refused with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_predictor import write_dicom

from bench import pictures
from ichflax.data import image, inputs, phantom
from ichflax.trust import scope

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _series(rng, slices: int = 10, size: int = 128) -> list[np.ndarray]:
  """One phantom study from the very top slice to the very bottom one."""
  anatomy = phantom.Anatomy.sample(rng)
  return [phantom.make_slice(rng, size, phantom.sample_subtypes(rng), anatomy,
                             level=(i + 0.5) / slices).hu for i in range(slices)]


def test_phantom_series_top_to_bottom_pass(tmp_path):
  rng = np.random.default_rng(31)
  for study in range(3):
    for i, hu in enumerate(_series(rng)):
      s = inputs.load_slice(write_dicom(tmp_path / f"{study}_{i}.dcm", hu, i, 5.0 * i))
      assert s.geometry.modality == "CT"
      assert scope.check(s) is None, (study, i)


def test_pictures_of_ct_pass_grey_and_three_windows():
  hu = phantom.make_slice(np.random.default_rng(3), 128, (4,)).hu
  grey = image.window(hu, *image.WINDOWS["brain"])
  rgb = image.slice_to_uint8(hu, image.THREE_WINDOWS, 128)
  tinted = np.stack([grey, (grey * 0.8).astype(np.uint8), (grey * 0.6).astype(np.uint8)], -1)
  for picture in (grey, rgb, tinted):
    assert scope.check(inputs.load_slice(picture)) is None


@pytest.mark.parametrize("tags, expected", [
    ({"Modality": "MR"}, "Modality is MR"),
    ({"BodyPartExamined": "CHEST"}, "'CHEST', not the head"),
    ({"BodyPartExamined": "ABDOMEN"}, "not the head"),
])
def test_dicom_tags_out_of_scope(tmp_path, tags, expected):
  hu = phantom.make_slice(np.random.default_rng(5), 128).hu
  reason = scope.check(inputs.load_slice(write_dicom(tmp_path / "x.dcm", hu, **tags)))
  assert reason is not None and expected in reason


@pytest.mark.parametrize("part", ["HEAD", "BRAIN", "Head^Routine", "SKULL", "HEADNECK"])
def test_head_body_parts_pass(tmp_path, part):
  hu = phantom.make_slice(np.random.default_rng(5), 128).hu
  path = write_dicom(tmp_path / "x.dcm", hu, BodyPartExamined=part)
  assert scope.check(inputs.load_slice(path)) is None


def test_pydicom_mr_and_non_head_ct_out_of_scope():
  mr = scope.check(inputs.load_slice(PYDICOM_FILES / "MR_small.dcm"))
  assert "Modality is MR" in mr
  assert scope.check(inputs.load_slice(PYDICOM_FILES / "CT_small.dcm")) is not None


def _photo(side=200) -> np.ndarray:
  y, x = np.mgrid[0:side, 0:side]
  return (np.stack([x, y, (x + y) // 2], -1) % 256).astype(np.uint8)


@pytest.mark.parametrize("name, image, expected", [
    ("colour photo", _photo(), "in colour"),
    ("5000x8 strip", np.zeros((8, 5000), np.uint8), "aspect"),
    ("uniform", np.full((256, 256), 127, np.uint8), "uniform"),
    ("noise", np.random.default_rng(0).integers(0, 256, (256, 256)).astype(np.uint8), "noise"),
    ("HU noise", np.random.default_rng(0).uniform(-1024, 3000, (256, 256)).astype(np.float32),
     "noise"),
    ("constant HU", np.full((256, 256), 40.0, np.float32), "constant"),
    ("soft tissue, no air", phantom.make_slice(np.random.default_rng(2), 256).hu[64:192, 64:192],
     "air"),
    ("no skull", np.where(np.hypot(*np.mgrid[-1:1:128j, -1:1:128j]) < 0.8, 35.0,
                          -1000.0).astype(np.float32), "skull"),
])
def test_not_a_head_slice_out_of_scope(name, image, expected):
  reason = scope.check(inputs.load_slice(image, name))
  assert reason is not None and expected in reason, (name, reason)


@pytest.fixture(scope="module")
def anatomy_slices():
  return pictures.phantom_hu(seed=41, subjects=3, levels=6, size=192)


def test_pictures_of_phantom_slices_pass_in_any_window_size_or_compression(anatomy_slices):
  """Every export of fresh anatomy-phantom slices, skull base to near the vertex, is in scope."""
  for i, hu in enumerate(anatomy_slices):
    for name, picture in pictures.exports(hu).items():
      assert scope.check(inputs.load_slice(picture, name)) is None, (i, name)


def test_pictures_that_are_not_ct_slices_are_refused_with_why(anatomy_slices):
  for name, (picture, expected) in pictures.not_ct(anatomy_slices[8]).items():
    reason = scope.check(inputs.load_slice(picture, name))
    assert reason is not None and expected in reason, (name, reason)


def _research_export(path: Path, values: np.ndarray, modality: str = "OT",
                     bits: int = 16) -> Path:
  """A Secondary Capture as converters and teaching files write it: Modality OT, the values
  as they are (no rescale tags), no ImagePositionPatient."""
  meta = pydicom.dataset.FileMetaDataset()
  meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
  meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
  meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
  ds = pydicom.dataset.FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
  ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
  ds.StudyInstanceUID = ds.SeriesInstanceUID = pydicom.uid.generate_uid()
  ds.Modality, ds.InstanceNumber = modality, 3
  ds.Rows, ds.Columns = values.shape
  ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
  ds.BitsAllocated = ds.BitsStored = bits
  ds.HighBit, ds.PixelRepresentation = bits - 1, int(bits == 16)
  ds.PixelData = values.astype(np.int16 if bits == 16 else np.uint8).tobytes()
  ds.save_as(path, enforce_file_format=True)
  return path


def test_research_export_in_hu_is_read_as_ct_and_says_how(tmp_path):
  hu = np.rint(phantom.make_slice(np.random.default_rng(8), 128, (4,)).hu)
  s = inputs.load_slice(_research_export(tmp_path / "ot.dcm", hu))
  assert s.geometry.modality == "OT" and s.geometry.position_z is None
  np.testing.assert_array_equal(s.hu, np.maximum(hu, image.AIR_FILL_HU))  # values taken as HU
  assert scope.check(s) is None
  note = scope.note(s)
  assert note.startswith("Modality OT: read as CT in HU") and "InstanceNumber" in note
  ct = inputs.load_slice(write_dicom(tmp_path / "ct.dcm", hu, z=5.0))
  assert scope.note(ct) is None  # a CT file with a position needs no note


def test_mr_and_screenshots_filed_as_ot_are_still_refused(tmp_path):
  mr = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm").pixel_array  # MR values: no air at -1000
  for modality in ("OT", "SC"):
    reason = scope.check(inputs.load_slice(_research_export(tmp_path / "mr.dcm", mr, modality)))
    assert reason and f"Modality is {modality}" in reason and "do not read as CT" in reason
  hu = phantom.make_slice(np.random.default_rng(9), 128).hu
  shot = image.window(hu, *image.WINDOWS["brain"])  # an 8-bit screenshot of a slice
  reason = scope.check(inputs.load_slice(_research_export(tmp_path / "shot.dcm", shot, bits=8)))
  assert reason and "do not read as CT" in reason
  reason = scope.check(inputs.load_slice(_research_export(tmp_path / "xa.dcm", hu, "XA")))
  assert reason and "Modality is XA, not CT" in reason
