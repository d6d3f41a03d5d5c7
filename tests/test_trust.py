"""Know what it doesn't know, through the Predictor and the CLI on a real trained checkpoint:
the domain statistics, temperatures and operating points stored by training, out-of-scope and
out-of-domain inputs refused with a reason, probabilities withheld unless revealed."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_predictor import predictor, tiny_checkpoint, write_dicom  # noqa: F401

from bench import pictures
from ichflax import checkpoint
from ichflax.data import image, phantom
from ichflax.serving import cli as predict
from ichflax.serving import predictor as predictor_lib
from ichflax.serving import series
from ichflax.trust import verdict


def _ct(seed: int, size: int = 64) -> np.ndarray:
  return phantom.make_slice(np.random.default_rng(seed), size, (4,)).hu


def _strict(p: predictor_lib.Predictor) -> predictor_lib.Predictor:
  """The same model with a domain threshold no input can pass."""
  domains = [dataclasses.replace(d, threshold=1e-9) for d in p.domains]
  return predictor_lib.Predictor(p.models, domains=domains)


def test_training_stores_domain_temperatures_and_operating_points(tiny_checkpoint):
  spec = checkpoint.read_spec(tiny_checkpoint)
  assert spec.calibrated and len(spec.temperatures) == len(spec.thresholds) == 6
  assert spec.target_sensitivity == 0.95 and spec.domain_percentile == 99.0
  assert spec.domain_threshold > 0
  arrays = checkpoint.read_domain(tiny_checkpoint)
  assert arrays["mean"].shape == (2048,) and arrays["components"].shape[0] == 2048
  report = Path(tiny_checkpoint).parent.parent / "report"
  md = (report / "report.md").read_text()
  assert "expected calibration error" in md and "operating point" in md
  assert (report / "reliability.png").stat().st_size > 1000
  calib = json.loads((report / "report.json").read_text())["calibration"]
  assert calib["reliability"]["after"]["ece"] <= calib["reliability"]["before"]["ece"] + 1e-9


def test_served_probabilities_are_temperature_scaled(predictor):
  raw = predictor_lib.Predictor([(m, s.replace(temperatures=())) for m, s in predictor.models])
  hu = _ct(1)
  calibrated, plain = predictor.predict([hu])[0], raw.predict([hu])[0]
  temps = dict(zip(predictor.specs[0].outputs, predictor.specs[0].temperatures))
  for label, p in plain.probabilities.items():
    logit = np.log(p / (1 - p))
    assert calibrated.probabilities[label] == pytest.approx(
        1 / (1 + np.exp(-logit / temps[label])), abs=1e-5)


def test_operating_points_are_used_unless_overridden(predictor):
  spec = predictor.specs[0]
  assert predictor.thresholds == dict(zip(spec.outputs, spec.thresholds))
  fixed = predictor_lib.Predictor(predictor.models, threshold=0.3, domains=predictor.domains)
  assert set(fixed.thresholds.values()) == {0.3}
  p = predictor.predict([_ct(2)])[0]
  assert p.label == verdict.decide(p.probabilities, predictor.thresholds)
  with pytest.raises(ValueError, match="threshold must be in"):
    predictor_lib.Predictor(predictor.models, threshold=1.5)


def test_out_of_scope_never_reaches_the_model(predictor, tmp_path):
  mr = write_dicom(tmp_path / "mr.dcm", _ct(3), Modality="MR")
  strip = np.zeros((8, 5000), np.uint8)
  preds = predictor.predict([mr, strip, _ct(4)])
  assert [p.status for p in preds[:2]] == [verdict.OUT_OF_SCOPE] * 2
  for p in preds[:2]:
    assert p.probabilities == {} and p.cam is None and p.reason
    assert set(p.to_json(reveal=True)) <= {"file", "status", "reason"}
  assert "Modality is MR" in preds[0].reason and preds[2].probabilities


def test_a_research_export_is_judged_with_a_note_on_how_it_was_read(predictor, tmp_path):
  from test_scope import _research_export
  ot = _research_export(tmp_path / "ot.dcm", np.rint(_ct(3)))
  p = predictor.predict([ot])[0]
  assert p.status != verdict.OUT_OF_SCOPE and p.probabilities
  assert p.note.startswith("Modality OT: read as CT") and p.to_json()["note"] == p.note
  assert "note" not in predictor.predict([_ct(4)])[0].to_json()  # an array: nothing to say


def test_a_picture_is_judged_on_its_shape_as_well_as_its_features(predictor):
  """A 2-up export passes every scope rule; only the picture statistics fitted at calibration
  refuse it (the feature check is switched off here: its threshold no input reaches)."""
  shape_only = predictor_lib.Predictor(predictor.models, domains=[
      dataclasses.replace(d, threshold=1e12) for d in predictor.domains])
  hu = pictures.phantom_hu(seed=8, subjects=1, levels=3, size=128)[1]
  brain = image.window(hu, *image.WINDOWS["brain"])
  one, two = shape_only.predict([brain, pictures.side_by_side(hu)])
  assert one.status == verdict.OK, one.reason
  assert two.status == verdict.OUT_OF_DOMAIN and "its shape" in two.reason, two.reason


def test_out_of_domain_withholds_unless_revealed(predictor):
  strict = _strict(predictor)
  p = strict.predict([_ct(5)])[0]
  assert p.status == verdict.OUT_OF_DOMAIN and p.domain_score > 1
  assert "synthetic phantom" in p.reason and "unlike" in p.reason
  hidden, shown = p.to_json(), p.to_json(reveal=True)
  assert "probabilities" not in hidden and "box" not in hidden and hidden["reason"]
  assert shown["revealed"] is True and set(shown["probabilities"]) == set(p.probabilities)
  assert predictor.predict([_ct(5)])[0].domain_score < p.domain_score  # the real threshold


def test_series_summary_only_over_judged_slices(predictor, tmp_path):
  preds = predictor.predict([write_dicom(tmp_path / "mr.dcm", _ct(6), Modality="MR"), _ct(7)])
  ok = [p for p in preds if p.status == verdict.OK]
  summary = series.summarise(preds, predictor.thresholds)
  if ok:
    assert summary["status"] == verdict.OK and "1 of 2 slices were not judged" in summary["reason"]
    assert summary["hemorrhage_probability"] == ok[0].probabilities["any"]
  nothing = series.summarise(preds[:1], predictor.thresholds)
  assert nothing["status"] == verdict.OUT_OF_SCOPE and "probabilities" not in nothing
  strict = _strict(predictor).predict([_ct(8), _ct(9)])
  assert series.summarise(strict)["status"] == verdict.OUT_OF_DOMAIN
  revealed = series.summarise(strict, reveal=True)
  assert revealed["status"] == verdict.OK and revealed["revealed"] is True


def test_cli_status_on_every_line(tiny_checkpoint, tmp_path, capsys):
  folder = tmp_path / "study"
  folder.mkdir()
  for i in range(3):
    write_dicom(folder / f"s{i}.dcm", _ct(10 + i), i, 5.0 * i)
  write_dicom(folder / "mr.dcm", _ct(13), 3, 15.0, Modality="MR")
  (folder / "broken.dcm").write_bytes(b"DICM but not really")
  photo = tmp_path / "photo.png"
  y, x = np.mgrid[0:90, 0:90]
  from PIL import Image
  Image.fromarray(np.stack([x * 2, y * 2, 255 - x], -1).astype(np.uint8)).save(photo)
  args = [str(folder), str(photo), "--checkpoint", str(tiny_checkpoint)]
  assert predict.main(args) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  slices = [r for r in lines if r["type"] != "series"]
  assert all(r["status"] in verdict.STATUSES for r in slices)
  by_name = {Path(r["file"]).name: r for r in slices}
  assert by_name["broken.dcm"]["status"] == verdict.ERROR and by_name["broken.dcm"]["reason"]
  for name in ("mr.dcm", "photo.png"):
    assert by_name[name]["status"] == verdict.OUT_OF_SCOPE and "probabilities" not in by_name[name]
  for r in slices:
    assert ("probabilities" in r) == (r["status"] == verdict.OK)
    assert ("reason" in r) == (r["status"] != verdict.OK)
  study, = [r for r in lines if r["type"] == "series"]
  assert study["slices"] == 4 and study["status"] in verdict.STATUSES


def test_cli_reveals_out_of_domain_on_request(tiny_checkpoint, tmp_path, capsys):
  """A copy of the checkpoint whose stored domain threshold no input passes."""
  strict = tmp_path / "strict"
  shutil.copytree(tiny_checkpoint, strict)
  checkpoint.write_trust(strict, checkpoint.read_spec(strict).replace(domain_threshold=1e-9),
                         checkpoint.read_domain(strict))
  image = tmp_path / "a.dcm"
  write_dicom(image, _ct(20))
  for flags, shown in (([], False), (["--show-out-of-domain"], True)):
    assert predict.main([str(image), "--checkpoint", str(strict), *flags]) == 0
    r, = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert r["status"] == verdict.OUT_OF_DOMAIN and "unlike" in r["reason"]
    assert ("probabilities" in r) == shown and r.get("revealed", False) == shown


def test_cli_threshold_override(tiny_checkpoint, tmp_path, capsys):
  image = tmp_path / "a.dcm"
  write_dicom(image, _ct(21))
  predict.main([str(image), "--checkpoint", str(tiny_checkpoint), "--threshold", "0.99",
                "--show-out-of-domain"])
  r, = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert set(r["thresholds"].values()) == {0.99}
  assert r["label"] == ("no hemorrhage" if r["probabilities"]["any"] < 0.99 else r["label"])


