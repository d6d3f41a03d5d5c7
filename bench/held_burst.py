"""Server memory under a burst of big uploads, with and without the held-views budget.

Why: the page keeps every upload's slice views so its visitor can slide through them; issue 26
measured ~1.4 MB held per slice, so ten 1,000-slice uploads would hold ~14 GB on a 16 GB Space.
Each run starts `python app.py` (the shipped weights) with `ICHFLAX_VIEW_BUDGET_MB` set, then new
visitors (one gradio_client each: one session each) upload, in turn, `--small` zips of 100 slices
and `--big` zips of 1,000 (512 px phantom DICOM, the page's limit), and the server's RSS is read
after each. "unbounded" is a budget no burst reaches: the views held as before the budget.

    python bench/held_burst.py --json bench/results/held_burst.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common
from bench.serve_concurrency import rss_mb, start
from ichflax.data import ct_writer, items, synth

UNBOUNDED_MB = "10000000"


def make_zip(root: Path, slices: int, distinct: list[np.ndarray]) -> Path:
  """A zipped series of `slices` DICOM files cycling through `distinct` phantom slices."""
  path = root / f"series_{slices}.zip"
  one = root / "one.dcm"
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for i in range(slices):
      geometry = items.SliceGeometry(f"ID_{i:04d}", "ID_study", f"ID_series_{slices}", i + 1,
                                     1.0 * i)
      ct_writer.write_ct(one, distinct[i % len(distinct)], geometry, patient_id="PHANTOM")
      zf.write(one, f"s{i:04d}.dcm")
  return path


def run(budget_mb: str, uploads: list[tuple[Path, int]], root: Path) -> dict:
  from gradio_client import Client, handle_file
  proc, url = start(1, root, ICHFLAX_VIEW_BUDGET_MB=budget_mb)
  try:
    Client(url, verbose=False, download_files=False).predict(
        [handle_file(str(uploads[0][0]))], api_name="/analyze")  # warm: every batch compiled
    rows = [{"upload": "warm-up", "rss_mb": rss_mb(proc.pid)}]
    for k, (path, n) in enumerate(uploads):
      visitor = Client(url, verbose=False, download_files=False)
      message = visitor.predict([handle_file(str(path))], api_name="/analyze")[1]
      rows.append({"upload": f"{k + 1}: {n} slices", "rss_mb": rss_mb(proc.pid),
                   "ok": "Latency" in message})
      print(budget_mb, json.dumps(rows[-1]), flush=True)
  finally:
    proc.terminate()
    proc.wait(timeout=60)
  return {"budget_mb": budget_mb, "rows": rows, "peak_rss_mb": max(r["rss_mb"] for r in rows)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--small", type=int, default=3, help="uploads of 100 slices")
  p.add_argument("--big", type=int, default=10, help="uploads of 1,000 slices")
  p.add_argument("--budgets", nargs="+", default=[UNBOUNDED_MB, "6000"],
                 help="ICHFLAX_VIEW_BUDGET_MB per run (MiB)")
  p.add_argument("--json", default=None)
  args = p.parse_args()
  rng = np.random.default_rng(5)
  subject = synth.make_subject(rng, synth.sample_subtypes(rng, positive=1.0))
  scanner = synth.Scanner.sample(rng, subject.head_mm)
  lo, hi = subject.z_range
  distinct = [synth.render_slice(subject, scanner, float(z), 512, rng).hu
              for z in np.linspace(lo + 0.2 * (hi - lo), hi - 0.1 * (hi - lo), 12)]
  with tempfile.TemporaryDirectory(prefix="ichflax-burst-") as tmp:
    root = Path(tmp)
    small, big = make_zip(root, 100, distinct), make_zip(root, 1000, distinct)
    uploads = [(small, 100)] * args.small + [(big, 1000)] * args.big
    runs = [run(b, uploads, root / f"run{i}") for i, b in enumerate(args.budgets)]
  out = {"machine": common.machine_info(), "runs": runs}
  if args.json:
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
