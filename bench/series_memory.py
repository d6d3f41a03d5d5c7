"""The app's peak memory for one long series: a zipped 600-slice 512x512 series through the page.

Starts `python app.py` with the shipped weights (as `serve_concurrency.py` does), warms it with
one slice, then uploads the series through gradio_client and reads the server's RSS before, and
its peak (VmHWM, the kernel's high-water mark, so no sample can miss it) after. Batches keep the
decoded slices bounded; what grows with the series is the per-slice view kept for the slider
(int16 HU and a uint8 Grad-CAM map, ~0.75 MB per 512x512 slice) and the upload itself.

    python bench/series_memory.py [--slices 600] [--size 512] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common
from bench.serve_concurrency import rss_mb, start
from ichflax.data import ct_writer, items, phantom


def peak_mb(pid: int) -> float:
  return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
             .group(1)) / 1024


def make_series(root: Path, slices: int, size: int) -> tuple[Path, Path]:
  """(one slice, the zipped series): phantom slices, uncompressed DICOM, zip deflated."""
  rng = np.random.default_rng(0)
  series = root / "series.zip"
  with zipfile.ZipFile(series, "w", zipfile.ZIP_DEFLATED) as zf:
    for i in range(slices):
      path = root / f"s{i:04d}.dcm"
      ct_writer.write_ct(path, phantom.make_slice(rng, size, (int(rng.integers(5)),)).hu,
                         items.SliceGeometry(f"1.2.826.0.1.{i + 1}", "1.2.826.0.2",
                                             "1.2.826.0.3", i + 1, 0.625 * i),
                         patient_id="PHANTOM")
      zf.write(path, path.name)
      if i:
        path.unlink()
  return root / "s0000.dcm", series


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--slices", type=int, default=600)
  p.add_argument("--size", type=int, default=512)
  p.add_argument("--json", default=None)
  args = p.parse_args()
  from gradio_client import Client, handle_file
  info = common.machine_info()
  with tempfile.TemporaryDirectory(prefix="ichflax-memory-") as tmp:
    one, series = make_series(Path(tmp), args.slices, args.size)
    zip_mb = series.stat().st_size / 2**20
    proc, url = start(2, Path(tmp))
    try:
      client = Client(url, verbose=False, download_files=False)
      client.predict([handle_file(str(one))], api_name="/analyze")
      before, before_peak = rss_mb(proc.pid), peak_mb(proc.pid)
      t = time.perf_counter()
      message = client.predict([handle_file(str(series))], api_name="/analyze")[1]
      seconds = time.perf_counter() - t
      after, peak = rss_mb(proc.pid), peak_mb(proc.pid)
    finally:
      proc.terminate()
      proc.wait(timeout=60)
  result = {"machine": info, "slices": args.slices, "size": args.size,
            "zip_mb": zip_mb, "analysed": "Latency" in message,
            "skipped": "Skipped" in message, "seconds": seconds,
            "slices_per_s": args.slices / seconds, "rss_before_mb": before,
            "peak_before_mb": before_peak, "rss_after_mb": after, "peak_mb": peak}
  print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
