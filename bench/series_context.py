"""Series context side by side: K = 1 vs K = 3, each with and without its sequence stage.

Reads the sequence stages' reports (each holds its slice model's test metrics and its own, on
the same slices, both calibrated on validation) and times serving one series per checkpoint
(`Predictor.predict`, Grad-CAM on as the CLI runs it, after a warm-up call; median of 3).

    python bench/series_context.py --stages runs/k1-seq runs/k3-seq --series SERIES_DIR \
        --out bench/results/series-context/side_by_side.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench import common
from ichflax.serving.predictor import Predictor
from ichflax.training import sequence

REPEATS = 3


def serve_ms(checkpoint: str, files: list[str]) -> float:
  """Median milliseconds to answer one series with this checkpoint, after a warm-up."""
  predictor = Predictor.from_checkpoint(checkpoint)
  predictor.predict(files)
  times = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    predictor.predict(files)
    times.append(1000 * (time.perf_counter() - start))
  return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--stages", nargs="+", required=True, help="sequence-stage workdirs")
  p.add_argument("--series", type=Path, required=True, help="a folder of one series' DICOMs")
  p.add_argument("--out", type=Path, required=True, help="JSON to write")
  args = p.parse_args(argv)
  files = sorted(str(f) for f in args.series.glob("*.dcm"))
  rows, timings = {}, {}
  for stage in args.stages:
    report = json.loads((Path(stage) / "report" / "report.json").read_text())
    k = report["context"]
    rows[f"K = {k}"] = report["test"]["slice model"]
    rows[f"K = {k} + sequence stage"] = report["test"]["with sequence stage"]
    timings[f"K = {k}"] = serve_ms(report["slice_checkpoint"], files)
    timings[f"K = {k} + sequence stage"] = serve_ms(str(Path(stage) / "checkpoint"), files)
  lines = sequence.table(rows)
  lines[0] += " serve one series, ms |"
  lines[1] += "---|"
  lines[2:] = [f"{line} {timings[name]:.0f} |" for line, name in zip(lines[2:], rows)]
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps({"machine": common.machine_info(), "series_slices": len(files),
                                  "rows": rows, "serve_ms": timings}, indent=2, default=float)
                      + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
