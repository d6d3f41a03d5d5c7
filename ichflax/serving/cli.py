"""`python -m ichflax.predict`: probabilities, Grad-CAM and a verdict for CT slices and series.

Usage:
  python -m ichflax.predict FILE_OR_DIR_OR_ZIP... [--checkpoint DIR] [-o FILE]
                            [--format jsonl|csv|kaggle] [--gradcam OUT_DIR] [--strict]

Reads what the app reads (`ichflax.data.sources`): DICOM slices and multi-frame DICOM, NIfTI
volumes, PNG/JPG, folders (recursively) and zips. Every file ends as a record (`records`): a
`slice` answer, an `error` naming why it could not be read, and a `series` summary per series of
a folder, zip or volume; records are written as each batch finishes.

Research and education use only; not a medical device.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import tqdm
from PIL import Image

from ichflax.checkpoint import discover
from ichflax.data import dicom, sources
from ichflax.serving import gradcam, records
from ichflax.serving.predictor import Prediction, Predictor, labels_of
from ichflax.xla import cache as xla_cache

EXIT_CODES = {0: "every input was read and answered (slices not judged say why in their record)",
              1: "no slice could be predicted",
              2: "bad arguments, or the checkpoint could not be read",
              3: "--strict: some file or slice could not be read, or a kaggle row was left out"}


def _kept(pred: Prediction) -> Prediction:
  """What the series summary needs of a written prediction: no pixels, no map."""
  light = dataclasses.replace(pred.slice, model_image=pred.slice.model_image[:0], hu=None,
                              picture=None)
  return dataclasses.replace(pred, slice=light, cam=None)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m ichflax.predict", formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Hemorrhage and subtype probabilities, Grad-CAM and its attention box for CT "
                  "slices (DICOM, PNG, JPG), multi-frame DICOM and NIfTI volumes, and folders "
                  "or zips of series.",
      epilog="Records: one per slice with its status (ok, out_of_scope, out_of_domain) and a "
             "reason when not ok, one per unreadable file, one summary per series of a folder, "
             "zip or volume; probabilities to 4 places with per-label positive flags (schema: "
             "docs/serving.md).\nExit codes:\n" + "\n".join(
                 f"  {code}  {text}" for code, text in EXIT_CODES.items())
             + "\nResearch and education use only; not a medical device.")
  parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR_OR_ZIP",
                      help="DICOM, NIfTI, PNG/JPG files, folders (read recursively) or zips")
  parser.add_argument("--checkpoint", action="append", metavar="DIR",
                      help="a checkpoint directory or hf://OWNER/REPO[@REVISION]; repeat for a "
                           f"binary + a subtype checkpoint (default: ${discover.ENV}, else the "
                           "shipped checkpoints/, as the app)")
  parser.add_argument("-o", "--output", metavar="FILE", type=Path,
                      help="write the records to FILE (default: standard output)")
  parser.add_argument("--format", choices=records.FORMATS, default="jsonl",
                      help="jsonl: every record as a JSON line (default); csv: a row per record, "
                           "a column per label; kaggle: the RSNA 2019 submission (ID,Label; "
                           "withheld slices' probabilities included, as a submission needs "
                           "every row)")
  parser.add_argument("--strict", action="store_true",
                      help="exit 3 when any file or slice could not be read (default: 0 as long "
                           "as something was predicted)")
  parser.add_argument("--gradcam", metavar="OUT_DIR", type=Path,
                      help="write a Grad-CAM overlay PNG with the attention box per slice")
  parser.add_argument("--cam-class", default=None, metavar="LABEL",
                      help="label whose evidence Grad-CAM shows (default: the most likely)")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="slices per model call (memory grows with it; default 8)")
  parser.add_argument("--threshold", type=float, default=None,
                      help="one hemorrhage threshold for every label, instead of the "
                           "checkpoint's operating points (fitted on validation; 0.5 if none)")
  parser.add_argument("--show-out-of-domain", action="store_true",
                      help="also print the probabilities of slices unlike the training data, "
                           "marked \"revealed\": true (withheld by default)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  args.checkpoint = discover.requested(args.checkpoint)
  if not args.checkpoint:
    parser.exit(2, f"error: no checkpoint given and none in {discover.DEFAULT_DIR}: pass "
                   f"--checkpoint DIR or hf://OWNER/REPO, or set {discover.ENV}\n")
  from ichflax import checkpoint  # Orbax only after the arguments parse
  try:  # the spec says how to read slices; the weights load only if some slice reads
    specs = [checkpoint.read_spec(p) for p in args.checkpoint]
  except (checkpoint.CheckpointError, OSError) as e:
    parser.exit(2, f"error: {e}\n")
  with contextlib.ExitStack() as stack:
    out = (stack.enter_context(open(args.output, "w", newline="", encoding="utf-8"))
           if args.output else sys.stdout)
    try:
      writer = records.WRITERS[args.format](out, labels_of(specs))
    except ValueError as e:
      parser.exit(2, f"error: {e}\n")
    if args.format == "kaggle":
      args.show_out_of_domain = True
    return _run(args, specs, writer)


def _run(args: argparse.Namespace, specs, writer: records.Writer) -> int:
  """Reads, predicts and writes every record; returns the exit code (EXIT_CODES)."""
  dicom.quiet_pydicom()
  reading = sources.read(args.inputs, windows=specs[0].windows,
                         stored_size=specs[0].stored_size)
  for problem in reading.problems:
    writer.write(records.error_record(problem))
  if not reading.slices:
    return 1
  try:
    predictor = Predictor.from_checkpoint(*args.checkpoint, batch_size=args.batch_size,
                                          threshold=args.threshold)
  except ValueError as e:  # a bad --threshold, or weights that do not fit their spec
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.cam_class is not None and args.cam_class not in predictor.labels:
    print(f"error: --cam-class {args.cam_class!r} is not a label of these weights: choose one "
          f"of {', '.join(predictor.labels)}", file=sys.stderr)
    return 2
  if args.gradcam:
    args.gradcam.mkdir(parents=True, exist_ok=True)
  written = predicted = 0  # numbered, so slices with the same file name never share a map
  bar = tqdm.tqdm(total=reading.slices, unit="slice", file=sys.stderr, disable=None,
                  desc="predict")
  for group in reading.series:  # records are written batch by batch: a stopped run keeps them
    kept = []
    # A model that reads neighbours or whole series gets each series in one call.
    batch = max(len(group.entries), 1) if predictor.reads_series else args.batch_size
    for slices, problems in group.batches(batch):
      for problem in problems:
        writer.write(records.error_record(problem))
      try:
        preds = predictor.predict(slices, gradcam_on=True, cam_class=args.cam_class)
      except Exception as e:  # noqa: BLE001  (one batch's failure must not lose the others)
        preds = []
        for s in slices:
          writer.write(records.error_record(sources.unexpected(s.name, e)))
      for pred in preds:
        extra = {}
        if pred.slice.frame is not None:
          extra["frame"] = pred.slice.frame
        if group.summarise and pred.slice.geometry is not None:
          extra.update(slice_index=len(kept), position_z=pred.slice.geometry.position_z)
        if args.gradcam and pred.cam is not None and pred.shows(args.show_out_of_domain):
          written += 1
          path = args.gradcam / f"{written:04d}_{Path(pred.slice.name).stem}_gradcam.png"
          Image.fromarray(gradcam.overlay(pred.slice.display, pred.cam, pred.box)).save(path)
          extra["gradcam"] = str(path)
        writer.write(records.slice_record(pred, args.show_out_of_domain, **extra))
        kept.append(_kept(pred))
      predicted += len(preds)
      bar.update(len(slices) + len(problems))
    if group.summarise and kept:
      writer.write(records.series_record(group, kept, predictor.thresholds_for(kept),
                                         args.show_out_of_domain))
  bar.close()
  if writer.skipped:
    print(f"note: {writer.skipped} records have no {args.format} row (unreadable files, slices "
          "that are not head CT, or files without a SOPInstanceUID)", file=sys.stderr)
  if not predicted:
    return 1
  return 3 if args.strict and (writer.errors or writer.skipped) else 0


if __name__ == "__main__":
  xla_cache.enable()
  sys.exit(main())
