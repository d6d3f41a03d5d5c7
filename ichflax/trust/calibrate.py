"""`python -m ichflax.calibrate CHECKPOINT --data DIR`: what a model knows it does not know.

Fits, on the model's own dataset and without touching its weights: the training-domain model of its
pooled backbone features (`ichflax.trust.domain`: training split, threshold at a percentile of the
validation split), one temperature per output and the operating points that reach a target
sensitivity (`ichflax.trust.calibration`: validation split). All are stored in the checkpoint (spec
fields and the `domain/` item) and used by every Predictor that loads it. Training runs this at its
end (`ichflax.training.loop.finish`); this command does it for checkpoints trained before, e.g. the
shipped one. Writes `calibration.md` / `calibration.json` and a reliability diagram PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from flax import nnx

from ichflax import tasks
from ichflax.models import inference
from ichflax.spec import ModelSpec
from ichflax.trust import calibration, domain

log = logging.getLogger("ichflax.calibrate")
BATCH = 32


def outputs(model: nnx.Module, spec: ModelSpec, split, batch_size: int = BATCH
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(logits (N, k), pooled features (N, 2048), image statistics (N, 6), picture statistics
  (N, 6), targets (N, k)) over one split, in eval mode.

  `split` has `source` and `indices` (`ichflax.data.splits.Split`); the model runs through the
  Predictor's own compiled program (`ichflax.models.inference`), so the statistics are those of
  the features served.
  """
  from ichflax.data import loader
  task = tasks.get_task(spec.task)
  run = inference.compile_model(model, spec)
  logits, pooled, stats, shapes, targets = [], [], [], [], []
  for b in loader.batches(split.source, split.indices, batch_size, shuffle=False):
    keep = b["mask"]
    z, f = run.plain(b["image"])  # the loader pads the last batch (mask False)
    logits.append(np.asarray(z)[:len(keep)][keep])
    pooled.append(np.asarray(f)[:len(keep)][keep])
    stats.append(domain.image_statistics(b["image"][keep]))
    shapes.append(domain.picture_statistics(b["image"][keep]))
    targets.append(task.targets(b["labels"], b["group"])[keep])
  return tuple(np.concatenate(v) for v in (logits, pooled, stats, shapes, targets))


def fit(model: nnx.Module, spec: ModelSpec, splits: dict, *,
        target_sensitivity: float = calibration.TARGET_SENSITIVITY,
        percentile: float = domain.PERCENTILE,
        components: int = domain.COMPONENTS) -> tuple[ModelSpec, domain.DomainModel, dict]:
  """(calibrated spec, domain model, summary) from the train / validation (/ test) splits."""
  model = nnx.clone(model)
  model.eval()
  task = tasks.get_task(spec.task)
  _, train_features, train_stats, train_shapes, _ = outputs(model, spec, splits["train"])
  val_logits, val_features, val_stats, val_shapes, val_targets = outputs(
      model, spec, splits["validation"])
  dom = domain.fit(train_features, train_stats, train_shapes, components).calibrated(
      val_features, val_stats, val_shapes, percentile)
  temperatures = calibration.keep_if_better(
      val_logits, val_targets, task.activation,
      calibration.fit_temperatures(val_logits, val_targets, task.activation))
  before = calibration.probabilities(val_logits, task.activation)
  after = calibration.probabilities(val_logits, task.activation, temperatures)
  thresholds = calibration.operating_thresholds(after, val_targets, target_sensitivity)
  new_spec = spec.replace(temperatures=temperatures, thresholds=thresholds,
                          target_sensitivity=float(target_sensitivity),
                          domain_threshold=dom.threshold, domain_percentile=dom.percentile,
                          domain_image_threshold=dom.image.threshold,
                          domain_picture_threshold=dom.picture.threshold)
  labels = spec.outputs
  far = np.maximum(dom.score(val_features) / dom.threshold, dom.image.far(val_stats))
  summary = {
      "data": spec.data, "target_sensitivity": float(target_sensitivity),
      "temperatures": dict(zip(labels, temperatures)), "thresholds": dict(zip(labels, thresholds)),
      "reliability": {"before": calibration.reliability(before, val_targets),
                      "after": calibration.reliability(after, val_targets)},
      "nll": {"before": calibration.nll(val_logits, val_targets, task.activation),
              "after": calibration.nll(val_logits, val_targets, task.activation, temperatures)},
      "validation": _operating(after, val_targets, labels, thresholds),
      "domain": {"components": int(dom.components.shape[1]), "percentile": dom.percentile,
                 "threshold": dom.threshold, "train_n": len(train_features),
                 "validation_n": len(val_features),
                 "image_threshold": dom.image.threshold,
                 "picture_threshold": dom.picture.threshold,
                 "validation_flagged": _flagged(dom, val_features, val_stats),
                 "validation_pictures_flagged": _flagged(dom, val_features, val_shapes, True)},
      "risk_coverage": risk_coverage(after, val_targets, labels, thresholds, far),
  }
  if "test" in splits:
    test_logits, test_features, test_stats, test_shapes, test_targets = outputs(
        model, spec, splits["test"])
    test_probs = calibration.probabilities(test_logits, task.activation, temperatures)
    summary["test"] = _operating(test_probs, test_targets, labels, thresholds)
    summary["test"]["ece"] = {
        "before": calibration.reliability(calibration.probabilities(
            test_logits, task.activation), test_targets)["ece"],
        "after": calibration.reliability(test_probs, test_targets)["ece"]}
    summary["domain"]["test_flagged"] = _flagged(dom, test_features, test_stats)
    summary["domain"]["test_pictures_flagged"] = _flagged(dom, test_features, test_shapes, True)
  return new_spec, dom, summary


