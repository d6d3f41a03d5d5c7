"""`python -m ichflax.predict`: JSON lines of probabilities and Grad-CAM for CT slices and series.

Usage:
  python -m ichflax.predict FILE_OR_DIR_OR_ZIP... --checkpoint DIR [--gradcam OUT_DIR]

Reads what the app reads (`ichflax.data.sources`): DICOM slices and multi-frame DICOM, NIfTI
volumes, PNG/JPG, folders (recursively) and zips. Every file ends as a row: a prediction per
slice, or `{"file", "status": "error", "reason"}`; rows are written as each batch finishes.

Research and education use only; not a medical device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import tqdm
from PIL import Image

from ichflax.data import dicom, sources
from ichflax.serving import gradcam, series
from ichflax.serving.predictor import Prediction, Predictor
from ichflax.trust import verdict
from ichflax.xla import cache as xla_cache


def _emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def _error(problem: sources.Problem) -> dict:
  """The row of a file (or slice) that gave no prediction: the reason names it."""
  return verdict.error_record(problem.file, str(problem))


def _kept(pred: Prediction) -> Prediction:
  """What the study summary needs of a written prediction: no pixels, no map."""
  light = dataclasses.replace(pred.slice, model_image=pred.slice.model_image[:0], hu=None,
                              picture=None)
  return dataclasses.replace(pred, slice=light, cam=None)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m ichflax.predict",
      description="Hemorrhage and subtype probabilities, Grad-CAM and its attention box for CT "
                  "slices (DICOM, PNG, JPG), multi-frame DICOM and NIfTI volumes, and folders "
                  "or zips of series.",
      epilog="One JSON line per slice with its status (ok, out_of_scope, out_of_domain, error) "
             "and a reason when not ok, one error line per unreadable file, and a study summary "
             "per series of a folder, zip or volume (schema: docs/serving.md). Research and "
             "education use only.")
  parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR_OR_ZIP")
  parser.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                      help="a checkpoint directory or hf://OWNER/REPO[@REVISION] (e.g. the "
                           "shipped checkpoints/multilabel); repeat for a binary + a subtype "
                           "checkpoint")
  parser.add_argument("--gradcam", metavar="OUT_DIR", type=Path,
                      help="write a Grad-CAM overlay PNG with the attention box per slice")
  parser.add_argument("--cam-class", default=None, help="label whose evidence Grad-CAM shows")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="slices per model call (memory grows with it)")
  parser.add_argument("--threshold", type=float, default=None,
                      help="one hemorrhage threshold for every label, instead of the "
                           "checkpoint's operating points (fitted on validation; 0.5 if none)")
  parser.add_argument("--show-out-of-domain", action="store_true",
                      help="also print the probabilities of slices unlike the training data, "
                           "marked \"revealed\": true (withheld by default)")
  args = parser.parse_args(argv)
  from ichflax import checkpoint  # Orbax only after the arguments parse
  try:  # the spec says how to read slices; the weights load only if some slice reads
    specs = [checkpoint.read_spec(p) for p in args.checkpoint]
  except (checkpoint.CheckpointError, OSError) as e:
    parser.exit(2, f"error: {e}\n")
  dicom.quiet_pydicom()
  reading = sources.read(args.inputs, windows=specs[0].windows,
                         stored_size=specs[0].stored_size)
  for problem in reading.problems:
    _emit(_error(problem))
  if not reading.slices:
    return 1
  try:
    predictor = Predictor.from_checkpoint(*args.checkpoint, batch_size=args.batch_size,
                                          threshold=args.threshold)
  except (checkpoint.CheckpointError, ValueError) as e:  # a bad --threshold too
    parser.exit(2, f"error: {e}\n")
  if args.cam_class is not None and args.cam_class not in predictor.labels:
    parser.exit(2, f"error: --cam-class {args.cam_class!r} is not a label of these weights: "
                f"choose one of {', '.join(predictor.labels)}\n")
  if args.gradcam:
    args.gradcam.mkdir(parents=True, exist_ok=True)
  written = predicted = 0  # numbered, so slices with the same file name never share a map
  bar = tqdm.tqdm(total=reading.slices, unit="slice", file=sys.stderr, disable=None,
                  desc="predict")
  for group in reading.series:  # rows are written batch by batch: a stopped run keeps them
    kept = []
    for slices, problems in group.batches(args.batch_size):
      for problem in problems:
        _emit(_error(problem))
      try:
        preds = predictor.predict(slices, gradcam_on=True, cam_class=args.cam_class)
      except Exception as e:  # noqa: BLE001  (one batch's failure must not lose the others)
        preds = []
        for s in slices:
          _emit(_error(sources.unexpected(s.name, e)))
      for pred in preds:
        index = len(kept)
        record = pred.to_json(reveal=args.show_out_of_domain)
        if pred.slice.frame is not None:
          record["frame"] = pred.slice.frame
        if group.summarise and pred.slice.geometry is not None:
          record.update(slice_index=index, position_z=pred.slice.geometry.position_z)
        if args.gradcam and "box" in record:
          written += 1
          out = args.gradcam / f"{written:04d}_{Path(pred.slice.name).stem}_gradcam.png"
          Image.fromarray(gradcam.overlay(pred.slice.display, pred.cam, pred.box)).save(out)
          record["gradcam"] = str(out)
        _emit(record)
        kept.append(_kept(pred))
      predicted += len(preds)
      bar.update(len(slices) + len(problems))
    if group.summarise and kept:
      _emit({"study": series.summarise(kept, predictor.thresholds,
                                           reveal=args.show_out_of_domain)})
  bar.close()
  return 0 if predicted else 1

if __name__ == "__main__":
  xla_cache.enable()
  sys.exit(main())
