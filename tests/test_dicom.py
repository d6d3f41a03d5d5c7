"""DICOM -> HU -> windows: hand-computed values, the RSNA 12-bit fix, and every bad input."""

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid

from ichflax.data import ct_writer, dicom, image, items, phantom

GEOMETRY = items.SliceGeometry("ID_0a1b2c", "ID_study", "ID_series", 7, -12.5)


def _write(path, hu, **kwargs):
  ct_writer.write_ct(path, hu, GEOMETRY, patient_id="ID_synthetic", **kwargs)
  return path


def _edit(path, **tags):
  """Rewrite a file with some tags set (None deletes the tag)."""
  ds = pydicom.dcmread(path)
  for key, value in tags.items():
    if value is None:
      delattr(ds, key)
    else:
      setattr(ds, key, value)
  with pydicom.config.disable_value_validation():
    ds.save_as(path)
  return path


@pytest.fixture
def hu():
  return np.array([[-1024, -10, 0, 40], [80, 200, 1000, 2000]], np.float32).repeat(4, axis=0)


def test_rescale_slope_and_intercept_by_hand(tmp_path, hu):
  path = _edit(_write(tmp_path / "a.dcm", hu), RescaleSlope=2, RescaleIntercept=-1000)
  raw = pydicom.dcmread(path).pixel_array.astype(np.float32)  # stored: hu + 1024
  np.testing.assert_array_equal(raw, hu + 1024)
  np.testing.assert_array_equal(dicom.read_hu(path), np.maximum(2 * (hu + 1024) - 1000, -1024))


def test_no_rescale_tags_means_values_are_hu(tmp_path, hu):
  path = _edit(_write(tmp_path / "a.dcm", hu), RescaleSlope=None, RescaleIntercept=None)
  np.testing.assert_array_equal(dicom.read_hu(path), np.maximum(hu + 1024, -1024))


