"""The demo server under a class of visitors: 1 vs 2 analyses at once (`python app.py --analyses`).

Each run starts `python app.py` on a free 127.0.0.1 port with the shipped weights, warms it (one
request of each file, so every batch shape is compiled), then `--clients` gradio_client visitors
at once each send `--each` uploads in turn over two single slices and a zipped 20-slice series
(the mix of tests/test_load.py). Reported per setting: requests/s and slices/s over the burst,
p50/p95 latency (submit to result) of single slices and of series, failed requests, server RSS.
Settings alternate (1, 2, 1, 2 …) so a change in the machine's load hits both alike.

    python bench/serve_concurrency.py --repeats 2 --json bench/results/serve_concurrency.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common
from ichflax.data import ct_writer, items, phantom

SERIES_SLICES = 20
STARTUP_S = 300


def make_files(root: Path) -> list[tuple[Path, int]]:
  """(file, slices): two phantom slices and a zipped series, as in tests/test_load.py."""
  def slice_(seed: int, index: int = 0) -> Path:
    path = root / f"slice_{seed:03d}.dcm"
    hu = phantom.make_slice(np.random.default_rng(seed), 128, (seed % 5,)).hu
    geometry = items.SliceGeometry(f"ID_{seed}", "ID_study", "ID_series", index + 1, 5.0 * index)
    ct_writer.write_ct(path, hu, geometry, patient_id="PHANTOM")
    return path
  series = root / "series.zip"
  with zipfile.ZipFile(series, "w") as zf:
    for i in range(SERIES_SLICES):
      zf.write(slice_(100 + i, i), f"s{i:03d}.dcm")
  return [(slice_(1), 1), (slice_(2), 1), (series, SERIES_SLICES)]


def start(analyses: int, root: Path, **env_extra: str) -> tuple[subprocess.Popen, str]:
  """`python app.py` on a free loopback port with the shipped weights, once it serves."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, GRADIO_TEMP_DIR=str(root / "uploads"), GRADIO_ANALYTICS_ENABLED="False",
             **env_extra)
  env.pop("SPACE_ID", None)
  proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--analyses",
                           str(analyses), "--checkpoint", str(common.ROOT / "checkpoints" /
                                                             "multilabel")],
                          cwd=common.ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + STARTUP_S
  import httpx
  while time.monotonic() < deadline and proc.poll() is None:
    try:
      if httpx.get(url, timeout=2).status_code == 200:
        return proc, url
    except httpx.HTTPError:
      time.sleep(0.5)
  proc.kill()
  raise SystemExit(f"app.py did not serve within {STARTUP_S} s")


def rss_mb(pid: int) -> float:
  return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
             .group(1)) / 1024


def run(analyses: int, files: list[tuple[Path, int]], clients: int, each: int,
        root: Path) -> dict:
  from gradio_client import Client, handle_file
  proc, url = start(analyses, root)
  try:
    warm = Client(url, verbose=False, download_files=False)
    for path, _ in files:
      warm.predict([handle_file(str(path))], api_name="/analyze")
    rss0 = rss_mb(proc.pid)

    def visitor(i: int) -> list[tuple[int, float, bool]]:
      client, done = Client(url, verbose=False, download_files=False), []
      for k in range(each):
        path, n = files[(i + k) % len(files)]
        t = time.perf_counter()
        message = client.submit([handle_file(str(path))], api_name="/analyze").result(
            timeout=600)[1]
        done.append((n, time.perf_counter() - t, "Latency" in message and "Skipped" not in message))
      return done

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
      done = [d for ds in pool.map(visitor, range(clients)) for d in ds]
    wall = time.perf_counter() - t0
    rss1 = rss_mb(proc.pid)
  finally:
    proc.terminate()
    proc.wait(timeout=60)

  def pct(xs, q):
    return float(np.percentile(xs, q)) if xs else float("nan")

  single = [t for n, t, _ in done if n == 1]
  series = [t for n, t, _ in done if n > 1]
  return {"analyses": analyses, "requests": len(done), "failed": sum(not ok for *_, ok in done),
          "wall_s": wall, "requests_per_s": len(done) / wall,
          "slices_per_s": sum(n for n, *_ in done) / wall,
          "single_p50_s": statistics.median(single), "single_p95_s": pct(single, 95),
          "series_p50_s": statistics.median(series), "series_p95_s": pct(series, 95),
          "rss_before_mb": rss0, "rss_after_mb": rss1}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--analyses", type=int, nargs="+", default=[1, 2])
  p.add_argument("--clients", type=int, default=8)
  p.add_argument("--each", type=int, default=6)
  p.add_argument("--repeats", type=int, default=1)
  p.add_argument("--json", default=None)
  args = p.parse_args()
  info = common.machine_info()
  rows = []
  with tempfile.TemporaryDirectory(prefix="ichflax-serve-") as tmp:
    files = make_files(Path(tmp))
    for _ in range(args.repeats):
      for n in args.analyses:
        rows.append(run(n, files, args.clients, args.each, Path(tmp) / f"run{len(rows)}"))
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in rows[-1].items()}), flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "runs": rows},
                                          indent=1))


if __name__ == "__main__":
  main()
