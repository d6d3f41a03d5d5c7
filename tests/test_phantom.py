"""The synthetic head CT: labels, where each subtype's blood lies, and the RSNA-format files."""

import csv

import numpy as np
import pydicom
import pytest

from ichflax import tasks
from ichflax.data import dicom, phantom

SIZE = 128  # thin structures (sulci, skull) need a realistic pixel size


def _slice(subtypes, seed=0, size=SIZE):
  rng = np.random.default_rng(seed)
  a = phantom.Anatomy.sample(rng)
  return phantom.make_slice(rng, size, subtypes, a, level=0.5), phantom._frame(size, a)


def test_normal_slice_is_a_head():
  s, f = _slice(())
  assert s.hu.dtype == np.float32 and s.hu.shape == (SIZE, SIZE)
  np.testing.assert_array_equal(s.labels, np.zeros(6))
  assert not s.mask.any()
  assert np.median(s.hu[f.rho > 1.4]) < -900  # air around the head
  assert np.median(s.hu[(f.rho > 1.01) & (f.rho < 1.04)]) > 500  # skull
  brain = s.hu[(f.rho < 0.7) & (np.abs(f.u) > 0.3)]
  assert 15 < np.median(brain) < 45  # grey/white matter


@pytest.mark.parametrize("kind", range(5))
def test_each_subtype_labels_and_blood(kind):
  s, _ = _slice((kind,), seed=kind)
  expected = np.zeros(6, int)
  expected[[kind, tasks.ANY]] = 1
  np.testing.assert_array_equal(s.labels, expected)
  assert s.mask.sum() >= 3
  assert 40 < np.median(s.hu[s.mask]) < 100  # fresh blood, blurred by noise


def test_subtypes_lie_where_they_should():
  rho = lambda kind: _slice((kind,), seed=11)[1].rho[_slice((kind,), seed=11)[0].mask]
  # Extra-axial blood hugs the inner table; the epidural lens is thicker than the crescent.
  assert rho(phantom.EPIDURAL).min() > 0.75 and rho(phantom.SUBDURAL).min() > 0.85
  assert rho(phantom.SUBARACHNOID).min() > 0.3
  assert rho(phantom.INTRAPARENCHYMAL).max() < 0.9
  # Intraventricular blood sits in the ventricles, layered at the bottom (gravity: image y).
  s, f = _slice((phantom.INTRAVENTRICULAR,), seed=11)
  assert rho(phantom.INTRAVENTRICULAR).max() < 0.5
  vent = phantom._ventricles(f, phantom.Anatomy.sample(np.random.default_rng(11)), 0.5) > 0.5
  assert f.y[s.mask].mean() > f.y[vent].mean()


def test_normal_slices_have_blood_bright_structures():
  # Brightness alone cannot separate blood: normal anatomy also reaches 50-90 HU.
  bright = [((s.hu > 50) & (s.hu < 90) & (f.rho < 0.98)).sum()
            for s, f in (_slice((), seed=i, size=128) for i in range(4))]
  assert min(bright) > 10


def test_deterministic_and_two_subtypes():
  a, _ = _slice((phantom.SUBDURAL, phantom.SUBARACHNOID), seed=5)
  b, _ = _slice((phantom.SUBDURAL, phantom.SUBARACHNOID), seed=5)
  np.testing.assert_array_equal(a.hu, b.hu)
  assert a.labels.tolist() == [0, 0, 0, 1, 1, 1]
  rng = np.random.default_rng(0)
  draws = [phantom.sample_subtypes(rng) for _ in range(600)]
  assert 150 < sum(not d for d in draws) < 250  # a third normal
  assert any(len(d) == 2 for d in draws)
  with pytest.raises(ValueError, match="unknown subtype index 7"):
    phantom.make_slice(rng, SIZE, (7,))


def test_write_rsna_format(tmp_path):
  size = 64
  out = phantom.write_rsna(tmp_path, 14, seed=2, size=size, workers=1)
  files = sorted((out / phantom.IMAGES_DIR).glob("*.dcm"))
  assert len(files) == 14
  with open(out / phantom.CSV_NAME) as fh:
    rows = list(csv.reader(fh))
  assert rows[0] == ["ID", "Label"] and len(rows) == 1 + 6 * 14
  assert [r[0].rsplit("_", 1)[1] for r in rows[1:7]] == list(tasks.LABELS)
  ids = {r[0].rsplit("_", 1)[0] for r in rows[1:]}
  assert ids == {p.stem for p in files}
  studies = {}
  with pydicom.config.disable_value_validation():  # RSNA UIDs are "ID_<hex>"
    for path in files:
      ds = pydicom.dcmread(path)
      assert ds.SOPInstanceUID == path.stem and ds.SOPInstanceUID.startswith("ID_")
      assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2"
      assert ds.BitsAllocated == 16 and ds.BitsStored in (12, 16)
      assert ds.PatientID.startswith("ID_") and len(ds.PixelSpacing) == 2
      assert ds.Rows == ds.Columns == size
      studies.setdefault(ds.StudyInstanceUID, []).append(int(ds.InstanceNumber))
      hu = dicom.read_hu(path)
      assert hu.min() >= -1024 and np.median(hu[size // 2 - 4:size // 2 + 4]) > -100
  assert 1 < len(studies) < 14  # slices grouped into studies
  assert all(sorted(n) == list(range(1, len(n) + 1)) for n in studies.values())
  with pytest.raises(ValueError, match="at least 1"):
    phantom.write_rsna(tmp_path, 0)