@pytest.mark.parametrize("encoding", ["int16", "uint12"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_round_trip_encodings_and_monochrome1(tmp_path, hu, encoding, photometric):
  path = _write(tmp_path / "a.dcm", hu, encoding=encoding, photometric=photometric)
  assert pydicom.dcmread(path).PhotometricInterpretation == photometric
  out = dicom.read_hu(path)
  assert out.dtype == np.float32 and out.shape == hu.shape
  np.testing.assert_array_equal(out, hu)


def test_rsna_12bit_wrap_is_fixed(tmp_path):
  # The quirk: BitsStored 12, unsigned, intercept 0, values = HU mod 4096 (air -1000 -> 3096).
  path = tmp_path / "wrapped.dcm"
  hu = np.array([[-1000, -500, -1], [0, 40, 3000]], np.float32).repeat(3, axis=0)
  _write(path, hu, encoding="rsna_wrapped")
  ds = pydicom.dcmread(path)
  assert (ds.BitsStored, ds.PixelRepresentation, float(ds.RescaleIntercept)) == (12, 0, 0.0)
  np.testing.assert_array_equal(ds.pixel_array[0], [3096, 3596, 4095])  # a naive read is wrong
  np.testing.assert_array_equal(dicom.read_hu(path), hu)


def test_12bit_with_normal_intercept_is_not_touched(tmp_path, hu):
  path = _write(tmp_path / "a.dcm", hu, encoding="uint12")
  assert pydicom.dcmread(path).BitsStored == 12
  np.testing.assert_array_equal(dicom.read_hu(path), hu)


def test_padding_maps_to_air(tmp_path, hu):
  pad = np.zeros(hu.shape, bool)
  pad[0, :2] = True
  path = _write(tmp_path / "a.dcm", hu, padding=pad)
  assert pydicom.dcmread(path).pixel_array[0, 0] == -2000  # raw -2000 -> -3024 HU
  out = dicom.read_hu(path)
  assert out[0, 0] == out[0, 1] == -1024
  # An explicit PixelPaddingValue is air too, even where its HU would look like tissue.
  path = _write(tmp_path / "b.dcm", hu)
  ds = pydicom.dcmread(path)
  ds.add_new(0x00280120, "SS", 1024 + 40)  # PixelPaddingValue
  with pydicom.config.disable_value_validation():
    ds.save_as(path)
  out = dicom.read_hu(path)
  assert np.all(out[hu == 40] == -1024) and np.all(out[hu == 80] == 80)


def test_window_by_hand():
  hu = np.array([-1000, 0, 20, 40, 60, 80, 500], np.float32)
  # brain 40/80: 0 HU -> 0, 80 HU -> 255, 255/80 per HU.
  np.testing.assert_array_equal(image.window(hu, 40, 80), [0, 0, 64, 128, 191, 255, 255])
  np.testing.assert_array_equal(
      image.window(np.array([-800, 600, 2000.0]), *image.WINDOWS["bone"]), [0, 128, 255])
  assert image.window(hu, 40, 80).dtype == np.uint8
  with pytest.raises(ValueError, match="width must be positive"):
    image.window(hu, 40, 0)


def test_presets_and_window_choices():
  assert image.WINDOWS == {"brain": (40, 80), "subdural": (80, 200), "bone": (600, 2800)}
  assert image.windows_for(3) == (image.WINDOWS["brain"], image.WINDOWS["subdural"],
                                  image.WINDOWS["bone"])
  assert image.windows_for(1) == (image.WINDOWS["brain"],)
  with pytest.raises(ValueError, match="3 .* or 1"):
    image.windows_for(2)


def test_pad_to_square_centres_with_the_fill():
  rgb = np.full((2, 4, 3), 7, np.uint8)  # an upright picture, as inputs pads PNG/JPG pictures
  out = image.pad_to_square(rgb, 0)
  assert out.shape == (4, 4, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[1:3], rgb)
  assert not out[0].any() and not out[3].any()
  tall = image.pad_to_square(np.zeros((5, 2), np.float32), image.AIR_FILL_HU)
  # odd margins: 1 left, 2 right
  np.testing.assert_array_equal(tall[:, [0, 3, 4]], image.AIR_FILL_HU)
  np.testing.assert_array_equal(image.pad_to_square(np.zeros((6, 2)), 1)[0], [1, 1, 0, 0, 1, 1])
  square = np.ones((3, 3))
  assert image.pad_to_square(square, 0) is square


def test_slice_to_uint8_channels_and_resize():
  hu = np.full((64, 48), 40.0, np.float32)  # non-square: padded with air to 64x64
  img = image.slice_to_uint8(hu, size=32)
  assert img.shape == (32, 32, 3) and img.dtype == np.uint8
  np.testing.assert_array_equal(img[16, 16], [128, 76, 76])  # brain, subdural, bone at 40 HU
  np.testing.assert_array_equal(img[16, 0], [0, 0, 0])  # padded air
  assert image.slice_to_uint8(hu, image.windows_for(1), 16).shape == (16, 16, 1)
  # Same size: no resampling, exactly the windows.
  np.testing.assert_array_equal(image.slice_to_uint8(np.full((8, 8), 80.0), size=8)[..., 0], 255)
  with pytest.raises(ValueError, match="2-D"):
    image.slice_to_uint8(np.zeros((2, 8, 8)))


def test_slice_to_uint8_pads_a_non_square_slice_with_air():
  """The padding is air whatever the window: a window around air shows it mid-grey, not black."""
  hu = np.full((4, 2), 40.0, np.float32)  # tall: one air column each side, no resize at size 4
  img = image.slice_to_uint8(hu, [(-1000, 200)], size=4)[..., 0]
  # -1024 HU in the window -1100..-900: (-1024 + 1100) * 255 / 200 = 96.9 -> 97; 40 HU: 255.
  np.testing.assert_array_equal(img[:, [0, 3]], 97)
  np.testing.assert_array_equal(img[:, 1:3], 255)


def test_slice_to_uint8_resizes_bilinear_by_hand():
  """PIL's bilinear filter, worked out by hand: half-pixel centres, a triangle kernel whose
  support widens by the shrink factor (antialiased), weights renormalised at the edges.

  The window 0..255 (centre 127.5, width 255) leaves HU 0..255 as they are, so the bytes are the
  resized HU rounded.
  """
  identity = [(127.5, 255.0)]
  # Enlarging 2 -> 4: output centres at input 0.25, 0.75, 1.25, 1.75 (in pixels from the edge);
  # the outer ones see only their own pixel, the inner ones weigh 3:1.
  up = np.array([[1, 0], [.75, .25], [.25, .75], [0, 1]])
  hu = np.array([[0, 200], [120, 40]], np.float32)
  np.testing.assert_array_equal(image.slice_to_uint8(hu, identity, 4)[..., 0],
                                np.rint(up @ hu @ up.T))
  # Shrinking 4 -> 2: the kernel spans 2 input pixels each way, so output 0 (centre 1.0) weighs
  # pixels 0, 1, 2 by 0.75, 0.75, 0.25 (pixel -1 is outside: renormalised by 1.75).
  down = np.array([[3, 3, 1, 0], [0, 1, 3, 3]]) / 7
  hu = np.array([0, 56, 112, 168], np.float32)[None, :].repeat(4, 0) + np.array(
      [0, 7, 14, 70], np.float32)[:, None]
  np.testing.assert_array_equal(image.slice_to_uint8(hu, identity, 2)[..., 0],
                                np.rint(down @ hu @ down.T))


def test_read_from_bytes_and_file_object(tmp_path, hu):
  data = _write(tmp_path / "a.dcm", hu).read_bytes()
  np.testing.assert_array_equal(dicom.read_hu(data), hu)
  np.testing.assert_array_equal(dicom.read_hu(io.BytesIO(data)), hu)
  # Without the 128-byte preamble and "DICM", as some exporters write: read all the same.
  np.testing.assert_array_equal(dicom.read_hu(data[132:]), hu)


def test_geometry_without_patient_tags(tmp_path, hu):
  _, geo = dicom.read_slice(_write(tmp_path / "a.dcm", hu))
  # What was scanned (for the scope check) and a digest of the patient (for the split by
  # patient), never the PatientID itself.
  assert geo == dataclasses.replace(GEOMETRY, modality="CT",
                                    patient_key=dicom.patient_key("ID_synthetic"))
  assert "ID_synthetic" not in repr(geo) and len(geo.patient_key) == 16
  assert dicom.patient_key("ID_other") != geo.patient_key and dicom.patient_key(" ") == ""


def test_truncated_file(tmp_path, hu):
  path = _write(tmp_path / "cut.dcm", hu)
  path.write_bytes(path.read_bytes()[:-40])
  with pytest.raises(dicom.DicomError, match=r"cut\.dcm.*truncated"):
    dicom.read_hu(path)


def test_png_renamed_dcm(tmp_path):
  path = tmp_path / "slice.dcm"
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="PNG")
  with pytest.raises(dicom.DicomError, match=r"slice\.dcm: not a DICOM file: it is a PNG image; "
                     r"give the original \.dcm slice, or open the picture as a PNG/JPG image$"):
    dicom.read_hu(path)
  zipped = tmp_path / "series.dcm"  # not a picture: no hint to open it as one
  zipped.write_bytes(b"PK\x03\x04" + bytes(200))
  with pytest.raises(dicom.DicomError, match=r"series\.dcm: not a DICOM file: it is a zip "
                     r"archive; give the original \.dcm slice$"):
    dicom.read_hu(zipped)


def test_text_file_and_empty_and_missing(tmp_path):
  (tmp_path / "notes.dcm").write_text("hello, not a scan\n" * 20)
  with pytest.raises(dicom.DicomError, match="notes.dcm"):
    dicom.read_hu(tmp_path / "notes.dcm")
  (tmp_path / "empty.dcm").write_bytes(b"")
  with pytest.raises(dicom.DicomError, match=r"empty\.dcm: empty file \(0 bytes\)$"):
    dicom.read_hu(tmp_path / "empty.dcm")
  with pytest.raises(dicom.DicomError, match=r"nope\.dcm: file not found$"):
    dicom.read_hu(tmp_path / "nope.dcm")
  with pytest.raises(dicom.DicomError, match=r": cannot open \(Is a directory\)$"):
    dicom.read_hu(tmp_path)


def test_messages_name_the_file_object_or_say_uploaded():
  text = b"hello, not a scan\n" * 20
  named = io.BytesIO(text)
  named.name = "notes.dcm"
  for source, name in ((text, "<uploaded file>"), (io.BytesIO(text), "<uploaded file>"),
                       (named, "notes.dcm")):
    with pytest.raises(dicom.DicomError) as err:
      dicom.read_hu(source)
    assert err.value.source == name and str(err.value).startswith(f"{name}: ")


def test_missing_pixel_data(tmp_path, hu):
  path = _edit(_write(tmp_path / "a.dcm", hu), PixelData=None)
  with pytest.raises(dicom.DicomError, match=r"a\.dcm: has no pixel data \(a non-image DICOM "
                     r"object: CT\); skipped: give the CT images of the series$"):
    dicom.read_hu(path)
  _edit(path, Modality=None)
  with pytest.raises(dicom.DicomError, match=r"object: unknown kind\)"):
    dicom.read_hu(path)


@pytest.mark.parametrize("meta_class,records", [(True, False), (False, True)])
def test_either_mark_of_a_dicomdir_is_enough(meta_class, records):
  """PS3.10: a DICOMDIR has the Media Storage Directory SOP class in its file meta and a
  Directory Record Sequence; exports that drop either are still indexes, not images."""
  ds = pydicom.Dataset()
  ds.file_meta = pydicom.dataset.FileMetaDataset()
  if meta_class:
    ds.file_meta.MediaStorageSOPClassUID = uid.MediaStorageDirectoryStorage
  if records:
    ds.DirectoryRecordSequence = pydicom.Sequence()
  assert dicom.is_dicomdir(ds)
  assert not dicom.is_dicomdir(pydicom.dcmread(CT_SMALL))


def test_absent_tags_take_their_defaults_or_give_our_error(tmp_path, hu):
  """UIDs absent are empty; without the samples or photometric tags pydicom cannot decode:
  the reason is ours (damaged), never a crash or a wrong one (colour)."""
  path = _edit(_write(tmp_path / "a.dcm", hu), StudyInstanceUID=None, SeriesInstanceUID=None)
  got, geometry = dicom.read_slice(path)
  np.testing.assert_array_equal(got, hu)
  assert (geometry.study_instance_uid, geometry.series_instance_uid) == ("", "")
  for tag in ("SamplesPerPixel", "PhotometricInterpretation"):
    with pytest.raises(dicom.DicomError, match="pixel data cannot be decoded"):
      dicom.read_hu(_edit(_write(tmp_path / f"{tag}.dcm", hu), **{tag: None}))


def test_what_was_scanned_is_read_for_the_scope_check(tmp_path, hu):
  _, geometry = dicom.read_slice(_edit(_write(tmp_path / "a.dcm", hu), BodyPartExamined="HEAD "))
  assert (geometry.modality, geometry.body_part) == ("CT", "HEAD")


def test_a_colour_dicom_is_refused(tmp_path, hu):
  path = _edit(_write(tmp_path / "a.dcm", hu), SamplesPerPixel=3)
  with pytest.raises(dicom.DicomError, match=r"a\.dcm: is a colour image"):
    dicom.read_hu(path)


@pytest.mark.parametrize("tags,reason", [
    ({"NumberOfFrames": 0}, "declares 0 frames; re-export it from the scanner or PACS"),
    ({"Rows": None}, "lacks Rows, which its pixel data needs; export it again from the scanner "
                     "or PACS"),
])
def test_a_header_without_a_pixel_layout_is_refused(tmp_path, hu, tags, reason):
  path = _edit(_write(tmp_path / "a.dcm", hu), **tags)
  with pytest.raises(dicom.DicomError) as err:
    dicom.read_hu(path)
  assert str(err.value) == f"{path}: {reason}"


def test_zero_rescale_slope_is_taken_as_one(tmp_path, hu):
  """A slope of 0 would flatten the slice to the intercept: read as 1 (no scaling) instead."""
  path = _edit(_write(tmp_path / "a.dcm", hu), RescaleSlope=0)
  np.testing.assert_array_equal(dicom.read_hu(path), hu)


def test_pixel_data_without_a_transfer_syntax_is_refused(tmp_path, hu):
  ds = pydicom.dcmread(_write(tmp_path / "a.dcm", hu))
  del ds.file_meta.TransferSyntaxUID
  with pytest.raises(dicom.DicomError, match=r"x\.dcm: does not say how its pixel data is "
                     "encoded"):
    dicom.ImageFile(ds, "x.dcm")


def test_multi_frame_is_a_series_not_a_slice(tmp_path):
  path = _write(tmp_path / "a.dcm", np.zeros((8, 8)))
  ds = pydicom.dcmread(path)
  ds.NumberOfFrames = 2
  ds.PixelData = np.zeros((2, 8, 8), np.int16).tobytes()
  with pydicom.config.disable_value_validation():
    ds.save_as(path)
  with pytest.raises(dicom.DicomError, match="multi-frame.*read it as a series"):
    dicom.read_hu(path)


def test_error_type_is_a_value_error_with_parts():
  err = dicom.DicomError("x.dcm", "why")
  assert isinstance(err, items.InputError) and str(err) == "x.dcm: why"  # one type to catch
  assert (err.source, err.reason) == ("x.dcm", "why")


def test_signed_12bit_with_an_intercept_near_0_is_not_unwrapped(tmp_path):
  """The RSNA wrap fix is for unsigned 12-bit files; a signed one is read as stored x slope +
  intercept (the fix would set the intercept to -1000 and lose this file's -24)."""
  hu = np.array([[-1024, -10, 0, 40], [80, 200, 600, 1000]], np.float32).repeat(4, axis=0)
  path = _edit(_write(tmp_path / "a.dcm", hu), BitsStored=12, HighBit=11, RescaleIntercept=-24)
  ds = pydicom.dcmread(path)
  assert (ds.BitsStored, ds.PixelRepresentation) == (12, 1)
  np.testing.assert_array_equal(ds.pixel_array, hu + 1024)  # stored as the int16 encoding does
  np.testing.assert_array_equal(dicom.read_hu(path), hu + 1024 - 24)


def test_12bit_without_rescale_tags_is_taken_as_hu(tmp_path, hu):
  """No intercept at all: the values are HU already, so the RSNA wrap fix must not fire."""
  path = _edit(_write(tmp_path / "a.dcm", hu, encoding="uint12"), RescaleSlope=None,
               RescaleIntercept=None)
  raw = pydicom.dcmread(path).pixel_array.astype(np.float32)
  np.testing.assert_array_equal(dicom.read_hu(path), np.maximum(raw, -1024))


def test_monochrome1_mirror_ignores_padding(tmp_path, hu):
  """Padding stored beyond the data's range must not move MONOCHROME1's mirror point."""
  plain = dicom.read_hu(_write(tmp_path / "m2.dcm", hu))
  path = _write(tmp_path / "m1.dcm", hu, photometric="MONOCHROME1")
  ds = pydicom.dcmread(path)
  px = ds.pixel_array.copy()
  pad_value = int(px.max()) + 500
  px[0, :2] = pad_value  # other air and -10 pixels remain, so the true range is unchanged
  ds.PixelData = px.tobytes()
  ds.add_new(0x00280120, "US" if ds.PixelRepresentation == 0 else "SS", pad_value)
  with pydicom.config.disable_value_validation():
    ds.save_as(path)
  out = dicom.read_hu(path)
  assert np.all(out[0, :2] == -1024)
  np.testing.assert_array_equal(out.ravel()[2:], plain.ravel()[2:])


@pytest.mark.parametrize("tag,value", [("RescaleSlope", "zzzz"), ("RescaleIntercept", "n/a"),
                                       ("InstanceNumber", "zz")])
def test_malformed_header_value_is_one_clear_error(tmp_path, hu, tag, value):
  path = _write(tmp_path / "a.dcm", hu)
  ds = pydicom.dcmread(path)
  ds[tag] = pydicom.DataElement(ds[tag].tag, "LO", value)  # text where a number belongs
  ds.save_as(path)
  with pytest.raises(dicom.DicomError, match=f"malformed {tag} value"):
    dicom.read_slice(path)


def test_huge_slice_is_refused_before_decoding(tmp_path, hu):
  path = _edit(_write(tmp_path / "a.dcm", hu), Rows=5000, Columns=5000)
  with pytest.raises(dicom.DicomError, match="pixel limit"):
    dicom.read_hu(path)
  _edit(path, Rows=4096, Columns=4096)  # the limit itself passes (then its short data fails)
  with pytest.raises(dicom.DicomError) as err:
    dicom.read_hu(path)
  assert "pixel limit" not in str(err.value)


# Every common CT transfer syntax, made from one phantom slice by a real encoder: pydicom's own
# (`Dataset.compress`, with the plugins in requirements.txt) or, for JPEG Lossless process 14 and
# JPEG baseline, GDCM (python-gdcm, test-only).
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # in the wheel: no download


def _compress(ts, **kwargs):
  def make(src, dst):
    ds = pydicom.dcmread(src)
    ds.compress(ts, **kwargs)
    ds.save_as(dst, enforce_file_format=True)
    return dst
  return make


def _gdcm(ts_name):
  def make(src, dst):
    gdcm = pytest.importorskip("gdcm")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, ts_name)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return dst
  return make