WITHHELD = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def risk_coverage(probs: np.ndarray, targets: np.ndarray, labels: tuple[str, ...],
                  thresholds, far: np.ndarray) -> list[dict]:
  """What withholding the slices farthest from the training domain buys, on validation.

  `far`: each slice's larger domain score over its threshold. For each share withheld (those
  with the highest `far`), the answered slices' accuracy at the operating points (every label),
  `any`'s ROC AUC (or the mean over outputs without it) and the percentile of the validation
  scores a threshold there would be: a hoster picks `--domain-percentile` knowing the cost.
  """
  from ichflax.evaluation import metrics
  order = np.argsort(far, kind="stable")
  k = labels.index("any") if "any" in labels else None
  hits = (probs >= np.asarray(thresholds)) == (targets > 0.5)
  rows = []
  for share in WITHHELD:
    keep = order[:max(1, round(len(order) * (1 - share)))]
    aucs = [metrics.roc_auc(targets[keep, j], probs[keep, j])
            for j in ([k] if k is not None else range(len(labels)))]
    rows.append({"withheld": share, "coverage": len(keep) / len(order),
                 "percentile": 100 * (1 - share), "accuracy": float(hits[keep].mean()),
                 "auc": float(np.nanmean(aucs))})
  return rows


def _flagged(dom: domain.DomainModel, features: np.ndarray, stats: np.ndarray,
             pictures: bool = False) -> float:
  """Share of slices over either threshold; `pictures`: `stats` are picture statistics (the
  slices as a brain-window picture of them would be judged)."""
  second = dom.picture if pictures else dom.image
  return float(np.mean((dom.score(features) > dom.threshold) | (second.far(stats) > 1)))


def _operating(probs, targets, labels, thresholds) -> dict:
  """Sensitivity / specificity per label at 0.5 (the paper's tables) and at the operating point."""
  return {"n": len(probs), "at_0.5": dict(zip(labels, calibration.sensitivity_specificity(
              probs, targets, [calibration.DEFAULT_THRESHOLD] * len(labels)))),
          "at_operating_point": dict(zip(labels, calibration.sensitivity_specificity(
              probs, targets, thresholds)))}


