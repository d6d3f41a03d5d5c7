"""Series context side by side: K = 1 vs K = 3, each with and without its sequence stage.

Two readings. (1) The stages' own reports: each holds its slice model's test metrics and its
own, on the same test slices, both calibrated on validation. (2) `--held-out DATASET`: every
checkpoint measured on every split of a dataset none of them saw (e.g. a phantom drawn with
another seed), as it serves (`ichflax.evaluate`'s numbers), with each model's change against
the first one and a 95% interval resampling whole series. Serving one series is timed per
checkpoint (`Predictor.predict`, Grad-CAM on as the CLI runs it, after a warm-up; median of
`--repeats`, default 3).

    python bench/series_context.py --stages runs/k1-seq runs/k3-seq --series SERIES_DIR \
        [--held-out DATASET] --out bench/results/series-context/side_by_side.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python bench/series_context.py`: make `bench` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common
from ichflax import checkpoint
from ichflax.evaluation import metrics
from ichflax.serving.predictor import Predictor
from ichflax.training import sequence
from ichflax.trust import calibrate, evaluate

STAGE = " + sequence stage"  # a row's name: its slice model's, then this


def serve_ms(path: str, files: list[str], repeats: int) -> float:
  """Median milliseconds to answer one series with this checkpoint, after a warm-up."""
  predictor = Predictor.from_checkpoint(path)
  predictor.predict(files)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    predictor.predict(files)
    times.append(1000 * (time.perf_counter() - start))
  return statistics.median(times)


def held_out(path: str, dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
  """(probabilities, targets, series ids, task) of every split of `dataset`, as served."""
  model, spec, step_dir, _, splits = calibrate.load_with_data(path, dataset)
  stage = checkpoint.read_series(step_dir)
  parts = [evaluate.evaluate(model, spec, split, resamples=0, stage=stage)[1:] + (
      split.series_ids,) for split in splits.values()]
  return (*(np.concatenate(v) for v in zip(*parts)), spec.task)


def compare(runs: dict[str, tuple], resamples: int = 1000) -> dict[str, dict]:
  """Metrics per model on the same slices, and each model's change with a 95% interval over
  resampled series: against the first model, and a stage against its own slice model."""
  first = next(iter(runs))
  _, targets, series, task = runs[first]
  out = {}
  for name, (p, _, _, _) in runs.items():
    out[name] = metrics.evaluate(task, p, targets, series_ids=series)
    bases = {first} | ({name.removesuffix(STAGE)} if name.endswith(STAGE) else set())
    out[name]["gain"] = {f"vs {base}": metrics.paired_change(
        task, runs[base][0], p, targets, series, resamples=resamples)
        for base in sorted(bases - {name})}
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--stages", nargs="+", required=True, help="sequence-stage workdirs")
  p.add_argument("--series", type=Path, required=True, help="a folder of one series' DICOMs")
  p.add_argument("--held-out", default=None, metavar="DATASET",
                 help="also measure every checkpoint on every split of this unseen dataset")
  p.add_argument("--bootstrap", type=int, default=1000, help="resamples of series")
  p.add_argument("--repeats", type=int, default=3, help="timed calls per checkpoint (median)")
  p.add_argument("--out", type=Path, required=True, help="JSON to write")
  args = p.parse_args(argv)
  files = sorted(str(f) for f in args.series.glob("*.dcm"))
  rows, timings, paths = {}, {}, {}
  for stage in args.stages:
    report = json.loads((Path(stage) / "report" / "report.json").read_text())
    k = report["context"]
    for name, path, key in ((f"K = {k}", report["slice_checkpoint"], "slice model"),
                            (f"K = {k}{STAGE}", str(Path(stage) / "checkpoint"),
                             "with sequence stage")):
      rows[name], paths[name] = report["test"][key], path
      timings[name] = serve_ms(path, files, args.repeats)
  record = {"machine": common.machine_info(), "series_slices": len(files), "rows": rows,
            "serve_ms": timings}
  print("Test split of the training dataset (the stages' reports):\n")
  print("\n".join(_with_times(sequence.table(rows), rows, timings)))
  if args.held_out:
    record["held_out"] = compare({n: held_out(path, args.held_out) for n, path in paths.items()},
                                 args.bootstrap)
    print(f"\nEvery split of {args.held_out} (unseen by every model), as served:\n")
    print("\n".join(sequence.table(record["held_out"])))
    for name, m in record["held_out"].items():
      for base, change in m["gain"].items():
        print(f"- {name} {base}: " + "; ".join(
            f"{k} {g['value']:+.4f} [{g['interval'][0]:+.4f}, {g['interval'][1]:+.4f}]"
            for k, g in change.items()))
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(record, indent=2, default=float) + "\n")
  return 0


def _with_times(lines: list[str], rows: dict, timings: dict) -> list[str]:
  return [lines[0] + " serve one series, ms |", lines[1] + "---|",
          *(f"{line} {timings[name]:.0f} |" for line, name in zip(lines[2:], rows))]


if __name__ == "__main__":
  raise SystemExit(main())
