"""One input path: file kinds, the picture reader's refusals, and bit-identical model images
through a dataset build and through the Predictor's loading path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predictor import bad_files, png_bytes, write_dicom  # noqa: F401

from ichflax import tasks
from ichflax.data import builders, filetypes, image, inputs, items, phantom, rsna

SIZE = 32  # stored model image side in the builds below


@pytest.mark.parametrize("data, kind", [
    (png_bytes(np.zeros((4, 4), np.uint8)), filetypes.PNG),
    (png_bytes(np.zeros((8, 8, 3), np.uint8), "JPEG"), filetypes.JPEG),
    (png_bytes(np.zeros((4, 4), np.uint8), "GIF"), filetypes.GIF),
    (b"PK\x03\x04" + bytes(40), filetypes.ZIP),
    (bytes(128) + b"DICM" + bytes(8), filetypes.DICOM),
    (b"\x08\x00\x05\x00CS" + bytes(20), filetypes.DICOM),  # no preamble: group 0008 first
    (b"patient notes\n" * 20, None),
    (b"", None),
])
def test_sniff_by_content(data, kind):
  assert filetypes.sniff(data) == kind


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("make, message", [
    (lambda d: d / "empty.dcm", "empty file"),
    (lambda d: d / "notes.txt", "not a DICOM, PNG or JPG file"),
    (lambda d: d / "cut.dcm", "damaged or truncated"),
    (lambda d: d / "multi.dcm", "multi-frame"),
    (lambda d: d / "huge.png", "10000x10000 pixels"),
])
def test_bad_inputs_get_one_clear_error(make, message, bad_files):
  path = make(bad_files)
  with pytest.raises(items.InputError, match=message) as err:
    inputs.load_slice(path)
  assert path.name in str(err.value)


def _png16(path):
  Image.fromarray(np.full((16, 16), 3000, np.uint16)).save(path)
  return path


def test_pictures_16_bit_tiny_or_not_pictures_are_refused(tmp_path):
  with pytest.raises(items.InputError, match="has no display window"):
    inputs.load_slice(_png16(tmp_path / "deep.png"))
  with pytest.raises(items.InputError, match="1x5 pixels; too small"):
    inputs.load_slice(np.zeros((5, 1), np.uint8))
  dcm = write_dicom(tmp_path / "a.dcm", np.zeros((8, 8), np.float32))
  with pytest.raises(items.InputError, match="not a PNG or JPG image \\(a DICOM file\\)"):
    inputs.picture_slice(dcm)  # the PNG builds' route: content, not the name, decides


def test_picture_grey_and_rgb_agree():
  """Grey is the same picture as its RGB copy: one window reads both alike, three too."""
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (30, 50), np.uint8)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  for windows in (image.ONE_WINDOW, image.THREE_WINDOWS):
    np.testing.assert_array_equal(image.picture_to_model(grey, windows, SIZE),
                                  image.picture_to_model(rgb, windows, SIZE))
  out = image.picture_to_model(grey, image.ONE_WINDOW, SIZE)
  assert out.shape == (SIZE, SIZE, 1) and out[:6].max() == 0  # padded with black above


def _records(dataset_dir) -> dict[str, np.ndarray]:
  """image_id -> stored model image, over every split."""
  out = {}
  for split in rsna.SPLITS:
    source = builders.open_split(dataset_dir, split)
    out.update((r["image_id"], r["image"]) for r in (source[i] for i in range(len(source))))
  return out


def test_png_build_and_predictor_give_the_same_model_image(tmp_path):
  rng = np.random.default_rng(1)
  for group, name in enumerate([*tasks.SUBTYPES, "no"]):
    (tmp_path / "png" / name).mkdir(parents=True)
    for i in range(2):
      hu = phantom.make_slice(rng, 48, (group,) if group < 5 else ()).hu
      picture = image.window(hu, 40, 80)[:, 5:45]  # not square: padding and resize both act
      Image.fromarray(picture).save(tmp_path / "png" / name / f"{i}.png")
  rgb = image.slice_to_uint8(hu, image.THREE_WINDOWS, 60)[3:57]  # a colour JPEG too
  Image.fromarray(rgb).save(tmp_path / "png" / "no" / "colour.jpg", quality=90)
  deep = _png16(tmp_path / "png" / "no" / "deep.png")
  dataset_dir = builders.prepare(tmp_path / "png", size=SIZE, draw="by-patient",
                                 out=tmp_path / "out", workers=1)
  stored = _records(dataset_dir)
  assert len(stored) == 13
  for path in sorted((tmp_path / "png").glob("*/*.[pj][np]g")):
    if path == deep:
      continue
    group = [*tasks.SUBTYPES, "no"].index(path.parent.name)
    served = inputs.load_slice(path.read_bytes(), path.name, windows=image.THREE_WINDOWS,
                               stored_size=SIZE).model_image
    np.testing.assert_array_equal(stored[f"{group}_{path.stem}"], served, err_msg=str(path))
  # A picture serving refuses is skipped by the build, for the same reason.
  with pytest.raises(items.InputError) as refused:
    inputs.load_slice(deep)
  report = Path(builders.dataset_info(dataset_dir)["dataset_dir"]) / builders.REPORT_FILE
  assert f"{deep}: {refused.value.reason}" in report.read_text()


def test_dicom_build_and_predictor_give_the_same_model_image(tmp_path):
  root = phantom.write_rsna(tmp_path / "rsna", 30, seed=5, size=48, workers=1)
  dataset_dir = builders.build_rsna(root, tmp_path / "out", builders.BuildConfig(
      size=SIZE, draw="by-patient", workers=1))
  stored = _records(dataset_dir)
  assert len(stored) == 30
  for image_id, stored_image in stored.items():
    data = (root / phantom.IMAGES_DIR / f"{image_id}.dcm").read_bytes()
    served = inputs.load_slice(data, image_id, windows=image.THREE_WINDOWS, stored_size=SIZE)
    np.testing.assert_array_equal(stored_image, served.model_image, err_msg=image_id)
    assert served.geometry.sop_instance_uid == image_id
