"""`python -m ichflax.predict`: JSON lines of probabilities and Grad-CAM for CT slices and series.

Usage:
  python -m ichflax.predict FILE_OR_DIR... --checkpoint DIR [--gradcam OUT_DIR]

Research and education use only; not a medical device.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ichflax import gradcam, series, verdict, xla_cache
from ichflax.data import inputs
from ichflax.predictor import Predictor


def _expand(args: Sequence[str]) -> list[tuple[str | None, Path]]:
  """(folder it came from or None, file) for each file argument and each file in a folder."""
  out = []
  for arg in args:
    p = Path(arg)
    if p.is_dir():
      out.extend((arg, f) for f in sorted(p.iterdir())
                 if f.is_file() and not f.name.startswith("."))
    else:
      out.append((None, p))
  return out


def _emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m ichflax.predict",
      description="Hemorrhage and subtype probabilities, Grad-CAM and its attention box for CT "
                  "slices (DICOM, PNG, JPG) and folders of series.",
      epilog="One JSON line per slice with its status (ok, out_of_scope, out_of_domain, error) "
             "and a reason when not ok, and a study summary per series when a folder is given "
             "(schema: docs/serving.md). Research and education use only.")
  parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
  parser.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                      help="a checkpoint; repeat for a binary + a subtype checkpoint")
  parser.add_argument("--gradcam", metavar="OUT_DIR", type=Path,
                      help="write a Grad-CAM overlay PNG with the attention box per slice")
  parser.add_argument("--cam-class", default=None, help="label whose evidence Grad-CAM shows")
  parser.add_argument("--batch-size", type=int, default=8)
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
  loaded: list[tuple[str | None, inputs.Slice]] = []
  for folder, path in _expand(args.inputs):
    try:
      loaded.append((folder, inputs.load_slice(path, windows=specs[0].windows,
                                               stored_size=specs[0].stored_size)))
    except inputs.READ_ERRORS as e:
      _emit(verdict.error_record(str(path), e.reason))
  if not loaded:
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
  # Loose files go in one batch with no summary; each series of a folder gets its summary.
  folders = sorted({f for f, _ in loaded if f is not None})
  groups = [([s for f, s in loaded if f is None], False)] + [
      (ordered, True) for folder in folders
      for ordered in series.order_series([s for f, s in loaded if f == folder])]
  written = 0  # numbered, so slices with the same file name never overwrite each other's map
  for group, summarise in groups:
    if not group:
      continue
    preds = predictor.predict(group, gradcam_on=True, cam_class=args.cam_class)
    for i, pred in enumerate(preds):
      record = pred.to_json(reveal=args.show_out_of_domain)
      if summarise and pred.slice.geometry is not None:
        record.update(slice_index=i, position_z=pred.slice.geometry.position_z)
      if args.gradcam and "box" in record:
        written += 1
        out = args.gradcam / f"{written:04d}_{Path(pred.slice.name).stem}_gradcam.png"
        Image.fromarray(gradcam.overlay(pred.slice.display, pred.cam, pred.box)).save(out)
        record["gradcam"] = str(out)
      _emit(record)
    if summarise:
      _emit({"study": series.study_summary(preds, predictor.thresholds,
                                           reveal=args.show_out_of_domain)})
  return 0


if __name__ == "__main__":
  xla_cache.enable()
  sys.exit(main())
