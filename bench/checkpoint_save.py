"""Bytes and seconds per training checkpoint save: whole model vs lean (bn-head), one run.

A whole save writes every parameter (the frozen backbone included) with the Adam state of the
trainable part; a lean one (`checkpoints.save(..., frozen=...)`) writes the trainable parameters,
BatchNorm statistics and Adam state, the frozen part once per run (timed apart). Seconds are
from `manager.save` until the write is finished (orbax saves asynchronously).

  python bench/checkpoint_save.py --saves 5 --json /tmp/ckpt.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/checkpoint_save.py`: make `bench` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from bench import common


def _bytes(path: Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(saves: int) -> dict:
  import optax
  from flax import nnx

  from ichflax import checkpoint, config, models
  from ichflax.checkpoint import layout
  from ichflax.progress import Progress
  from ichflax.training import checkpoints, steps
  from ichflax.training import loop as train
  cfg = config.preset("paper", task="binary")
  model = models.build_classifier("binary", "keras", 0.4, rngs=nnx.Rngs(0))
  _, trainable, stats, frozen = steps.split(model, models.trainable_filter("bn-head"))
  opt_state = optax.adam(1e-3).init(trainable)
  spec = train.model_spec(cfg, model, {"size": 256, "channels": 3})
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    for kind in ("whole", "lean"):
      manager = checkpoints.open_manager(Path(tmp) / kind, keep=saves)
      state = (checkpoint.model_state(model) if kind == "whole"
               else nnx.merge_state(trainable, stats))
      lean = nnx.state(frozen, nnx.Param) if kind == "lean" else None
      seconds = []
      for step in range(1, saves + 1):
        t0 = time.perf_counter()
        checkpoints.save(manager, step, state, opt_state, spec=spec, config=cfg,
                        progress=Progress(step=step), frozen=lean)
        manager.wait_until_finished()
        seconds.append(time.perf_counter() - t0)
      step_dir = Path(manager.directory) / str(saves)
      out[kind] = {"bytes_per_save": _bytes(step_dir), "s_per_save_median": float(np.median(
          seconds[1:] if kind == "lean" else seconds)), "s_first_save": seconds[0],
          "bytes_once": _bytes(Path(tmp) / kind / layout.FROZEN) if lean else 0}
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--saves", type=int, default=5)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  result = run(args.saves)
  info = common.machine_info()
  print("| save | bytes per save | s per save (median) | first save s | written once |")
  print("|---|---|---|---|---|")
  for kind, r in result.items():
    print(f"| {kind} | {r['bytes_per_save'] / 2**20:,.2f} MiB | {r['s_per_save_median']:.3f} | "
          f"{r['s_first_save']:.3f} | {r['bytes_once'] / 2**20:,.1f} MiB |")
  w, lean = result["whole"], result["lean"]
  print(f"- lean / whole: bytes {lean['bytes_per_save'] / w['bytes_per_save']:.4f}, seconds "
        f"{lean['s_per_save_median'] / w['s_per_save_median']:.3f}")
  if args.json:
    Path(args.json).write_text(json.dumps({"machine": info, "saves": result}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