def _rewrite(ts, **kwargs):
  """Same pixels, another uncompressed encoding (byte order swapped by hand for big endian)."""
  def make(src, dst):
    ds = pydicom.dcmread(src)
    px = ds.pixel_array
    ds.file_meta.TransferSyntaxUID = ts
    if ts == uid.ExplicitVRBigEndian:
      ds.PixelData = px.astype(">i2").tobytes()
    pydicom.dcmwrite(dst, ds, force_encoding=True, **kwargs)
    return dst
  return make


# (transfer syntax, how to make it, largest HU difference allowed: 0 = lossless)
SYNTAXES = [
    (uid.RLELossless, _compress(uid.RLELossless), 0),
    (uid.JPEGLSLossless, _compress(uid.JPEGLSLossless), 0),
    (uid.JPEG2000Lossless, _compress(uid.JPEG2000Lossless), 0),
    (uid.JPEGLosslessSV1, _gdcm("JPEGLosslessProcess14_1"), 0),
    (uid.JPEGLossless, _gdcm("JPEGLosslessProcess14"), 0),
    (uid.DeflatedExplicitVRLittleEndian, _rewrite(uid.DeflatedExplicitVRLittleEndian,
                                                  little_endian=True, implicit_vr=False), 0),
    (uid.ExplicitVRBigEndian, _rewrite(uid.ExplicitVRBigEndian, little_endian=False,
                                       implicit_vr=False), 0),
    (uid.ImplicitVRLittleEndian, _rewrite(uid.ImplicitVRLittleEndian, little_endian=True,
                                          implicit_vr=True), 0),
    (uid.JPEGLSNearLossless, _compress(uid.JPEGLSNearLossless, jls_error=2), 2),
    (uid.JPEG2000, _compress(uid.JPEG2000, j2k_cr=[5]), 40),
]


