"""Temperature scaling, operating points, ECE and the domain model on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bench import pictures
from ichflax.data import image, inputs, phantom
from ichflax.trust import calibration, domain, scope


def _overconfident(rng, n=4000, k=3, scale=3.0):
  """Labels drawn from sigmoid(z); the 'model' reports scale * z: over-confident by `scale`."""
  z = rng.normal(0, 1.5, (n, k))
  targets = (rng.random((n, k)) < 1 / (1 + np.exp(-z))).astype(np.float32)
  return scale * z, targets


def test_temperature_recovers_the_overconfidence_and_lowers_nll_and_ece():
  logits, targets = _overconfident(np.random.default_rng(0))
  t = calibration.fit_temperatures(logits, targets, "sigmoid")
  assert len(t) == 3 and all(2.6 < v < 3.4 for v in t)
  assert (calibration.nll(logits, targets, "sigmoid", t)
          < calibration.nll(logits, targets, "sigmoid") - 0.02)
  before = calibration.reliability(calibration.probabilities(logits, "sigmoid"), targets)
  after = calibration.reliability(calibration.probabilities(logits, "sigmoid", t), targets)
  assert after["ece"] < before["ece"] / 2 and sum(after["count"]) == targets.size


def test_softmax_shares_one_temperature():
  rng = np.random.default_rng(1)
  z = rng.normal(0, 2, (3000, 5))
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  targets = np.eye(5)[[rng.choice(5, p=row) for row in p]]
  t = calibration.fit_temperatures(0.5 * z, targets, "softmax")  # under-confident by 2
  assert len(set(t)) == 1 and 0.4 < t[0] < 0.6


def test_operating_threshold_reaches_the_target_sensitivity():
  rng = np.random.default_rng(2)
  probs = rng.random((500, 2))
  targets = (rng.random((500, 2)) < probs).astype(int)
  targets[:, 1] = 0  # no positive at all: stays at 0.5
  thr = calibration.operating_thresholds(probs, targets, 0.9)
  sens = calibration.sensitivity_specificity(probs, targets, thr)
  assert sens[0]["sensitivity"] >= 0.9
  # The highest such threshold: a hair above it, sensitivity falls below the target.
  assert calibration.sensitivity_specificity(probs, targets, [thr[0] + 1e-9, 0.5])[0][
      "sensitivity"] < 0.9
  assert thr[1] == 0.5 and sens[1]["sensitivity"] is None
  with pytest.raises(ValueError, match="target sensitivity"):
    calibration.operating_thresholds(probs, targets, 0.0)


def test_domain_flags_shifted_features_and_passes_fresh_ones():
  rng = np.random.default_rng(3)
  basis = rng.normal(size=(8, 256))
  def draw(n, shift=0.0):  # features on an 8-d subspace plus a little isotropic noise
    return rng.normal(size=(n, 8)) @ basis + 0.1 * rng.normal(size=(n, 256)) + shift
  def stats(n):
    return rng.normal(size=(n, 6))
  model = domain.fit(draw(2000), stats(2000), stats(2000)[:, :5], components=8).calibrated(
      draw(500), stats(500), stats(500)[:, :5])
  fresh = np.mean(model.score(draw(2000)) > model.threshold)
  assert fresh < 0.03
  off_subspace = draw(200) + 0.5 * rng.normal(size=(200, 256))  # a new texture, same mean
  assert np.mean(model.score(off_subspace) > model.threshold) > 0.95
  back = domain.DomainModel.from_arrays(model.arrays(), model.threshold, model.percentile,
                                        model.image.threshold, model.picture.threshold)
  np.testing.assert_allclose(back.score(off_subspace), model.score(off_subspace), rtol=1e-5)
  np.testing.assert_allclose(back.picture.points, model.picture.points)
  assert back.picture.threshold == model.picture.threshold
  old = {k: v for k, v in model.arrays().items() if not k.startswith("picture")}
  assert domain.DomainModel.from_arrays(old, 1.0, 99.0, 1.0).picture is None  # before pictures


def _stored(hu: np.ndarray) -> np.ndarray:
  return image.slice_to_uint8(hu, image.THREE_WINDOWS, 64)


def test_image_statistics_flag_a_wider_field_of_view_and_pass_fresh_slices():
  """The model-independent half of the domain check, on phantom slices as training stores them."""
  rng = np.random.default_rng(6)
  def slices(n):
    return np.stack([_stored(phantom.make_slice(rng, 128, phantom.sample_subtypes(rng)).hu)
                     for _ in range(n)])
  train, val = slices(300), slices(100)
  model = domain.Gaussian.fit(domain.image_statistics(train)).calibrated(
      domain.image_statistics(val), domain.PERCENTILE)
  fresh = model.far(domain.image_statistics(slices(100)))
  assert np.mean(fresh > 1) < 0.05
  wide = []  # a 350 mm field instead of 230 mm: the head fills far less of the image
  for _ in range(20):
    hu = phantom.make_slice(rng, 128).hu
    small = np.full_like(hu, -1024.0)
    inner = ndimage.zoom(hu, 230 / 350, order=1)
    o = (128 - inner.shape[0]) // 2
    small[o:o + inner.shape[0], o:o + inner.shape[1]] = inner
    wide.append(_stored(small))
  far = model.far(domain.image_statistics(np.stack(wide)))
  assert np.all(far > 1)


def test_picture_shapes_pass_fresh_exports_and_flag_two_slices_side_by_side():
  """The picture half of the domain check, fitted as calibration fits it (the brain window of
  stored anatomy-phantom slices): fresh slices exported as pictures pass; two slices side by
  side (a viewer's 2-up export), which every scope rule lets through, are too far."""
  def stored(hus):
    return np.stack([image.slice_to_uint8(h, image.THREE_WINDOWS, 128) for h in hus])
  def shapes(pictures):
    return domain.picture_statistics(np.stack(
        [image.picture_to_model(p, image.THREE_WINDOWS, 128) for p in pictures]))
  train = domain.picture_statistics(stored(pictures.phantom_hu(1, 20, 8, 160)))
  val = domain.picture_statistics(stored(pictures.phantom_hu(2, 6, 8, 160)))
  model = domain.Neighbours.fit(train).calibrated(val, domain.PERCENTILE)
  fresh = pictures.phantom_hu(3, 3, 8, 192)
  for name in ("brain window", "three windows RGB", "JPEG q20", "double size"):
    far = model.far(shapes([pictures.exports(hu)[name] for hu in fresh]))
    assert np.mean(far > 1) <= 0.1, (name, far)
  two_up = [pictures.side_by_side(hu) for hu in fresh[2:8]]
  assert all(scope.check(inputs.load_slice(p)) is None for p in two_up)
  assert np.all(model.far(shapes(two_up)) > 1)


def test_a_temperature_that_worsens_ece_is_dropped():
  logits, targets = _overconfident(np.random.default_rng(4), k=2, scale=1.0)  # calibrated already
  worse = calibration.keep_if_better(logits, targets, "sigmoid", (3.0, 1.0 / 3.0))
  assert worse == (1.0, 1.0)
  over, t = _overconfident(np.random.default_rng(5), k=1, scale=3.0)
  assert calibration.keep_if_better(over, t, "sigmoid", (3.0,)) == (3.0,)


def test_risk_coverage_withholds_the_farthest_slices_first(tmp_path):
  """Slices far from the training domain that the model gets wrong: withholding them raises
  accuracy and AUC on what is answered, and the report prints the table and draws the plot."""
  from ichflax.evaluation import report
  from ichflax.trust import calibrate
  rng = np.random.default_rng(0)
  n = 400
  targets = rng.integers(0, 2, (n, 2)).astype(np.float32)
  far = rng.uniform(0, 2, n)
  right = np.where(targets > 0.5, 0.8, 0.2)
  probs = np.where((far > 1.6)[:, None], 1 - right, right) + rng.normal(0, 0.05, (n, 2))
  rows = calibrate.risk_coverage(probs, targets, ("subdural", "any"), (0.5, 0.5), far)
  assert [r["withheld"] for r in rows] == list(calibrate.WITHHELD)
  assert rows[0]["coverage"] == 1 and rows[-1]["coverage"] == pytest.approx(0.5)
  assert rows[0]["accuracy"] < 0.85 and rows[5]["accuracy"] > 0.97  # 20 % far ones wrong
  assert rows[5]["auc"] > rows[0]["auc"] + 0.1
  summary = {"data": "x", "nll": {"before": 1, "after": 1}, "target_sensitivity": 0.95,
             "reliability": {s: {"ece": 0.1, "count": [1], "confidence": [0.5],
                                 "frequency": [0.5]} for s in ("before", "after")},
             "temperatures": {}, "thresholds": {}, "validation": {},
             "domain": {"train_n": 1, "components": 1, "percentile": 99, "threshold": 1,
                        "image_threshold": 1, "validation_flagged": 0.01},
             "risk_coverage": rows}
  paths = report.write_calibration(summary, tmp_path, "multilabel")
  md = paths["md"].read_text()
  assert "| withheld | percentile | answered | accuracy | AUC |" in md and "| 20 % | 80 |" in md
  assert paths["risk_coverage_png"].stat().st_size > 1000
