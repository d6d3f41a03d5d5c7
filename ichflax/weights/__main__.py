"""CLI: `python -m ichflax.weights fetch NAME` then `... convert FILE --out DIR`."""

from __future__ import annotations

import argparse
import sys

from ichflax import flags
from ichflax.models import backbones
from ichflax.spec import backbone_named
from ichflax.weights.convert import ConversionError, convert, read_metadata
from ichflax.weights.fetch import SOURCES, FetchError, fetch


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m ichflax.weights", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  conv = sub.add_parser("convert", help="Keras .h5 / torchvision .pth or .safetensors -> orbax")
  conv.add_argument("input", help="the weights file (format detected from its contents)")
  conv.add_argument("--out", required=True, help="new directory for the orbax checkpoint")
  conv.add_argument("--arch", choices=sorted(backbones.BACKBONES),
                    help="the backbone the file holds (default: recognised from its layer names)")
  get = sub.add_parser("fetch", help="download official ImageNet weights: ResNet50 (keras, "
                       "torchvision), efficientnet_b0, convnext_tiny (torchvision)")
  get.add_argument("name", choices=sorted(SOURCES), help="which published weights")
  flags.renamed(get, "--out", "--to", dest="to",
                help="file or directory to save to (default ~/.cache/ichflax/weights)")
  get.add_argument("--url", help="a mirror of the file (then give --sha256 or --md5)")
  get.add_argument("--sha256", help="pin the file's SHA-256 (full hex, or a prefix of 8+)")
  get.add_argument("--md5", help="the file's md5, for a mirror")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == "fetch":
      path = fetch(args.name, args.to, url=args.url, sha256=args.sha256, md5=args.md5)
      print(f"{path} (verified)")
    else:
      out = convert(args.input, args.out, args.arch)
      info = read_metadata(out)
      print(f"{out}: {info.arch} ({backbone_named(info.arch, info.variant)}), "
            f"{info.stored_values:,} values from {info.source_file} ({info.source_format})")
  except (ConversionError, FetchError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
