"""Anatomy-based synthetic CT: tissue HU, bleeds where anatomy puts them, labels from masks,
determinism, and RSNA-style DICOM series that read back to the same HU in order."""

import csv
import itertools

import numpy as np
import pytest

from ichflax.data import anatomy as A  # noqa: N812
from ichflax.data import dicom, synth

SIZE = 128


@pytest.fixture(scope="module")
def atlas():
  return A.load_atlas()


@pytest.fixture(scope="module")
def bleeding():
  """One subject with all five subtypes and its thin-slice series (small matrix)."""
  rng = np.random.default_rng(7)
  subject = synth.make_subject(rng, (0, 1, 2, 3, 4))
  scanner = synth.Scanner(230.0, 2.0, "soft", 4.0, 0.8, 0.0, 0.04, "int16")
  slices, zs = synth.render_series(subject, scanner, SIZE, rng)
  return subject, scanner, slices, zs


def _builder(atlas, seed):
  rng = np.random.default_rng(seed)
  csf = np.clip(1 - (atlas.gm.astype(np.float32) + atlas.wm) / 255, 0, 1)
  return synth._Builder(atlas, np.zeros(atlas.label.shape, np.float32), csf, 40.0,
                        np.array([0.0, -1.0, 0.0]), rng)


def test_tissue_hu_is_drawn_around_literature_values(atlas):
  rng = np.random.default_rng(0)
  hu, _, _ = synth._render_brain(atlas, rng)
  gm, wm = atlas.gm > 245, atlas.wm > 245
  assert 30 <= np.median(hu[gm & (atlas.label == A.ICV)]) <= 46
  assert 18 <= np.median(hu[wm & (atlas.label == A.ICV)]) <= 34
  csf = (atlas.label == A.LATERAL_VENTRICLE) & (atlas.gm < 5) & (atlas.wm < 5)
  assert 0 <= np.median(hu[csf]) <= 15
  for _ in range(20):
    table = synth._hu_table(rng)
    assert 1300 <= table[A.INNER_TABLE] <= 1900 and 500 <= table[A.DIPLOE] < 1000
    assert -100 <= table[A.FAT] <= -50 and table[A.AIR] == -1000
    assert 35 <= table[A.MUSCLE] <= 55


def test_epidural_never_crosses_a_suture(atlas):
  for seed in range(6):
    b = _builder(atlas, seed)
    b.epidural()
    edh = (b.blood >> synth.EPIDURAL) & 1 > 0
    assert edh.sum() > 50
    assert len(np.unique(atlas.plate[edh])) == 1


def test_subdural_lies_inside_the_inner_table_outside_deep_brain(atlas):
  for seed in range(6):
    b = _builder(atlas, seed)
    b.subdural()
    sdh = (b.blood >> synth.SUBDURAL) & 1 > 0
    assert sdh.sum() > 50
    assert np.isin(atlas.label[sdh], A.INTRACRANIAL).all()
    assert not np.isin(atlas.label[sdh], (*A.VENTRICLES, A.DEEP_GREY, A.PALLIDUM)).any()
    x = np.argwhere(sdh)[:, 0] + atlas.origin[0]
    if (np.abs(x) > 3).mean() > 0.9:  # over the convexity: one side of the falx only
      assert (x > 0).all() or (x < 0).all()


def test_intraventricular_blood_stays_in_the_ventricles(atlas):
  for seed in range(4):
    b = _builder(atlas, seed)
    b.intraventricular()
    ivh = (b.blood >> synth.INTRAVENTRICULAR) & 1 > 0
    assert ivh.sum() > 50 and np.isin(atlas.label[ivh], A.VENTRICLES).all()