@pytest.mark.parametrize("ts,make,tolerance", SYNTAXES, ids=[s[0].name for s in SYNTAXES])
def test_every_ct_transfer_syntax_decodes_to_the_uncompressed_hu(tmp_path, ts, make, tolerance):
  hu = phantom.make_slice(np.random.default_rng(0), 64, (4,)).hu
  plain = _write(tmp_path / "plain.dcm", hu)
  encoded = make(plain, tmp_path / "encoded.dcm")
  assert pydicom.dcmread(encoded).file_meta.TransferSyntaxUID == ts  # really re-encoded
  out, expected = dicom.read_hu(encoded), dicom.read_hu(plain)
  if tolerance == 0:
    np.testing.assert_array_equal(out, expected)
  else:
    assert 0 < np.abs(out - expected).max() <= tolerance


def test_jpeg_baseline_8_bit_decodes(tmp_path):
  """Baseline JPEG holds 8-bit samples only: a slice stored as (HU + 1024) / 8, lossy."""
  hu = phantom.make_slice(np.random.default_rng(0), 64, (4,)).hu
  ds = pydicom.dcmread(_write(tmp_path / "a.dcm", hu))
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
  ds.RescaleSlope, ds.RescaleIntercept = 8, -1024
  ds.PixelData = np.clip(np.rint((hu + 1024) / 8), 0, 255).astype(np.uint8).tobytes()
  ds.save_as(tmp_path / "8bit.dcm", enforce_file_format=True)
  encoded = _gdcm("JPEGBaselineProcess1")(tmp_path / "8bit.dcm", tmp_path / "jpeg.dcm")
  assert pydicom.dcmread(encoded).file_meta.TransferSyntaxUID == uid.JPEGBaseline8Bit
  assert np.abs(dicom.read_hu(encoded) - dicom.read_hu(tmp_path / "8bit.dcm")).max() <= 16


