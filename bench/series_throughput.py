"""Slices/s of a whole series through the one reader and the Predictor: decode apart from model.

A phantom series (default 100 slices of 512x512) is written once per input format: uncompressed
DICOM, the compressed transfer syntaxes PACS exports use (JPEG Lossless SV1, JPEG-LS, JPEG 2000
lossless, RLE) and a NIfTI .nii.gz. For each, `ichflax.data.sources` reads the series and decodes
it batch by batch into model images (decode: file -> HU -> `slice_to_uint8`), timed apart from
the model (probabilities + Grad-CAM, as the app and the CLI run it). The model images of every
format are checked identical, so one model timing serves all of them; end-to-end slices/s is
slices / (decode + model).

    python bench/series_throughput.py [--checkpoint DIR] [--slices 100] [--size 512] [--json PATH]
                                      [--smoke]

JPEG Lossless SV1 is written with python-gdcm (requirements-dev.txt); without it that row is
skipped. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python bench/series_throughput.py`: make `bench` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common

DEFAULT_JSON = common.ROOT / "bench" / "results" / "series_throughput.json"


@dataclasses.dataclass
class Result:
  format: str
  slices: int
  bytes_on_disk: int
  decode_s: float  # read + decode + HU -> model image, every slice, best of the repeats
  decode_slices_per_s: float
  model_s: float  # probabilities + Grad-CAM for every slice (the same for every format)
  end_to_end_slices_per_s: float
  note: str = ""


def write_formats(out: Path, volume: np.ndarray) -> dict[str, list[Path]]:
  """The series in each format; a format whose encoder is missing is left out."""
  import pydicom
  from pydicom import uid

  from ichflax.data import ct_writer, items
  plain = out / "plain"
  plain.mkdir()
  for i, hu in enumerate(volume):
    geo = items.SliceGeometry(f"1.2.826.0.1.{i + 1}", "1.2.826.0.2", "1.2.826.0.3", i + 1,
                              5.0 * i)
    ct_writer.write_ct(plain / f"{i:04d}.dcm", hu, geo, patient_id="PHANTOM")
  formats = {"DICOM uncompressed": [plain]}
  for name, ts in (("DICOM RLE", uid.RLELossless), ("DICOM JPEG-LS lossless", uid.JPEGLSLossless),
                   ("DICOM JPEG 2000 lossless", uid.JPEG2000Lossless)):
    folder = out / name.replace(" ", "_")
    folder.mkdir()
    for f in sorted(plain.iterdir()):
      ds = pydicom.dcmread(f)
      ds.compress(ts)
      ds.save_as(folder / f.name, enforce_file_format=True)
    formats[name] = [folder]
  try:
    import gdcm
  except ImportError:
    print("python-gdcm not installed: JPEG Lossless SV1 skipped (pip install python-gdcm)")
  else:
    folder = out / "sv1"
    folder.mkdir()
    for f in sorted(plain.iterdir()):
      reader = gdcm.ImageReader()
      reader.SetFileName(str(f))
      reader.Read()
      change = gdcm.ImageChangeTransferSyntax()
      change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
      change.SetInput(reader.GetImage())
      change.Change()
      writer = gdcm.ImageWriter()
      writer.SetFileName(str(folder / f.name))
      writer.SetFile(reader.GetFile())
      writer.SetImage(change.GetOutput())
      writer.Write()
    formats["DICOM JPEG Lossless SV1"] = [folder]
  import nibabel as nib
  ras = np.ascontiguousarray(np.transpose(volume, (2, 1, 0))[::-1, ::-1, :]).astype(np.int16)
  nib.save(nib.Nifti1Image(ras, np.diag([0.45, 0.45, 5.0, 1.0])), out / "series.nii.gz")
  formats["NIfTI .nii.gz"] = [out / "series.nii.gz"]
  return formats


def decode_all(paths: list[Path], windows, stored_size: int, batch: int) -> list:
  from ichflax.data import sources
  reading = sources.read(paths, windows=windows, stored_size=stored_size)
  assert not reading.problems, reading.problems
  return [s for series in reading.series for slices, _ in series.batches(batch) for s in slices]


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", default=str(common.ROOT / "checkpoints" / "multilabel"))
  p.add_argument("--slices", type=int, default=100)
  p.add_argument("--size", type=int, default=512)
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--json", default=str(DEFAULT_JSON))
  p.add_argument("--smoke", action="store_true", help="CI size: 6 slices of 64x64, 1 repeat")
  args = p.parse_args(argv)
  if args.smoke:
    args.slices, args.size, args.repeats = 6, 64, 1
  from ichflax.xla import cache as xla_cache
  xla_cache.enable()
  from ichflax.data import dicom, phantom
  from ichflax.serving.predictor import Predictor
  dicom.quiet_pydicom()
  info = common.machine_info(argv)
  predictor = Predictor.from_checkpoint(args.checkpoint, batch_size=args.batch_size)
  rng = np.random.default_rng(0)
  volume = np.stack([np.rint(phantom.make_slice(rng, args.size, (int(rng.integers(5)),)).hu)
                     for _ in range(args.slices)]).astype(np.float32)
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    formats = write_formats(Path(tmp), volume)
    reference, decode_s = None, {}
    for name, paths in formats.items():
      times = []
      for _ in range(args.repeats):
        start = time.perf_counter()
        slices = decode_all(paths, predictor.windows, predictor.stored_size, args.batch_size)
        times.append(time.perf_counter() - start)
      reference = reference or slices  # the uncompressed series: what the model is timed on
      assert len(slices) == args.slices, name
      for a, b in zip(slices, reference):  # the same model images: one model timing for all
        np.testing.assert_array_equal(a.model_image, b.model_image, err_msg=name)
      sizes = [f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.iterdir())]
      decode_s[name] = (min(times), sum(sizes))
      del slices
    predictor.predict(reference[:args.batch_size])  # compile outside the timing
    model_times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      for i in range(0, len(reference), args.batch_size):
        predictor.predict(reference[i:i + args.batch_size])
      model_times.append(time.perf_counter() - start)
    model_s = min(model_times)
    for name, (seconds, size) in decode_s.items():
      results.append(Result(name, args.slices, size, seconds, args.slices / seconds, model_s,
                            args.slices / (seconds + model_s)))
  print(common.heading(f"series of {args.slices} slices {args.size}x{args.size}, "
                       f"{Path(args.checkpoint).name} ({predictor.specs[0].image_size} px, "
                       f"batch {args.batch_size}), best of {args.repeats}", info))
  print("| input | MB | decode s | decode slices/s | model + Grad-CAM s | end-to-end slices/s |")
  print("|---|---:|---:|---:|---:|---:|")
  for r in results:
    print(f"| {r.format} | {r.bytes_on_disk / 2**20:.1f} | {r.decode_s:.2f} | "
          f"{r.decode_slices_per_s:.0f} | {r.model_s:.2f} | {r.end_to_end_slices_per_s:.1f} |")
  common.write_json(args.json, info, [], series=[dataclasses.asdict(r) for r in results])
  return 0


if __name__ == "__main__":
  sys.exit(main())
