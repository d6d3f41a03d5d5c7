"""The one reader: folders, zips, multi-frame DICOM, NIfTI; series order; batches; problems.

Also the fixtures other modules reuse (a phantom series as DICOM files, as an Enhanced CT
multi-frame and as NIfTI in any axis order), all written for real with pydicom and nibabel.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset
from test_predictor import bad_files, shared, write_dicom  # noqa: F401

from ichflax.data import items, phantom, sources
from ichflax.data.items import Item
from ichflax.serving import predictor as predictor_lib

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "multilabel"
ZS = (-10.0, -5.0, 0.0, 5.0)  # mm, inferior to superior
SPACING = (5.0, 0.45, 0.45)  # (z, row, column) mm: what ct_writer writes


def phantom_volume(size: int = 64, n: int = len(ZS), seed: int = 5) -> np.ndarray:
  """float32 (z, rows, cols) integer HU as a DICOM viewer shows each slice."""
  rng = np.random.default_rng(seed)
  return np.stack([np.rint(phantom.make_slice(rng, size, (4,)).hu) for _ in range(n)])


def write_series(folder: Path, volume: np.ndarray, zs=ZS) -> Path:
  folder.mkdir(parents=True, exist_ok=True)
  order = np.random.default_rng(0).permutation(len(zs))  # file names do not give the order
  for i in order:
    write_dicom(folder / f"slice_{order[i]:02d}.dcm", volume[i], i, zs[i])
  return folder


STORED_ORDER = [2, 0, 3, 1]  # enhanced_ct's frame i holds slice STORED_ORDER[i]


def _rescale_item(slope: float, intercept: float) -> Dataset:
  transform = Dataset()
  transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = (slope, intercept,
                                                                               "HU")
  return transform


def enhanced_ct(path: Path, volume: np.ndarray, zs=ZS, shared_rescale: float | None = None
                ) -> Path:
  """An Enhanced CT multi-frame: frames stored out of order, position and rescale per frame.

  With `shared_rescale` (an intercept), the rescale is one item of the Shared Functional Groups
  instead, as many scanners write it: slope 2, so both the slope and the intercept must come
  from there.
  """
  base = pydicom.dcmread(write_dicom(path, volume[0]))
  frames, per_frame = [], []
  for i in STORED_ORDER[:len(zs)]:
    item = Dataset()
    item.PlanePositionSequence = [Dataset()]
    item.PlanePositionSequence[0].ImagePositionPatient = [-115.0, -115.0, zs[i]]
    if shared_rescale is None:
      intercept = -1024.0 - 10 * i  # a different rescale per frame: applied per frame or wrong
      frames.append((volume[i] - intercept).astype(np.int16))
      item.PixelValueTransformationSequence = [_rescale_item(1, intercept)]
    else:
      assert not np.any((volume[i] - shared_rescale) % 2), "slope 2: give even HU"
      frames.append(((volume[i] - shared_rescale) / 2).astype(np.int16))
    per_frame.append(item)
  for tag in ("RescaleSlope", "RescaleIntercept", "ImagePositionPatient", "InstanceNumber"):
    delattr(base, tag)
  base.SOPClassUID = base.file_meta.MediaStorageSOPClassUID = uid.EnhancedCTImageStorage
  base.NumberOfFrames = len(frames)
  base.PerFrameFunctionalGroupsSequence = per_frame
  shared = Dataset()
  shared.PlaneOrientationSequence = [Dataset()]
  shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
  if shared_rescale is not None:
    shared.PixelValueTransformationSequence = [_rescale_item(2, shared_rescale)]
  base.SharedFunctionalGroupsSequence = [shared]
  base.PixelData = np.stack(frames).tobytes()
  with pydicom.config.disable_value_validation():
    base.save_as(path, enforce_file_format=True)
  return path


def classic_multiframe(path: Path, volume: np.ndarray, z0: float = ZS[0],
                       step: float = SPACING[0]) -> Path:
  """A classic multi-frame CT: one position, one rescale, frames SpacingBetweenSlices apart."""
  ds = pydicom.dcmread(write_dicom(path, volume[0], z=z0))
  ds.NumberOfFrames = len(volume)
  ds.SpacingBetweenSlices = step
  ds.PixelData = (volume + 1024).astype(np.int16).tobytes()
  with pydicom.config.disable_value_validation():
    ds.save_as(path)
  return path


def write_nifti(path: Path, volume: np.ndarray, perm=(0, 1, 2), flips=(), zs=ZS,
                values=None) -> Path:
  """`volume` (z, rows, cols as viewed) as NIfTI, its voxel axes permuted and flipped at will.

  The RAS+ array has i = toward the patient's right (columns reversed), j = anterior (rows
  reversed), k = superior; each permutation or flip changes the affine to match, so every
  variant holds the same patient.
  """
  ras = np.transpose(volume, (2, 1, 0))[::-1, ::-1, :]
  dz, dr, dc = SPACING
  affine = np.diag([dc, dr, dz, 1.0])
  affine[:3, 3] = (-115.0, -115.0, zs[0])
  data, out = np.transpose(ras, perm), affine.copy()
  out[:3, :3] = affine[:3, list(perm)]
  for axis in flips:
    data = np.flip(data, axis)
    out[:3, 3] += out[:3, axis] * (data.shape[axis] - 1)
    out[:3, axis] *= -1
  data = np.ascontiguousarray(data if values is None else values(data))
  nib.save(nib.Nifti1Image(data.astype(np.int16 if values is None else data.dtype), out), path)
  return path


def _hu(reading: sources.Reading) -> list[np.ndarray]:
  return [s.hu for series in reading.series for slices, _ in series.batches(3) for s in slices]


def test_folder_zip_and_volumes_give_the_same_slices_in_position_order(tmp_path):
  volume = phantom_volume()
  folder = write_series(tmp_path / "export" / "SE01", volume)
  (folder.parent / "DICOMDIR").write_bytes(  # an export's index beside the images
      next(Path(pydicom.__file__).parent.glob("data/test_files/dicomdirtests/DICOMDIR"))
      .read_bytes())
  zipped = tmp_path / "series.zip"
  with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
    for f in sorted(folder.iterdir()):
      zf.write(f, f"SE01/{f.name}")
  variants = {"folder": [tmp_path / "export"], "zip": [zipped],
              "enhanced": [enhanced_ct(tmp_path / "enhanced.dcm", volume)],
              "nifti": [write_nifti(tmp_path / "v.nii.gz", volume)],
              "upload": [Item("series.zip", zipped.read_bytes())]}
  for what, given in variants.items():
    reading = sources.read(given, stored_size=32)
    assert len(reading.series) == 1 and reading.series[0].summarise, what
    entries = reading.series[0].entries
    assert [e.geometry.position_z for e in entries] == list(ZS), what
    np.testing.assert_array_equal(np.stack(_hu(reading)), volume, err_msg=what)
    assert [p.file for p in reading.problems] == (
        [str(tmp_path / "export" / "DICOMDIR")] if what == "folder" else []), what
  assert "is a DICOMDIR" in sources.read([tmp_path / "export"]).problems[0].reason


@pytest.mark.parametrize("n", [2, 3])  # two frames: the second is still spaced from the first
def test_classic_multiframe_frames_are_spaced_slices(tmp_path, n):
  volume = phantom_volume(n=n)
  reading = sources.read([classic_multiframe(tmp_path / "mf.dcm", volume, z0=20.0, step=2.5)])
  series, = reading.series
  assert [e.geometry.position_z for e in series.entries] == [20.0, 22.5, 25.0][:n]
  # Each frame is numbered by its place in the file, 1..n, not by the file's InstanceNumber (1).
  assert [e.geometry.instance_number for e in series.entries] == list(range(1, n + 1))
  slices = [s for batch, _ in series.batches(2) for s in batch]
  assert [s.frame for s in slices] == list(range(1, n + 1))
  assert slices[1].label.endswith("mf.dcm [slice 2]")
  np.testing.assert_array_equal(np.stack([s.hu for s in slices]), volume)


def test_enhanced_ct_rescale_in_the_shared_groups_and_frame_numbers(tmp_path):
  """Rescale given once for all frames (Shared Functional Groups), positions per frame."""
  volume = 2 * np.floor(phantom_volume() / 2)  # even HU: stored exactly with slope 2
  series, = sources.read([enhanced_ct(tmp_path / "e.dcm", volume, shared_rescale=-1024.0)]).series
  entries = series.entries
  assert [e.geometry.position_z for e in entries] == list(ZS)
  # In position order, each frame keeps its number in the file (1-based): slice k is frame
  # STORED_ORDER.index(k) + 1.
  assert [e.geometry.instance_number for e in entries] == [
      STORED_ORDER.index(k) + 1 for k in range(len(ZS))] == [2, 4, 1, 3]
  np.testing.assert_array_equal(np.stack([s.hu for slices, _ in series.batches(4)
                                          for s in slices]), volume)


def test_loose_files_keep_their_order_and_bad_ones_are_rows(tmp_path, bad_files):
  volume = phantom_volume(n=2)
  a = write_dicom(tmp_path / "a.dcm", volume[0], 0, 50.0)
  b = write_dicom(tmp_path / "b.dcm", volume[1], 1, -50.0)
  reading = sources.read([a, bad_files / "notes.txt", b, bad_files / "empty.dcm"])
  loose, = reading.series
  assert not loose.summarise and [e.name for e in loose.entries] == [str(a), str(b)]
  assert [Path(p.file).name for p in reading.problems] == ["notes.txt", "empty.dcm"]
  assert "not a DICOM, NIfTI, PNG or JPG file" in reading.problems[0].reason


def test_slices_decode_one_batch_at_a_time(tmp_path):
  """A folder's pixels are read when their batch comes: a file gone by then is one problem."""
  folder = write_series(tmp_path / "s", phantom_volume(n=4))
  series, = sources.read([folder]).series
  batches = series.batches(2)
  first, problems = next(batches)
  assert len(first) == 2 and not problems
  for entry in series.entries[2:]:
    Path(entry.name).unlink()
  rest, problems = next(batches)
  assert not rest and len(problems) == 2 and "cannot read" in problems[0].reason


