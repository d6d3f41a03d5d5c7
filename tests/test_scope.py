"""The scope check: head CT slices (vertex and skull base included) pass; MR, other body parts,
photos, strips, uniform and noise images are refused with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_predictor import write_dicom

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