def test_jpeg_extended_12_bit_from_the_pydicom_wheel_decodes():
  """12-bit lossy JPEG (no pip encoder writes it): the real file pydicom ships."""
  hu = dicom.read_hu(PYDICOM_FILES / "JPGExtended.dcm")
  assert hu.shape == (1024, 256) and hu.max() > hu.min()


def test_missing_decoder_names_the_syntax_and_the_fix(tmp_path):
  """The plugin packages made unimportable in a fresh interpreter, as on a bare install."""
  hu = phantom.make_slice(np.random.default_rng(0), 32).hu
  path = _compress(uid.JPEGLSLossless)(_write(tmp_path / "a.dcm", hu), tmp_path / "jls.dcm")
  hide = ("gdcm", "libjpeg", "pylibjpeg", "jpeg_ls", "openjpeg", "rle")
  code = (f"import sys\nfor m in {hide!r}: sys.modules[m] = None\n"
          "from ichflax.data import dicom\n"
          f"try:\n  dicom.read_hu({str(path)!r})\nexcept dicom.DicomError as e:\n  print(e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=Path(__file__).parent.parent).stdout
  assert "jls.dcm: is compressed as JPEG-LS Lossless Image Compression" in out
  assert "no decoder for it is installed" in out
  # The plugins pydicom names for JPEG-LS (gdcm, pyjpegls, pylibjpeg), as requirements.txt's
  # packages.
  assert ("(`pip install -r requirements.txt`: python-gdcm, pyjpegls, pylibjpeg, "
          "pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle)") in out
  assert "truncated" not in out and "plugins" not in out


def test_unsupported_syntax_says_which(tmp_path, hu):
  ds = pydicom.dcmread(_compress(uid.RLELossless)(_write(tmp_path / "a.dcm", hu),
                                                  tmp_path / "rle.dcm"))
  ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML  # video: no decoder exists for it
  ds.save_as(tmp_path / "mpeg.dcm")
  with pytest.raises(dicom.DicomError, match="uses transfer syntax MPEG2 .* no decoder for; "
                     "export the series uncompressed"):
    dicom.read_hu(tmp_path / "mpeg.dcm")


@pytest.mark.parametrize("name,reason", [
    ("badVR.dcm", "has a malformed NumberOfFrames value in its header; re-export it"),
    ("JPEG2000-embedded-sequence-delimiter.dcm", "decompression-bomb guard stopped it"),
    ("MR_truncated.dcm", "pixel data cannot be decoded: the file is damaged or truncated"),
    ("DICOMDIR", "is a DICOMDIR (the index of a DICOM export), not an image"),
])
def test_damaged_files_from_the_pydicom_wheel_get_our_words(name, reason):
  """Our sentence, not a library's: no plugin list, no Pillow text, no int() message."""
  path = next(PYDICOM_FILES.rglob(name))
  with pytest.raises(dicom.DicomError) as err:
    dicom.read_hu(path)
  assert reason in str(err.value) and name in str(err.value)
  assert not any(w in str(err.value) for w in ("plugin", "Pillow", "invalid literal", "PIL"))


# A CT slice neither we nor the phantom wrote: pydicom's own test file, shipped in its wheel.
CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def test_hu_of_a_file_we_did_not_write_matches_pydicom():
  """CT_small.dcm (GE, int16, slope 1, intercept -1024) against pydicom's modality LUT.

  Compared where ichflax's HU is defined as pydicom's: at or above air (-1024 HU; ichflax clamps
  below it) and not PixelPaddingValue (ichflax maps padding to air). This file's values lie in
  [-896, 1167] HU and hold no padding, so that is every pixel.
  """
  ds = pydicom.dcmread(CT_SMALL)
  want = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
  defined = (want >= image.AIR_FILL_HU) & (ds.pixel_array != ds.get("PixelPaddingValue"))
  assert defined.all() and want.min() < 0 < want.max()
  got, geometry = dicom.read_slice(CT_SMALL)
  assert got.shape == want.shape == (128, 128)
  np.testing.assert_array_equal(got[defined], want[defined])
  assert geometry.sop_instance_uid == ds.SOPInstanceUID
  assert geometry.position_z == float(ds.ImagePositionPatient[2])


def test_monochrome1_minimum_sample_shows_white():
  """DICOM PS3.3 C.7.6.3.1.2: in MONOCHROME1 "the minimum sample value is intended to be
  displayed as white". ichflax reads such a slice into HU where bright means dense, so the same
  stored samples relabelled MONOCHROME1 must come out in reverse order: the smallest stored value
  the highest HU (white in the brain window), the largest the lowest. The mirror stays inside the
  slice's own HU range (ichflax's choice; the standard fixes only the order).
  """
  ds = pydicom.dcmread(CT_SMALL)
  stored = ds.pixel_array.astype(np.int64)
  plain = dicom.read_hu(CT_SMALL)
  ds.PhotometricInterpretation = "MONOCHROME1"
  buf = io.BytesIO()
  ds.save_as(buf)
  inverted = dicom.read_hu(buf.getvalue())
  order = np.argsort(stored, axis=None, kind="stable")
  by_stored = inverted.ravel()[order]
  distinct = np.diff(stored.ravel()[order]) > 0
  assert np.all(np.diff(by_stored)[distinct] < 0)  # a larger sample is always darker
  assert inverted.ravel()[stored.argmin()] == inverted.max()  # the minimum sample is white
  assert inverted.ravel()[stored.argmax()] == inverted.min()
  assert (inverted.min(), inverted.max()) == (plain.min(), plain.max())
  brain = image.window(inverted, *image.WINDOWS["brain"]).ravel()
  assert (brain[stored.argmin()], brain[stored.argmax()]) == (255, 0)
