"""The predict CLI: typed records (slice, error, series) as JSON lines, CSV or Kaggle rows."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predictor import SUBDURAL, bad_files, png_bytes, tiny_checkpoint, write_dicom  # noqa: F401
from test_sources import ZS, enhanced_ct, phantom_volume, write_nifti, write_series

from ichflax import tasks
from ichflax.checkpoint import discover
from ichflax.data import image, phantom
from ichflax.serving import cli as predict
from ichflax.serving import records
from ichflax.trust import verdict


def test_cli_schema(tiny_checkpoint, tmp_path, capsys):
  rng = np.random.default_rng(4)
  folder = tmp_path / "series"
  folder.mkdir()
  for i, z in enumerate([10.0, 0.0, 5.0]):
    write_dicom(folder / f"s{i}.dcm", phantom.make_slice(rng, 64, (SUBDURAL,)).hu, i, z)
  (folder / "broken.dcm").write_bytes(b"DICM but not really")
  loose = tmp_path / "s0.png"  # same stem as a series slice: its Grad-CAM must not overwrite
  loose.write_bytes(png_bytes(image.window(phantom.make_slice(rng, 64).hu, 40, 80)))
  cams = tmp_path / "cams"
  # The tiny model may find fresh slices unlike its 8 training slices: reveal them too.
  code = predict.main([str(folder), str(loose), "--checkpoint", str(tiny_checkpoint),
                       "--gradcam", str(cams), "--show-out-of-domain"])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert code == 0
  assert {r["type"] for r in lines} == {"slice", "error", "series"}
  errors = [r for r in lines if r["type"] == "error"]
  slices = [r for r in lines if r["type"] == "slice"]
  studies = [r for r in lines if r["type"] == "series"]
  assert [Path(r["file"]).name for r in errors] == ["broken.dcm"]
  assert set(errors[0]) == {"type", "file", "status", "reason"}
  assert "broken.dcm: " in errors[0]["reason"]
  assert len(slices) == 4 and len(studies) == 1
  for r in slices:
    assert set(r) >= {"file", "probabilities", "hemorrhage_probability", "label", "box",
                      "box_kind", "cam_class", "gradcam", "thresholds", "positive"}
    assert set(r["probabilities"]) == set(r["positive"]) == set(tasks.LABELS)
    assert all(round(v, 4) == v for v in r["probabilities"].values())  # 4 places, no more
    named = set(r["label"].split(" + ")) & set(tasks.SUBTYPES)
    assert named == {k for k in tasks.SUBTYPES if r["positive"][k]}  # flags = the label
    assert r["box"] is None or len(r["box"]) == 4  # None: the map has no positive evidence
    assert Image.open(r["gradcam"]).size == (r["width"], r["height"])
  assert len({r["gradcam"] for r in slices}) == 4
  in_series = [r for r in slices if "position_z" in r]
  assert [r["position_z"] for r in in_series] == [0.0, 5.0, 10.0]
  assert [r["slice_index"] for r in in_series] == [0, 1, 2]
  assert studies[0]["slices"] == 3
  assert (studies[0]["source"], studies[0]["series_instance_uid"]) == (str(folder), "ID_series")
  assert {r["sop_instance_uid"] for r in in_series} == {"ID_test000", "ID_test001", "ID_test002"}
  assert studies[0]["hemorrhage_probability"] == max(r["hemorrhage_probability"]
                                                     for r in in_series)


def test_cli_fails_only_when_nothing_reads(tiny_checkpoint, bad_files, capsys):
  code = predict.main([str(bad_files / "empty.dcm"), str(bad_files / "notes.txt"),
                       "--checkpoint", str(tiny_checkpoint)])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert code == 1
  assert [Path(r["file"]).name for r in lines] == ["empty.dcm", "notes.txt"]
  assert all(r["status"] == "error" and r["file"] in r["reason"] for r in lines)


def test_cli_missing_checkpoint_says_so(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    predict.main([str(tmp_path), "--checkpoint", str(tmp_path / "nope")])
  assert exit_.value.code == 2
  assert "no checkpoint at" in capsys.readouterr().err


def test_cli_unknown_cam_class_names_the_labels(tiny_checkpoint, tmp_path, capsys):
  image = tmp_path / "a.png"
  image.write_bytes(png_bytes(np.full((40, 40), 90, np.uint8)))
  assert predict.main([str(image), "--checkpoint", str(tiny_checkpoint), "--cam-class",
                       "kidney"]) == 2
  assert "'kidney' is not a label" in capsys.readouterr().err



def test_cli_reads_zips_volumes_and_nested_folders_as_series(tiny_checkpoint, tmp_path, capsys):
  """What the app reads, the CLI reads: one study summary per series, slices in z order."""
  volume = phantom_volume(size=32)
  folder = write_series(tmp_path / "export" / "PAT" / "SE1", volume)
  zipped = tmp_path / "series.zip"
  with zipfile.ZipFile(zipped, "w") as zf:
    for f in sorted(folder.iterdir()):
      zf.write(f, f.name)
  inputs = [tmp_path / "export", zipped, enhanced_ct(tmp_path / "enhanced.dcm", volume),
            write_nifti(tmp_path / "v.nii.gz", volume)]
  code = predict.main([*map(str, inputs), "--checkpoint", str(tiny_checkpoint),
                       "--batch-size", "3"])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert code == 0
  studies = [r for r in lines if r["type"] == "series"]
  assert [s["slices"] for s in studies] == [len(ZS)] * 4
  # Every slice judged (its status may be a scope or domain refusal: this tests reading).
  slices = [r for r in lines if r["type"] != "series"]
  assert len(slices) == 4 * len(ZS) and not [r for r in slices if r["status"] == "error"]
  for i in range(4):
    run = slices[i * len(ZS):(i + 1) * len(ZS)]
    assert [r["position_z"] for r in run] == pytest.approx(list(ZS))
    assert [r["slice_index"] for r in run] == list(range(len(ZS)))
  assert {r["frame"] for r in slices if r["file"].endswith("v.nii.gz")} == {1, 2, 3, 4}
  assert slices[len(ZS)]["file"].startswith(str(zipped) + "/")


def test_cli_threshold_changes_the_label(tiny_checkpoint, tmp_path, capsys):
  # A head slice the scope check passes; the tiny model may find it out of domain, so its
  # probabilities are revealed: the label still follows the threshold given.
  image = write_dicom(tmp_path / "a.dcm", phantom.make_slice(np.random.default_rng(5), 256).hu)

  def run(threshold: str) -> dict:
    assert predict.main([str(image), "--checkpoint", str(tiny_checkpoint), "--threshold",
                         threshold, "--show-out-of-domain"]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[0])

  p_any = run("0.5")["probabilities"]["any"]
  # Thresholds just above and below this slice's own P(hemorrhage): the label must follow,
  # naming every subtype at or over the one threshold, most likely first.
  low = p_any / 2
  never, always = run(str((1 + p_any) / 2)), run(str(low))
  assert never["probabilities"] == always["probabilities"]
  assert never["label"] == verdict.NO_HEMORRHAGE
  over = sorted((k for k in tasks.SUBTYPES if always["probabilities"][k] >= low),
                key=lambda k: -always["probabilities"][k])
  assert always["label"] == (" + ".join(over) or "hemorrhage")


def _series(tmp_path: Path, n: int = 3) -> Path:
  folder = tmp_path / "series"
  folder.mkdir()
  rng = np.random.default_rng(8)
  for i in range(n):
    write_dicom(folder / f"s{i}.dcm", phantom.make_slice(rng, 64, (SUBDURAL,)).hu, i, 5.0 * i)
  return folder


def test_cli_csv_to_a_file(tiny_checkpoint, tmp_path, capsys):
  folder = _series(tmp_path)
  (folder / "broken.dcm").write_bytes(b"not a DICOM")
  out = tmp_path / "answers.csv"
  assert predict.main([str(folder), "--checkpoint", str(tiny_checkpoint), "--format", "csv",
                       "-o", str(out), "--show-out-of-domain"]) == 0
  assert capsys.readouterr().out == ""  # everything went to the file
  rows = list(csv.DictReader(out.open()))
  assert [r["type"] for r in rows] == ["error", "slice", "slice", "slice", "series"]
  for r in rows[1:]:
    assert 0.0 <= float(r["p_any"]) <= 1.0 and r["positive_any"] in ("True", "False")
    assert {f"p_{k}" for k in tasks.LABELS} <= set(r)
  assert rows[0]["reason"].startswith(str(folder / "broken.dcm"))
  assert rows[-1]["series_instance_uid"] == "ID_series" and rows[-1]["slices"] == "3"
  assert [r["position_z"] for r in rows[1:4]] == ["0.0", "5.0", "10.0"]  # series order kept


def test_cli_kaggle_submission(tiny_checkpoint, tmp_path, capsys):
  """The RSNA 2019 format: ID_<SOPInstanceUID>_<label>,probability, six rows per slice."""
  out = tmp_path / "submission.csv"
  folder = _series(tmp_path)
  (folder / "broken.dcm").write_bytes(b"not a DICOM")
  args = [str(folder), "--checkpoint", str(tiny_checkpoint), "--format", "kaggle", "-o", str(out)]
  assert predict.main(args) == 0
  assert "1 records have no kaggle row" in capsys.readouterr().err
  lines = out.read_text().splitlines()
  assert lines[0] == "ID,Label" and len(lines) == 1 + 3 * 6
  ids = [line.split(",")[0] for line in lines[1:]]
  assert ids[:6] == [f"ID_test000_{k}" for k in tasks.LABELS]
  assert all(0.0 <= float(line.split(",")[1]) <= 1.0 for line in lines[1:])
  assert predict.main([*args, "--strict"]) == 3  # the unreadable file made no row


def test_kaggle_format_needs_all_six_labels():
  with pytest.raises(ValueError, match="all six RSNA labels.*lack epidural"):
    records.KaggleWriter(io.StringIO(), ("any",))


def test_cli_strict_fails_when_a_file_fails(tiny_checkpoint, bad_files, tmp_path, capsys):
  folder = _series(tmp_path, n=1)
  args = [str(folder), str(bad_files / "notes.txt"), "--checkpoint", str(tiny_checkpoint)]
  assert predict.main(args) == 0
  assert predict.main([*args, "--strict"]) == 3
  assert predict.main([str(folder), "--checkpoint", str(tiny_checkpoint), "--strict"]) == 0


def test_cli_checkpoint_defaults_as_the_apps(tiny_checkpoint, tmp_path, monkeypatch, capsys):
  folder = _series(tmp_path, n=1)
  monkeypatch.setenv(discover.ENV, str(tiny_checkpoint))
  assert predict.main([str(folder)]) == 0
  assert json.loads(capsys.readouterr().out.splitlines()[0])["type"] == "slice"
  monkeypatch.delenv(discover.ENV)
  monkeypatch.setattr(discover, "DEFAULT_DIR", tmp_path / "none")
  with pytest.raises(SystemExit) as exit_:
    predict.main([str(folder)])
  assert exit_.value.code == 2 and "no checkpoint given" in capsys.readouterr().err