def test_labels_are_the_blood_in_each_slice(bleeding):
  _, scanner, slices, _ = bleeding
  pixel_mm2 = (scanner.fov_mm / SIZE) ** 2
  for s in slices:
    area = np.array([((s.subtypes >> i) & 1).sum() for i in range(5)]) * pixel_mm2
    np.testing.assert_array_equal(s.labels[:5], area >= synth.MIN_AREA_MM2)
    assert s.labels[5] == s.labels[:5].max()
  seen = np.array([s.labels for s in slices])
  assert seen[:, :5].max(0).tolist() == [1, 1, 1, 1, 1]
  assert (seen[:, 5] == 0).any()  # a positive subject has normal slices too


def test_adjacent_slices_agree(bleeding):
  _, _, slices, _ = bleeding
  """The smaller cross-section of a bleed lies mostly inside its neighbour's (a lens tangent to
  the slice plane shrinks fast at its pole, so union-based overlap would not hold there)."""
  for a, b in itertools.pairwise(slices):
    both, smaller = (a.mask & b.mask).sum(), min(a.mask.sum(), b.mask.sum())
    if smaller > 50:
      assert both / smaller > 0.5


def test_fixed_seed_is_deterministic():
  def one():
    rng = np.random.default_rng(11)
    subject = synth.make_subject(rng, (1,))
    scanner = synth.Scanner.sample(rng, subject.head_mm)
    return subject, synth.render_slice(subject, scanner, 20.0, 64, rng)
  (sa, a), (sb, b) = one(), one()
  np.testing.assert_array_equal(sa.hu, sb.hu)  # the whole head, not one slice's share of it
  np.testing.assert_array_equal(sa.blood, sb.blood)
  np.testing.assert_array_equal(a.hu, b.hu)
  np.testing.assert_array_equal(a.subtypes, b.subtypes)


def test_series_reads_back_as_the_same_hu_in_order(bleeding, tmp_path):
  _subject, scanner, slices, zs = bleeding
  (tmp_path / synth.phantom.IMAGES_DIR).mkdir()
  (tmp_path / synth.MASKS_DIR).mkdir()
  picked = slices[::6]
  uid = lambda part: synth.phantom._uid("test", part)
  rows = synth.write_series(tmp_path, picked, zs[::6], scanner, uid)
  inside = np.hypot(*np.meshgrid(*2 * [np.arange(SIZE) + 0.5 - SIZE / 2])) <= SIZE / 2
  positions = []
  for (image_id, _labels), s in zip(rows, picked):
    hu, geo = dicom.read_slice(tmp_path / synth.phantom.IMAGES_DIR / f"{image_id}.dcm")
    assert np.abs(hu - np.rint(s.hu))[inside].max() <= 0.5
    positions.append((geo.instance_number, geo.position_z))
  assert [p[0] for p in positions] == list(range(1, len(picked) + 1))
  assert np.all(np.diff([p[1] for p in positions]) > 0)  # base to vertex
  masks = np.load(tmp_path / synth.MASKS_DIR / f"{uid('series')}.npz")
  assert masks["ids"].tolist() == [r[0] for r in rows]


def test_a_limited_series_is_a_contiguous_run_of_the_full_one(bleeding):
  """A cut series renders only its slices, at consecutive positions of the whole series."""
  subject, scanner, _, zs = bleeding
  rng = np.random.default_rng(1)
  cut, cut_zs = synth.render_series(subject, scanner, 16, rng, limit=5)
  assert len(cut) == len(cut_zs) == 5
  start = int(np.argmin(np.abs(zs - cut_zs[0])))
  np.testing.assert_allclose(cut_zs, zs[start:start + 5])
  _, whole = synth.render_series(subject, scanner, 16, rng, limit=len(zs))
  np.testing.assert_allclose(whole, zs)


def test_write_rsna_matches_the_kaggle_layout(tmp_path):
  out = synth.write_rsna(tmp_path, 5, seed=1, size=64, workers=1, per_series=3)
  with open(out / synth.phantom.CSV_NAME) as fh:
    rows = list(csv.reader(fh))
  assert rows[0] == ["ID", "Label"] and len(rows) == 1 + 5 * 6
  assert rows[1][0].startswith("ID_") and rows[1][0].endswith("_epidural")
  assert len(list((out / synth.phantom.IMAGES_DIR).glob("*.dcm"))) == 5
  assert (out / synth.phantom.MARKER).exists()


