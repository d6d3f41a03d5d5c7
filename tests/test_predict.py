"""The predict CLI: JSON lines per slice, errors per file, a study summary per series folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predictor import SUBDURAL, bad_files, png_bytes, tiny_checkpoint, write_dicom  # noqa: F401

from ichflax import predict, tasks
from ichflax import predictor as predictor_lib
from ichflax.data import phantom


def test_cli_schema(tiny_checkpoint, tmp_path, capsys):
  rng = np.random.default_rng(4)
  folder = tmp_path / "series"
  folder.mkdir()
  for i, z in enumerate([10.0, 0.0, 5.0]):
    write_dicom(folder / f"s{i}.dcm", phantom.make_slice(rng, 64, (SUBDURAL,)).hu, i, z)
  (folder / "broken.dcm").write_bytes(b"DICM but not really")
  loose = tmp_path / "s0.png"  # same stem as a series slice: its Grad-CAM must not overwrite
  loose.write_bytes(png_bytes(np.full((40, 60), 90, np.uint8)))
  cams = tmp_path / "cams"
  code = predict.main([str(folder), str(loose), "--checkpoint", str(tiny_checkpoint),
                       "--gradcam", str(cams)])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert code == 0
  errors = [r for r in lines if "error" in r]
  slices = [r for r in lines if "probabilities" in r]
  studies = [r["study"] for r in lines if "study" in r]
  assert [Path(r["file"]).name for r in errors] == ["broken.dcm"]
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
  assert all(r["error"] for r in lines)


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



@pytest.mark.parametrize("probabilities,threshold,label", [
    # The most likely subtype, not the first, the last or the least likely.
    ({"epidural": 0.1, "intraparenchymal": 0.7, "intraventricular": 0.2, "subarachnoid": 0.05,
      "subdural": 0.3, "any": 0.9}, 0.5, "intraparenchymal"),
    ({"epidural": 0.6, "intraparenchymal": 0.2, "intraventricular": 0.1, "subarachnoid": 0.3,
      "subdural": 0.4, "any": 0.7}, 0.5, "epidural"),
    # `any` below the threshold says no hemorrhage, however likely a subtype looks.
    ({"epidural": 0.1, "subdural": 0.9, "any": 0.3}, 0.5, predictor_lib.NO_HEMORRHAGE),
    ({"subdural": 0.8, "any": 0.5}, 0.5, "subdural"),  # at the threshold counts as hemorrhage
    ({"subdural": 0.8, "any": 0.9}, 0.95, predictor_lib.NO_HEMORRHAGE),
    ({"subdural": 0.8, "any": 0.2}, 0.1, "subdural"),
    ({"any": 0.8}, 0.5, "hemorrhage"),  # a binary model names no subtype
    ({"epidural": 0.2, "subdural": 0.7}, 0.5, "subdural"),  # a subtype model alone
])
def test_decide_hand_cases(probabilities, threshold, label):
  assert predictor_lib.decide(probabilities, threshold) == label


def test_cli_threshold_changes_the_label(tiny_checkpoint, tmp_path, capsys):
  image = tmp_path / "a.png"
  image.write_bytes(png_bytes(np.full((40, 40), 90, np.uint8)))

  def run(threshold: str) -> dict:
    assert predict.main([str(image), "--checkpoint", str(tiny_checkpoint), "--threshold",
                         threshold]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[0])

  never, always = run("1.0"), run("0.0")  # no sigmoid output reaches 1.0, every one reaches 0
  assert never["probabilities"] == always["probabilities"]
  assert never["label"] == predictor_lib.NO_HEMORRHAGE
  subtypes = {k: always["probabilities"][k] for k in tasks.SUBTYPES}
  assert always["label"] == max(subtypes, key=subtypes.get)