def fit_and_store(model: nnx.Module, spec: ModelSpec, splits: dict, step_dir, **kwargs) -> dict:
  """`fit`, then the calibrated spec and domain statistics written into the checkpoint."""
  from ichflax import checkpoint
  new_spec, dom, summary = fit(model, spec, splits, **kwargs)
  checkpoint.write_trust(step_dir, new_spec, dom.arrays())
  log.info("calibrated %s: validation ECE %.4f -> %.4f, temperatures %s, domain threshold %.3g",
           step_dir, summary["reliability"]["before"]["ece"],
           summary["reliability"]["after"]["ece"],
           ", ".join(f"{k} {v:.2f}" for k, v in summary["temperatures"].items()), dom.threshold)
  return summary


def load_with_data(checkpoint_path, data: str):
  """(model, spec, step dir, dataset info, splits): a checkpoint and the dataset it was
  trained on, drawn as its run drew it. Raises ValueError / FileNotFoundError for the user."""
  from ichflax import checkpoint
  from ichflax.data import splits as data_splits
  model, spec = checkpoint.load_inference(checkpoint_path)
  step_dir = checkpoint.resolve(checkpoint_path)
  cfg = checkpoint.read_config(step_dir).replace(data=data, limit=None)
  info, splits = data_splits.load(cfg.data, tasks.get_task(spec.task), **cfg.dataset_request())
  channels = len(info.get("windows") or ())
  if (info["size"], channels) != (spec.stored_size, spec.channels):
    raise ValueError(f"{data} stores {info['size']} px slices with {channels} windows, but the "
                     f"checkpoint was trained on {spec.stored_size} px with {spec.channels}: "
                     "give the dataset it was trained on (or its source folder)")
  return model, spec, step_dir, info, splits


def checkpoint_command(prog: str, doc: str, data_help: str) -> argparse.ArgumentParser:
  """The parser of a command on a checkpoint and its data (calibrate, evaluate)."""
  p = argparse.ArgumentParser(prog=prog, description=doc,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("checkpoint", help="a checkpoint: step dir, export, training workdir or "
                 "hf://OWNER/REPO[@REVISION] (fetched to the Hub cache)")
  p.add_argument("--data", required=True, help=data_help)
  return p


def log_to_terminal() -> None:
  logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
  logging.getLogger("ichflax").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
  p = checkpoint_command("python -m ichflax.calibrate", __doc__,
                         "the dataset the checkpoint was trained on (a built TFDS dir or its "
                         "source folder; its train and validation splits are used)")
  p.add_argument("--out", type=Path, default=None, metavar="DIR",
                 help="write a calibrated fp32 copy to DIR and leave CHECKPOINT as it is "
                      "(default: calibrate CHECKPOINT in place)")
  p.add_argument("--target-sensitivity", type=float, default=calibration.TARGET_SENSITIVITY,
                 help="validation sensitivity each output's operating point reaches (default "
                      f"{calibration.TARGET_SENSITIVITY})")
  p.add_argument("--domain-percentile", type=float, default=domain.PERCENTILE,
                 help="percentile of the validation slices' domain scores that becomes the "
                      f"out-of-domain threshold (default {domain.PERCENTILE}; the report's "
                      "risk-coverage table shows what each choice withholds)")
  p.add_argument("--report", type=Path, default=None,
                 help="folder for calibration.md/json and the reliability diagram "
                      "(default: beside the calibrated checkpoint, ../calibration)")
  a = p.parse_args(argv)
  log_to_terminal()
  from ichflax import checkpoint
  from ichflax.evaluation import report
  try:
    model, spec, step_dir, _, splits = load_with_data(a.checkpoint, a.data)
    if a.out is not None:  # the copy keeps fp32 weights: calibration must not change a number
      step_dir = checkpoint.export_inference(step_dir, a.out, dtype=np.float32)
  except (FileNotFoundError, ValueError) as e:  # CheckpointError, DataError: messages for the user
    print(f"error: {e}", file=sys.stderr)
    return 2
  summary = fit_and_store(model, spec, splits, step_dir,
                          target_sensitivity=a.target_sensitivity, percentile=a.domain_percentile)
  out = a.report or step_dir.parent / "calibration"
  paths = report.write_calibration(summary, out, spec.task)
  print(json.dumps({"checkpoint": str(step_dir), **{k: str(v) for k, v in paths.items()}}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