def test_grey_matter_is_brighter_than_white_in_a_rendered_slice(atlas):
  """Cortex >= 5 HU above white matter at the level of the ventricles (real CT: 6-12 HU)."""
  rng = np.random.default_rng(3)
  subject = synth.make_subject(rng, ())
  scanner = synth.Scanner(230.0, 5.0, "soft", 4.0, 0.8, 0.0, 0.03, "int16")
  lo, hi = subject.z_range
  z = lo + 0.55 * (hi - lo)
  s = synth.render_slice(subject, scanner, z, SIZE, rng)
  axis = (np.arange(SIZE) + 0.5 - SIZE / 2) * scanner.fov_mm / SIZE
  yy, xx = np.meshgrid(axis, axis, indexing="ij")
  q = synth._atlas_points(subject, np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)]))
  gm, wm = (synth.ndimage.map_coordinates(v, q, order=0).reshape(SIZE, SIZE)
            for v in (atlas.gm, atlas.wm))
  assert (gm > 240).sum() > 50 and (wm > 240).sum() > 50
  assert s.hu[gm > 240].mean() - s.hu[wm > 240].mean() >= 5


def test_subdural_displaces_brain_on_its_side(atlas):
  """A large convexity SDH leaves less brain inside the skull on its side than on the other."""
  hu, csf, grey = synth._render_brain(atlas, np.random.default_rng(0))
  for seed in range(20):
    b = synth._Builder(atlas, hu.copy(), csf, grey, np.array([0.0, -1.0, 0.0]),
                       np.random.default_rng(seed))
    b.subdural()
    sdh = (b.blood >> synth.SUBDURAL) & 1 > 0
    x = np.argwhere(sdh)[:, 0] + atlas.origin[0]
    if (np.abs(x) > 3).mean() > 0.9 and sdh.sum() > 50000:
      break
  k = np.argmax(sdh.sum((0, 1)))
  brain = (atlas.label[:, :, k] == A.ICV) & (b.hu[:, :, k] > 15) & (b.hu[:, :, k] < 60)
  right = (np.arange(atlas.label.shape[0]) + atlas.origin[0] > 0)[:, None]
  bleed_right = x.mean() > 0
  bleed_side, other = (brain & (right == bleed_right)).sum(), (brain & (right != bleed_right)).sum()
  assert bleed_side < 0.92 * other


def test_write_rsna_hits_the_positive_share(tmp_path):
  out = synth.write_rsna(tmp_path, 6, seed=2, size=32, workers=1, per_series=3, positive=0)
  with open(out / synth.phantom.CSV_NAME) as fh:
    rows = [r for r in csv.reader(fh) if r[0].endswith("_any")]
  assert len(rows) == 6 and all(r[1] == "0" for r in rows)
  with pytest.raises(ValueError, match="positive"):
    synth.write_rsna(tmp_path, 6, positive=0.9)


def test_wide_scanner_ranges_reach_beyond_the_routine_ones():
  rng = np.random.default_rng(0)
  routine = [synth.Scanner.sample(rng, 130.0) for _ in range(400)]
  wide = [synth.Scanner.sample(rng, 130.0, wide=True) for _ in range(400)]
  assert max(s.slice_mm for s in routine) == 5.0 and {7.0, 10.0} <= {s.slice_mm for s in wide}
  bone = [np.mean([s.kernel == "bone" for s in scanners]) for scanners in (routine, wide)]
  assert bone[0] < 0.15 < 0.22 < bone[1]
  assert max(s.fov_mm for s in routine) <= 260 < max(s.fov_mm for s in wide)
  assert min(s.fov_mm for s in wide) < 180 <= min(s.fov_mm for s in routine)