def test_slice_limit_keeps_the_first_and_says_so(tmp_path):
  folder = write_series(tmp_path / "s", phantom_volume(n=4))
  reading = sources.read([folder], max_slices=3)
  assert reading.slices == 3
  assert "4 slices found; only the first 3 were analysed" in str(reading.problems[-1])


def test_zip_guards_hold_in_the_reader(tmp_path):
  bomb = tmp_path / "bomb.zip"
  with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("slice.dcm", bytes(50 * 2**20))
  escape = tmp_path / "escape.zip"
  with zipfile.ZipFile(escape, "w") as zf:
    zf.writestr("../../outside.dcm", b"x")
  nested = tmp_path / "nested.zip"
  with zipfile.ZipFile(nested, "w") as zf:
    zf.writestr("inner.zip", escape.read_bytes())
  reasons = [str(p) for p in sources.read([bomb, escape, nested]).problems]
  assert "zip bomb" in reasons[0] and "unsafe path" in reasons[1]
  assert "a zip inside the zip" in reasons[2]


@pytest.fixture(scope="session")
def shipped_predictor() -> predictor_lib.Predictor:
  """The shipped demo weights: trained, so Grad-CAM has evidence and boxes to compare."""
  return shared("shipped_predictor", lambda: predictor_lib.Predictor.from_checkpoint(SHIPPED))


