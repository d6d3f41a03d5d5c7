"""The backbones compared on one run each: same phantom split, same steps, from random init.

Each backbone trains the cpu-demo preset (--trainable all, 96 px, 4 epochs of the 1,500-slice
phantom) on the multilabel task, then its best checkpoint is tested (per-output AUC, RSNA
weighted log loss, on the phantom's held-out subjects) and served: one 128 px phantom DICOM slice
through the Predictor with Grad-CAM, median of --repeats calls. Training img/s is the loop's own
(compiles and saves left out). Runs one after another in one process, so they share the machine
alike; the phantom is built once.

    python bench/backbones.py [--backbones resnet50 efficientnet_b0 convnext_tiny]
                              [--epochs 4] [--json bench/results/backbones.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common
from ichflax import config, tasks
from ichflax.data import ct_writer, items, phantom
from ichflax.serving import predictor as predictor_lib
from ichflax.spec import BACKBONES


def served_ms(step_dir: str, dcm: Path, repeats: int) -> float:
  """Median ms of one DICOM slice through the Predictor, Grad-CAM included (compiled first)."""
  predictor = predictor_lib.Predictor.from_checkpoint(step_dir)
  predictor.predict([predictor.load(dcm)])
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    predictor.predict([predictor.load(dcm)])
    times.append(1000 * (time.perf_counter() - start))
  return statistics.median(times)


def run(arch: str, epochs: int, root: Path, dcm: Path, repeats: int) -> dict:
  from ichflax.training import loop
  cfg = config.preset("cpu-demo", task="multilabel", backbone=arch, epochs=epochs,
                      workdir=str(root / arch), progress_bar=False)
  result = loop.run(cfg)
  test = result["metrics"]["test"]
  rates = [h.images_per_s for h in result["history"] if h.images_per_s]
  return {"backbone": arch, "steps": result["history"][-1].step,
          "per_output_auc": test["per_class_auc"], "rsna_log_loss": test["rsna_log_loss"],
          "accuracy": test["accuracy"], "train_images_per_s": statistics.median(rates),
          "serve_ms": served_ms(result["checkpoint"], dcm, repeats)}


def table(rows: list[dict]) -> str:
  labels = tasks.get_task("multilabel").class_names
  lines = ["| backbone | " + " | ".join(f"AUC {k}" for k in labels)
           + " | RSNA log loss | train img/s | serve ms/slice |",
           "|---" * (len(labels) + 4) + "|"]
  for r in rows:
    aucs = " | ".join(f"{r['per_output_auc'][k]:.3f}" for k in labels)
    lines.append(f"| {BACKBONES[r['backbone']]} | {aucs} | {r['rsna_log_loss']:.4f} | "
                 f"{r['train_images_per_s']:.1f} | {r['serve_ms']:.0f} |")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
  p.add_argument("--epochs", type=int, default=4, help="epochs per backbone (cpu-demo: 4)")
  p.add_argument("--repeats", type=int, default=20, help="served slices timed per backbone")
  p.add_argument("--json", default=None)
  args = p.parse_args()
  rows = []
  with tempfile.TemporaryDirectory(prefix="ichflax-backbones-") as tmp:
    root = Path(tmp)
    os.environ.setdefault("ICHFLAX_DATA_DIR", str(root / "data"))  # one phantom for every run
    dcm = root / "slice.dcm"
    bleed = phantom.make_slice(np.random.default_rng(3), 128, (tasks.SUBTYPES.index("subdural"),))
    ct_writer.write_ct(dcm, bleed.hu, items.SliceGeometry("ID_0", "ID_s", "ID_se", 1, 0.0),
                       patient_id="PHANTOM")
    for arch in args.backbones:
      rows.append(run(arch, args.epochs, root, dcm, args.repeats))
      print(json.dumps(rows[-1]), flush=True)
  print(table(rows))
  if args.json:
    Path(args.json).write_text(json.dumps({"machine": common.machine_info(), "rows": rows},
                                          indent=1))


if __name__ == "__main__":
  main()
