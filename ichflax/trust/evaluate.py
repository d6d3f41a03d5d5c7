"""`python -m ichflax.evaluate CHECKPOINT --data DIR`: a checkpoint measured on a labelled split.

What a reviewer of an ICH model asks for: per-label ROC AUC with a 95% interval from a bootstrap
over *studies* (slices of one scan are not independent), the RSNA 2019 weighted log loss,
sensitivity and specificity at the checkpoint's stored operating points, the expected calibration
error of the served (temperature-scaled) probabilities, and every slice's probabilities in a CSV.
The model runs through the Predictor's compiled program (`ichflax.trust.calibrate.outputs`), so
the numbers are those a served model gives on the same pre-processed slices; a checkpoint with
a sequence stage is measured with the stage's refined numbers, as it serves them, and every
sigmoid model also by series (a series scores its highest slice). Writes `evaluation.md`,
`evaluation.json` and `slices.csv`.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from ichflax import tasks
from ichflax.evaluation import metrics
from ichflax.evaluation.report import DISCLAIMER, fmt
from ichflax.jsonable import jsonable
from ichflax.models import sequence
from ichflax.spec import ModelSpec
from ichflax.trust import calibrate, calibration, embedded

RESAMPLES = 1000


def evaluate(model, spec: ModelSpec, split, *, resamples: int = RESAMPLES, seed: int = 0,
             stage=None) -> tuple[dict, np.ndarray, np.ndarray]:
  """(summary, probabilities (N, k), targets (N, k)) of one split; with a sequence `stage`
  (model, SeriesSpec) its refined numbers and operating points, as the checkpoint serves them."""
  task = tasks.get_task(spec.task)
  if stage is None:
    logits, *_, targets = calibrate.outputs(model, spec, split)
    probs = calibration.probabilities(logits, task.activation, spec.temperatures)
    thresholds = spec.operating_points()
  else:
    data = embedded.embed(model, spec, split)
    refined, _ = embedded.refine(sequence.Refiner(*stage), data)
    probs, targets = calibration.probabilities(refined, task.activation,
                                               stage[1].temperatures), data.targets
    thresholds = stage[1].operating_points()
  labels = spec.outputs
  studies = split.study_ids
  at = calibration.sensitivity_specificity(probs, targets, [thresholds[k] for k in labels])
  per_label = {}
  for j, label in enumerate(labels):
    y = targets[:, j] > 0.5
    low, high = metrics.bootstrap_auc(y, probs[:, j], studies, resamples=resamples, seed=seed)
    per_label[label] = {"positives": int(y.sum()), "auc": metrics.roc_auc(y, probs[:, j]),
                        "auc_95": [low, high], **at[j]}
  summary = {"data": spec.data, "n": len(probs), "studies": len(np.unique(studies)),
             "calibrated": spec.calibrated, "bootstrap_resamples": resamples,
             "series_model": stage is not None,
             "per_label": per_label,
             "ece": calibration.reliability(probs, targets)["ece"],
             "log_loss": metrics.log_loss(targets, probs, task.activation)}
  if tuple(labels) == tasks.LABELS:
    summary["rsna_log_loss"] = metrics.rsna_log_loss(targets, probs)
  if task.activation == "sigmoid" and all(map(len, split.series_ids)):
    summary["series"] = {"n": len(np.unique(split.series_ids)), "auc": dict(zip(
        labels, metrics.series_auc(targets, probs, split.series_ids)))}
  return summary, probs, targets


def write(summary: dict, probs: np.ndarray, targets: np.ndarray, split, labels, out: Path
          ) -> dict[str, Path]:
  """evaluation.json, evaluation.md and slices.csv (one row per slice) under `out`."""
  out.mkdir(parents=True, exist_ok=True)
  paths = {"json": out / "evaluation.json", "md": out / "evaluation.md",
           "slices_csv": out / "slices.csv"}
  paths["json"].write_text(json.dumps(jsonable(summary), indent=1))
  paths["md"].write_text(markdown(summary) + "\n")
  with paths["slices_csv"].open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image_id", "study_id", *(f"target_{k}" for k in labels),
                *(f"p_{k}" for k in labels)])
    for i in range(len(probs)):
      w.writerow([split.image_ids[i], split.study_ids[i], *targets[i].astype(int).tolist(),
                  *(float(p) for p in probs[i])])  # exact: recomputing gives the same AUC
  return paths


def markdown(s: dict) -> str:
  served = "temperature-scaled as served" if s["calibrated"] else "uncalibrated"
  lines = [f"# ichflax evaluation: {s['split']} split of {s['dataset']}", "", f"*{DISCLAIMER}*",
           "", f"Checkpoint `{s['checkpoint']}`, trained on {s['data']}. {s['n']} slices from "
           f"{s['studies']} studies; intervals: {s['bootstrap_resamples']} bootstrap resamples "
           f"of studies. Probabilities {served}; sensitivity and specificity at the stored "
           "operating points.", "",
           "| label | positives | AUC | 95% interval | threshold | sensitivity | specificity |",
           "|---|---|---|---|---|---|---|"]
  for label, r in s["per_label"].items():
    low, high = r["auc_95"]
    lines.append(f"| {label} | {r['positives']} | {fmt(r['auc'])} | {fmt(low)}–{fmt(high)} | "
                 f"{fmt(r['threshold'])} | {fmt(r['sensitivity'])} | {fmt(r['specificity'])} |")
  lines += ["", f"- Expected calibration error (10 bins, every slice and output): {fmt(s['ece'])}",
            f"- Log loss: {fmt(s['log_loss'])}"]
  if "rsna_log_loss" in s:
    lines.append(f"- RSNA 2019 weighted log loss (`any` x2): {fmt(s['rsna_log_loss'])}")
  if "series" in s:
    lines.append(f"- Per-series AUC ({s['series']['n']} series, highest slice): " + ", ".join(
        f"{k} {fmt(v)}" for k, v in s["series"]["auc"].items()))
  if s["series_model"]:
    lines.append("- Numbers of the checkpoint's sequence stage (refined over each series, its "
                 "own temperatures and operating points), as it serves them")
  return "\n".join(lines)


def default_out(step_dir: Path, split: str) -> Path:
  """WORKDIR/evaluation-SPLIT for a training run's step, else NAME-evaluation-SPLIT beside an
  exported checkpoint NAME."""
  from ichflax.checkpoint import layout
  if step_dir.name.isdigit():
    return layout.workdir_of(step_dir) / f"evaluation-{split}"
  return step_dir.parent / f"{step_dir.name}-evaluation-{split}"


def main(argv: list[str] | None = None) -> int:
  p = calibrate.checkpoint_command(
      "python -m ichflax.evaluate", __doc__, "a labelled dataset drawn as the checkpoint's run "
      "drew it: a built TFDS dir or its source folder (an RSNA download builds first)")
  p.add_argument("--split", choices=("test", "validation", "train"), default="test",
                 help="the split measured (default test)")
  p.add_argument("--out", type=Path, default=None, metavar="DIR",
                 help="folder for evaluation.md/json and slices.csv (default: WORKDIR/"
                      "evaluation-SPLIT for a training run, NAME-evaluation-SPLIT beside an "
                      "exported checkpoint NAME)")
  p.add_argument("--bootstrap", type=int, default=RESAMPLES, metavar="N",
                 help=f"bootstrap resamples of studies for the intervals (default {RESAMPLES})")
  p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
  a = p.parse_args(argv)
  calibrate.log_to_terminal()
  try:
    model, spec, step_dir, info, splits = calibrate.load_with_data(a.checkpoint, a.data)
  except (FileNotFoundError, ValueError) as e:  # CheckpointError, DataError: messages for the user
    print(f"error: {e}", file=sys.stderr)
    return 2
  split = splits[a.split]
  from ichflax import checkpoint
  summary, probs, targets = evaluate(model, spec, split, resamples=a.bootstrap, seed=a.seed,
                                     stage=checkpoint.read_series(step_dir))
  summary.update(checkpoint=str(step_dir), dataset=str(info.get("data", a.data)), split=a.split)
  out = a.out or default_out(step_dir, a.split)
  paths = write(summary, probs, targets, split, spec.outputs, out)
  print(paths["md"].read_text())
  print(json.dumps({k: str(v) for k, v in paths.items()}))
  return 0
