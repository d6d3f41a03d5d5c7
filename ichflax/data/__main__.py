"""CLI: `python -m ichflax.data phantom|build|info|preview` (see docs/data.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from ichflax import flags
from ichflax.data import image, phantom, preview, rsna, synth

PREVIEW_NAME = "ichflax_contact_sheet.png"


def _phantom(args) -> None:
  if args.png:  # the seed's PNG layout comes from the old head-unit phantom
    out = phantom.write_rsna(args.out, args.num, seed=args.seed, size=args.matrix or 256,
                             workers=args.workers, png_size=args.png)
    images, labels = phantom.PNG_IMAGES_DIR, phantom.PNG_CSV_NAME
  else:
    out = synth.write_rsna(args.out, args.num, seed=args.seed, size=args.matrix or 512,
                           workers=args.workers, per_series=args.per_series,
                           positive=args.positive, wide=args.wide)
    images, labels = phantom.IMAGES_DIR, phantom.CSV_NAME
  print(f"wrote {args.num} synthetic slices to {out / images} and labels to {out / labels}")


def _build(args) -> None:
  from ichflax.data import builders  #  (TFDS is slow to import)
  cfg = builders.BuildConfig(args.size, image.channels_for(args.input_mode), args.draw,
                             args.per_class, args.seed, args.workers, args.jpeg_share)
  if args.rsna:
    path = builders.build_rsna(args.rsna, args.out, cfg)
  elif args.png:
    path = builders.build_png(args.png, args.out, cfg)
  else:
    path = builders.build_phantom(args.out, cfg, num=args.phantom)
  print(f"dataset: {path}")


def _info(args) -> None:
  from ichflax.data import builders
  print(json.dumps(builders.dataset_info(args.dataset), indent=2))


def _preview(args) -> None:
  """The contact sheet: levels of a healthy head, each subtype's bleed, three windows."""
  rate = preview.write(args.out, args.seed, args.matrix)
  print(f"wrote {args.out}; {rate:.1f} slices/s at {args.matrix}x{args.matrix} (subject "
        "set-up included)")


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m ichflax.data", description=__doc__)
  sub = p.add_subparsers(dest="command", required=True)
  ph = sub.add_parser("phantom", help="write anatomy-based synthetic head CT as RSNA-format "
                      "series (DICOMs, CSV, bleed masks)")
  ph.add_argument("--out", type=Path, required=True, help="folder to write")
  flags.renamed(ph, "--slices", "--num", dest="num", type=int, required=True,
                help="number of slices to write")
  ph.add_argument("--seed", type=int, default=0,
                  help="seed of the subjects, scanners and bleeds drawn (default 0)")
  flags.renamed(ph, "--matrix", "--size", type=int, default=None,
                help="side of each generated slice in pixels, a scanner's matrix (default 512; "
                     "256 with --png)")
  ph.add_argument("--positive", type=float, default=0.45,
                  help="expected share of slices with a bleed (RSNA's is ~0.14)")
  ph.add_argument("--per-series", type=int, default=40,
                  help="at most this many contiguous slices per series")
  ph.add_argument("--wide", action="store_true",
                  help="held-out scanner ranges (more bone kernels, 7-10 mm slices, 160-320 mm "
                       "fields, lower and higher dose): a test set unlike the training one")
  ph.add_argument("--workers", type=int, default=None, help="processes (default: CPU cores)")
  ph.add_argument("--png", type=int, nargs="?", const=phantom.PNG_SIZE, metavar="SIDE",
                  help="write the seed's layout instead: stage_1_train_images/ID_*.png (grey, "
                       f"default {phantom.PNG_SIZE} px) + stage_1_train.csv")
  ph.set_defaults(run=_phantom)

  b = sub.add_parser("build", help="build a TFDS dataset (array_record, no TensorFlow)")
  src = b.add_mutually_exclusive_group(required=True)
  src.add_argument("--rsna", type=Path, help="Kaggle RSNA folder: stage_*_train.csv + images "
                   "(DICOMs, or the seed's ID_*.png set)")
  src.add_argument("--png", type=Path, help="the paper's PNG folders, one per class")
  src.add_argument("--phantom", type=int, metavar="N", help="generate N phantom slices")
  b.add_argument("--out", type=Path, required=True, help="TFDS data dir")
  flags.renamed(b, "--draw", "--protocol", choices=rsna.DRAWS,
                old_values=flags.OLD_VALUES["draw"], default="balanced",
                help="how images are drawn into splits: balanced: per class, as the paper's text "
                     "drew; paper-code: the authors' parser (CSV order, first subtype with "
                     "room); by-patient: every image, split by patient (else study) (train's "
                     "--draw; default balanced)")
  flags.renamed(b, "--stored-size", "--size", dest="size", type=int, default=256,
                help="stored image side in pixels (default 256; train's --stored-size)")
  b.add_argument("--input-mode", choices=image.INPUT_MODES, default="windows",
                 help="windows: brain, subdural, bone CT windows stored as RGB; grey: one grey "
                      "channel, the brain window (train's --input-mode; default windows)")
  flags.renamed_values(b, "--windows", "--input-mode", {"3": "windows", "1": "grey"},
                       dest="input_mode")
  b.add_argument("--per-class", type=int, default=None,
                 help="balanced and paper-code draws: images per class (default 2000; phantom: "
                      "as many as exist)")
  b.add_argument("--seed", type=int, default=0, help="seed of the split draw")
  b.add_argument("--workers", type=int, default=None, help="processes (default: CPU cores)")
  b.add_argument("--jpeg-share", type=float, default=0.0,
                 help="share of images stored after a JPEG round trip (quality 30-95), so a "
                      "model trained on DICOM-made images also sees JPEG exports")
  b.set_defaults(run=_build)

  i = sub.add_parser("info", help="print what a built dataset holds")
  i.add_argument("dataset", type=Path, help="a dataset folder `data build` printed")
  i.set_defaults(run=_info)

  pv = sub.add_parser("preview", help="write a contact sheet of synthetic slices (PNG)")
  pv.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / PREVIEW_NAME,
                  help=f"PNG to write (default: {PREVIEW_NAME} in the temporary folder; "
                  "docs/phantom_contact_sheet.png refreshes the docs' sheet)")
  pv.add_argument("--seed", type=int, default=0, help="phantom seed")
  flags.renamed(pv, "--matrix", "--size", type=int, default=preview.SIZE,
                help=f"side of each rendered slice in pixels (default {preview.SIZE})")
  pv.set_defaults(run=_preview)

  args = p.parse_args(argv)
  # The library logs what a build does (reused, built, skipped files); show it as before.
  logging.basicConfig(format="[data] %(message)s")
  logging.getLogger("ichflax").setLevel(logging.INFO)
  try:
    args.run(args)
  except (ValueError, OSError) as e:  # DataError, LabelError, InputError are ValueErrors
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
