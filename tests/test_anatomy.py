"""The shipped head atlas: rebuilt from nilearn's MNI template it is the same, and its skull
has the anatomy the synthetic CT relies on (plates split by sutures, thin temporal squama)."""

import numpy as np
import pytest

from ichflax.data import anatomy as A  # noqa: N812


@pytest.fixture(scope="module")
def atlas():
  return A.load_atlas()


def test_asset_equals_a_fresh_build_from_nilearn(atlas):
  pytest.importorskip("nilearn", reason="nilearn (requirements-dev.txt) rebuilds the atlas")
  fresh = A.build_volumes(*A._template())
  for name, value in fresh.arrays().items():
    np.testing.assert_array_equal(getattr(atlas, name), value, err_msg=name)


def test_notice_ships_beside_the_asset():
  assert "McConnell Brain Imaging Centre" in (A.ASSET.parent / "NOTICE").read_text()


def _bone_run(atlas, start, step):
  """Bone voxels met walking from an ICV point outwards along `step`."""
  p, n = np.array(start, float), 0
  while True:
    p += step
    i = tuple(np.rint(p).astype(int))
    if min(i) < 0 or any(a >= b for a, b in zip(i, atlas.label.shape)):
      return n
    n += atlas.label[i] in A.BONE


def test_skull_is_thin_at_the_temporal_squama_and_thick_at_the_occiput(atlas):
  centre = np.array([0.0, -18.0, 8.0]) - atlas.origin
  temporal = _bone_run(atlas, centre + [40, 0, -10], np.array([1.0, 0, 0]))
  occipital = _bone_run(atlas, centre + [0, -60, 10], np.array([0, -1.0, 0]))
  assert 1 <= temporal <= 4 < 7 <= occipital


def test_sutures_lie_where_the_plates_meet(atlas):
  """Each suture voxel has bone of two plates within 2 mm: an epidural bleed stops there."""
  suture = np.argwhere(atlas.label == A.SUTURE)
  assert len(suture) > 1000
  sample = suture[::max(len(suture) // 300, 1)]
  two = [len(np.unique(atlas.plate[a - 2:a + 3, b - 2:b + 3, c - 2:c + 3])) >= 2
         for a, b, c in sample]
  assert np.mean(two) > 0.95


def test_ventricles_are_deep_and_in_the_brain(atlas):
  vent = np.isin(atlas.label, A.VENTRICLES)
  assert vent.sum() > 15000
  assert np.median(atlas.depth[vent]) > 15


def test_face_is_soft_tissue_around_air_spaces_not_a_bone_block(atlas):
  """Below the orbits a real CT shows muscle and fat around the maxillary sinuses and nasal
  cavity, with thin bony walls; a solid block of bone there is not a face."""
  i, j, k = np.meshgrid(*(np.arange(n) for n in atlas.label.shape), indexing="ij")
  x, y, z = atlas.mni(i, j, k)
  face = (z > -70) & (z < -55) & (y > 0) & (atlas.label != A.AIR)
  share = {n: (atlas.label[face] == n).mean() for n in (A.MUSCLE, A.FACE_BONE, A.SINUS_AIR)}
  assert share[A.MUSCLE] > 0.35 and share[A.FACE_BONE] < 0.25 and share[A.SINUS_AIR] > 0.1
  for side in (-1, 1):  # a maxillary sinus on each side, an ear canal lateral to each petrous
    assert atlas.label[tuple(np.rint(np.array([side * 23, 42, -62]) - atlas.origin).astype(
        int))] == A.SINUS_AIR
    canal = (atlas.label == A.SINUS_AIR) & (side * x > 50) & (np.abs(z + 40) < 4)
    assert canal.sum() > 100
