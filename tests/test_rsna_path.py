"""docs/rsna.md end to end at CI size: the phantom written in the Kaggle layout, then every
command of the page as a user runs it (build -> train --preset rsna -> evaluate -> calibrate
--out -> export -> predict --format kaggle)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from ichflax import checkpoint, tasks
from ichflax.checkpoint.cli import main as checkpoint_main
from ichflax.data.__main__ import main as data_main
from ichflax.serving.cli import main as predict_main
from ichflax.training.cli import main as train_main
from ichflax.trust.calibrate import main as calibrate_main
from ichflax.trust.evaluate import main as evaluate_main
from ichflax.weights.__main__ import main as weights_main


def _printed(capsys, pattern: str) -> str:
  out = capsys.readouterr().out
  found = re.search(pattern, out)
  assert found, out
  return found.group(1)


# Slow (2-3 min on 2 cores): the one test of the whole RSNA path, each command's real main().
@pytest.mark.slow
def test_the_rsna_page_runs_end_to_end(tmp_path, capsys):
  import _weights_refs as refs
  download = tmp_path / "rsna"  # stage_2_train.csv + stage_2_train/*.dcm, as Kaggle ships it
  assert data_main(["phantom", "--out", str(download), "--slices", "60", "--matrix", "64",
                    "--per-series", "4", "--workers", "1"]) == 0
  assert (download / "stage_2_train.csv").is_file()
  assert data_main(["build", "--rsna", str(download), "--draw", "by-patient", "--stored-size",
                    "32", "--out", str(tmp_path / "tfds"), "--workers", "1"]) == 0
  dataset = _printed(capsys, r"dataset: (\S+)")
  h5 = tmp_path / "resnet50_notop.h5"  # random weights: the page converts ImageNet's
  refs.keras_h5(h5, input_shape=(32, 32, 3))
  assert weights_main(["convert", str(h5), "--out", str(tmp_path / "weights")]) == 0
  run = tmp_path / "runs" / "rsna"
  assert train_main(["--preset", "rsna", "--weights", str(tmp_path / "weights"), "--data",
                     dataset, "--image-size", "32", "--stored-size", "32", "--epochs", "1",
                     "--batch-size", "8", "--workdir", str(run), "--no-progress-bar"]) == 0
  report = json.loads((run / "report" / "report.json").read_text())
  assert report["config"]["task"] == "multilabel" and report["config"]["trainable"] == "all"
  assert "rsna_log_loss" in report["test"]

  assert evaluate_main([str(run), "--data", dataset, "--bootstrap", "20",
                        "--out", str(tmp_path / "eval")]) == 0
  evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
  assert set(evaluation["per_label"]) == set(tasks.LABELS) and "rsna_log_loss" in evaluation

  calibrated = tmp_path / "calibrated"
  assert calibrate_main([str(run), "--data", dataset, "--out", str(calibrated)]) == 0
  assert checkpoint.read_spec(calibrated).calibrated
  served = tmp_path / "served"
  assert checkpoint_main(["export", str(calibrated), str(served)]) == 0

  capsys.readouterr()
  submission = tmp_path / "submission.csv"
  slices = sorted((download / "stage_2_train").glob("*.dcm"))[:5]
  assert predict_main([*map(str, slices), "--checkpoint", str(served), "--format", "kaggle",
                       "-o", str(submission)]) == 0
  rows = list(csv.reader(submission.open()))
  assert rows[0] == ["ID", "Label"] and len(rows) == 1 + 6 * len(slices)
  labelled = {r["ID"] for r in csv.DictReader((download / "stage_2_train.csv").open())}
  assert {r[0] for r in rows[1:]} <= labelled  # the IDs Kaggle's own label file uses
  assert all(0.0 <= float(p) <= 1.0 for _, p in rows[1:])
  assert np.isfinite([float(p) for _, p in rows[1:]]).all()
