"""NIfTI volumes: orientation as a DICOM viewer shows it, and every refusal with its reason."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from test_sources import ZS, phantom_volume, write_nifti

from ichflax.data import image, nifti
from ichflax.data.items import InputError


def _volume(path) -> nifti.Volume:
  return nifti.Volume(path.read_bytes(), path.name)


@pytest.mark.parametrize("perm,flips", [((0, 1, 2), ()), ((1, 0, 2), (0,)), ((2, 1, 0), (1, 2)),
                                        ((2, 0, 1), (0, 1, 2))])
def test_any_axis_order_reads_as_the_viewer_shows_it(tmp_path, perm, flips):
  volume = phantom_volume(size=32, n=3)
  volume[:, 0, -1] = 1500  # a marker: patient's left, anterior (top right on screen)
  v = _volume(write_nifti(tmp_path / "v.nii.gz", volume, perm, flips, zs=ZS[:3]))
  got = np.stack([v.hu(k) for k in range(v.frames)])
  np.testing.assert_array_equal(got, volume)
  assert [g.position_z for g in v.geometries] == pytest.approx(ZS[:3])
  assert all(g.series_instance_uid == "nifti:v.nii.gz" for g in v.geometries)


def test_scaled_voxels_become_hu(tmp_path):
  volume = phantom_volume(size=16, n=2)
  img = nib.Nifti1Image(((volume + 1024) / 2).astype(np.int16).transpose(2, 1, 0)[::-1, ::-1],
                        np.diag([0.5, 0.5, 5, 1]))
  img.header.set_slope_inter(2.0, -1024.0)
  nib.save(img, tmp_path / "scaled.nii")
  v = _volume(tmp_path / "scaled.nii")
  np.testing.assert_allclose(v.hu(1), np.maximum(volume[1] // 2 * 2, image.AIR_FILL_HU), atol=2)


@pytest.mark.parametrize("make,reason", [
    (lambda v: nib.Nifti1Image(np.stack([v, v], -1).astype(np.int16), np.eye(4)),
     "is a 4-D volume (16 x 16 x 2 x 2)"),
    (lambda v: nib.Nifti1Image(((v + 1024) / 16).clip(0, 255).astype(np.uint8),
                               np.diag([0.5, 0.5, 5, 1])),
     "holds values from 0 to"),
    (lambda v: nib.Nifti1Image(v.astype(np.int16), np.diag([0.5, 0.5, 0.001, 1])),
     "has an unusable affine"),
    (lambda v: nib.Nifti1Image(v.astype(np.int16), np.diag([0.5, 900, 0.5, 1])),
     "has an unusable affine"),
    (lambda v: nib.Nifti1Image(v.astype(np.int16), np.diag([0.5, 5.0, 0.5, 1])),
     "was acquired in the coronal plane (voxels 0.5 x 5 x 0.5 mm)"),
])
def test_volumes_the_model_cannot_read_are_refused_with_a_reason(tmp_path, make, reason):
  v = phantom_volume(size=16, n=2).transpose(2, 1, 0)
  path = tmp_path / "bad.nii.gz"
  nib.save(make(v), path)
  with pytest.raises(InputError, match="bad.nii.gz") as err:
    _volume(path)
  assert reason in err.value.reason


def test_a_gzip_that_declares_too_much_is_refused_before_unzipping(tmp_path):
  path = write_nifti(tmp_path / "v.nii.gz", phantom_volume(size=32, n=3), zs=ZS[:3])
  with pytest.raises(InputError, match="MB of voxels, over the"):
    nifti.Volume(path.read_bytes(), "v.nii.gz", max_bytes=1000)
  with pytest.raises(InputError, match="not a readable .nii.gz"):
    nifti.Volume(gzip.compress(b"x" * 600)[:-20], "cut.nii.gz")
  with pytest.raises(InputError, match="not a NIfTI volume"):
    nifti.Volume(gzip.compress(b"x" * 600), "other.gz")