def test_dicom_and_nifti_in_two_axis_orders_give_the_same_predictions(tmp_path,
                                                                      shipped_predictor):
  """One phantom series written three ways: per-slice probabilities and Grad-CAM boxes agree."""
  predictor = shipped_predictor
  volume = phantom_volume(size=128)
  folder = write_series(tmp_path / "dicom", volume)
  ways = {"dicom": folder,
          "nifti_ras": write_nifti(tmp_path / "ras.nii.gz", volume),
          "nifti_permuted_flipped": write_nifti(tmp_path / "zxy.nii", volume, perm=(2, 0, 1),
                                                flips=(0, 2))}
  results = {}
  for way, path in ways.items():
    series, = sources.read([path], windows=predictor.windows,
                           stored_size=predictor.stored_size).series
    preds = [p for slices, _ in series.batches(3) for p in predictor.predict(slices)]
    results[way] = ([p.probabilities for p in preds], [p.box for p in preds])
  reference_probs, reference_boxes = results.pop("dicom")
  for way, (probs, boxes) in results.items():
    for got, want in zip(probs, reference_probs, strict=True):
      assert got == pytest.approx(want, abs=1e-4), way
    assert boxes == reference_boxes, way
  assert any(b is not None for b in reference_boxes)  # the comparison covers real boxes


def test_every_read_error_names_the_file_and_reads_on(tmp_path):
  """A malformed header value in one file of a folder: a problem for it, slices for the rest."""
  folder = write_series(tmp_path / "s", phantom_volume(n=2), zs=ZS[:2])
  bad = write_dicom(folder / "bad.dcm", phantom_volume(n=1)[0], 7, 9.0)
  ds = pydicom.dcmread(bad)
  ds["ImagePositionPatient"] = pydicom.DataElement(0x00200032, "LO", "1\\x")
  ds.save_as(bad)
  reading = sources.read([folder])
  assert reading.slices == 2
  assert str(reading.problems[0]) == (f"{bad}: has a malformed ImagePositionPatient value in its "
                                      "header; re-export it from the scanner or PACS")


def test_dicom_geometry_stays_without_patient_tags(tmp_path):
  series, = sources.read([enhanced_ct(tmp_path / "e.dcm", phantom_volume())]).series
  assert all(isinstance(e.geometry, items.SliceGeometry) for e in series.entries)
  assert "PHANTOM" not in repr([e.geometry for e in series.entries])


def test_a_picture_is_decoded_once_and_a_bad_header_refused_when_read(tmp_path, monkeypatch):
  """Reading checks a PNG's header only; its pixels are decoded once, when its batch comes."""
  from PIL import Image
  Image.fromarray(np.full((40, 30), 90, np.uint8)).save(tmp_path / "slice.png")
  Image.fromarray(np.zeros((8, 8), np.int32), mode="I").save(tmp_path / "deep.png")
  decodes = []
  load = Image.Image.load
  def counted(self):  # an image with tiles left is decoded by this call
    decodes.extend([self.format] if getattr(self, "tile", None) else [])
    return load(self)
  monkeypatch.setattr(Image.Image, "load", counted)
  reading = sources.read([tmp_path / "slice.png", tmp_path / "deep.png"], stored_size=32)
  assert decodes == [] and [p.file for p in reading.problems] == [str(tmp_path / "deep.png")]
  assert "no display window" in reading.problems[0].reason
  [(slices, problems)] = list(reading.series[0].batches(8))
  assert len(slices) == 1 and not problems and slices[0].shape == (40, 30)
  assert decodes == ["PNG"]
