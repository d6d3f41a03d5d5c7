"""`ichflax.evaluate` (per-label AUC with study-bootstrap intervals, RSNA loss, operating points,
a per-slice CSV) and `ichflax.calibrate --out` (a calibrated copy, the original untouched)."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
from test_predictor import tiny_checkpoint  # noqa: F401

from ichflax import checkpoint, tasks
from ichflax.data import phantom
from ichflax.evaluation import metrics
from ichflax.serving import predictor as predictor_lib
from ichflax.trust import calibrate
from ichflax.trust import evaluate as evaluate_cli


def test_evaluate_writes_what_its_slices_say(tiny_checkpoint, tmp_path, capsys):
  data = checkpoint.read_config(tiny_checkpoint).data
  out = tmp_path / "eval"
  assert evaluate_cli.main([str(tiny_checkpoint), "--data", data, "--out", str(out),
                            "--bootstrap", "40"]) == 0
  assert "RSNA 2019 weighted log loss" in capsys.readouterr().out
  summary = json.loads((out / "evaluation.json").read_text())
  rows = list(csv.DictReader((out / "slices.csv").open()))
  assert summary["n"] == len(rows) > 0 and summary["split"] == "test"
  assert summary["studies"] == len({r["study_id"] for r in rows}) < len(rows)
  targets = np.array([[float(r[f"target_{k}"]) for k in tasks.LABELS] for r in rows])
  probs = np.array([[float(r[f"p_{k}"]) for k in tasks.LABELS] for r in rows])
  assert math.isclose(summary["rsna_log_loss"], metrics.rsna_log_loss(targets, probs),
                      rel_tol=1e-4)
  spec = checkpoint.read_spec(tiny_checkpoint)
  for j, label in enumerate(tasks.LABELS):
    r = summary["per_label"][label]
    y = targets[:, j] > 0.5
    assert r["threshold"] == spec.operating_points()[label]
    assert r["positives"] == y.sum()
    auc = metrics.roc_auc(y, probs[:, j])
    if math.isnan(auc):
      assert r["auc"] is None
      continue
    assert math.isclose(r["auc"], auc, abs_tol=1e-4)
    assert r["auc_95"][0] <= r["auc"] <= r["auc_95"][1]
    if y.any():
      assert math.isclose(r["sensitivity"], np.mean(probs[y, j] >= r["threshold"]), abs_tol=1e-3)


def test_evaluate_refuses_a_dataset_of_another_size(tiny_checkpoint, tmp_path, capsys):
  """A checkpoint that says it was trained on 32 px slices, given its own 64 px dataset."""
  from ichflax.checkpoint import layout
  other = tmp_path / "other"
  shutil.copytree(tiny_checkpoint, other)
  spec = checkpoint.read_spec(other)
  layout.write_json(other, layout.SPEC, spec.replace(stored_size=32).to_json(), force=True)
  data = checkpoint.read_config(tiny_checkpoint).data
  assert evaluate_cli.main([str(other), "--data", data]) == 2
  assert "stores 64 px slices with 3 windows, but the checkpoint was trained on 32 px" in (
      capsys.readouterr().err)


def test_calibrate_out_writes_a_calibrated_copy(tiny_checkpoint, tmp_path, capsys):
  data = checkpoint.read_config(tiny_checkpoint).data
  before = checkpoint.read_spec(tiny_checkpoint)
  copy = tmp_path / "calibrated"
  assert calibrate.main([str(tiny_checkpoint), "--data", data, "--out", str(copy),
                         "--target-sensitivity", "0.8"]) == 0
  assert json.loads(capsys.readouterr().out.splitlines()[-1])["checkpoint"] == str(copy)
  assert checkpoint.read_spec(tiny_checkpoint) == before  # the original is left as it was
  calibrated = checkpoint.read_spec(copy)
  assert calibrated.target_sensitivity == 0.8 != before.target_sensitivity
  assert calibrated.stored_dtype == "float32" and (copy / checkpoint.DOMAIN).is_dir()
  hu = phantom.make_slice(np.random.default_rng(3), 64).hu  # a head slice: scope passes it
  served = [predictor_lib.Predictor.from_checkpoint(p).predict([hu], gradcam_on=False)[0]
            for p in (tiny_checkpoint, copy)]
  # Same fp32 weights: the same logits under each copy's own temperatures (the copy was fitted
  # on every slice, training's own calibration on its --limit).
  for j, k in enumerate(tasks.LABELS):
    logits = [math.log(p.probabilities[k] / (1 - p.probabilities[k])) * s.temperatures[j]
              for p, s in zip(served, (before, calibrated))]
    assert math.isclose(*logits, rel_tol=1e-4, abs_tol=1e-4)


def test_evaluation_lands_in_the_run_or_beside_the_export(tmp_path):
  step = tmp_path / "runs" / "rsna" / "checkpoints" / "120"
  assert evaluate_cli.default_out(step, "test") == tmp_path / "runs" / "rsna" / "evaluation-test"
  export = tmp_path / "served"
  assert evaluate_cli.default_out(export, "validation") == tmp_path / "served-evaluation-validation"
