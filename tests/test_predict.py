"""The predict CLI: JSON lines per slice, errors per file, a study summary per series folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predictor import SUBDURAL, bad_files, png_bytes, tiny_checkpoint, write_dicom  # noqa: F401
from test_sources import ZS, enhanced_ct, phantom_volume, write_nifti, write_series

from ichflax import tasks
from ichflax.data import image, phantom
from ichflax.serving import cli as predict
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
  errors = [r for r in lines if r.get("status") == "error"]
  slices = [r for r in lines if "probabilities" in r]
  studies = [r["study"] for r in lines if "study" in r]
  assert [Path(r["file"]).name for r in errors] == ["broken.dcm"]
  assert set(errors[0]) == {"file", "status", "reason"} and "broken.dcm: " in errors[0]["reason"]
  assert len(slices) == 4 and len(studies) == 1
  for r in slices:
    assert set(r) >= {"file", "probabilities", "hemorrhage_probability", "label", "box",
                      "box_kind", "cam_class", "gradcam"}
    assert set(r["probabilities"]) == set(tasks.LABELS)
    assert r["box"] is None or len(r["box"]) == 4  # None: the map has no positive evidence
    assert Image.open(r["gradcam"]).size == (r["width"], r["height"])
  assert len({r["gradcam"] for r in slices}) == 4
  in_series = [r for r in slices if "position_z" in r]
  assert [r["position_z"] for r in in_series] == [0.0, 5.0, 10.0]
  assert [r["slice_index"] for r in in_series] == [0, 1, 2]
  assert studies[0]["slices"] == 3
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
  with pytest.raises(SystemExit) as exit_:
    predict.main([str(image), "--checkpoint", str(tiny_checkpoint), "--cam-class", "kidney"])
  assert exit_.value.code == 2
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
  studies = [r["study"] for r in lines if "study" in r]
  assert [s["slices"] for s in studies] == [len(ZS)] * 4
  # Every slice judged (its status may be a scope or domain refusal: this tests reading).
  slices = [r for r in lines if "file" in r]
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
