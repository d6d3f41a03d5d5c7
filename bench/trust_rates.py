"""How often the scope and domain checks pass what they should and refuse what they should.

    python bench/trust_rates.py [--checkpoint checkpoints/multilabel] [--studies 40] [--json P]

1. Fresh phantom series (another seed than training, every slice of each study including the top
   and bottom ones) written as DICOMs and read back: the share `ok`, and the scope check's false
   refusals alone.
2. Out-of-training-distribution CT made without patient data (no licensed real CT exists here):
   the same phantom anatomy pushed towards what real scanners give, one change at a time and all
   together: `sharp` (512 matrix, sharp-kernel quantum noise 15-35 HU), `texture` (grey/white
   matter mottling and fine speckle), `fov` (a 350 mm field: a smaller head), `streaks` (beam
   hardening streaks between dense bone), `real-like` (all four), plus pydicom's `CT_small.dcm`
   and `MR_small.dcm`. The share `out_of_domain` or `out_of_scope` is what the issue asks >= 95%.
3. The checks' cost per slice on this CPU beside the model's (scope check, domain score, against
   Predictor.predict with Grad-CAM, batch 8), all in the same run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

if __package__ in (None, ""):  # `python bench/trust_rates.py`: make `bench` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common

PYDICOM_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"
KINDS = ("sharp", "texture", "fov", "streaks", "real-like")


def towards_real(hu: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
  """A phantom slice (256 px) changed the way real scans differ from it (module docstring)."""
  out = hu.astype(np.float32)
  head = out > -500
  if kind in ("fov", "real-like"):  # 230 mm -> 350 mm field: the head shrinks to 66%
    small = ndimage.zoom(out, 230 / 350, order=1)
    canvas = np.full_like(out, -1024.0)
    o = (out.shape[0] - small.shape[0]) // 2
    canvas[o:o + small.shape[0], o:o + small.shape[1]] = small
    out, head = canvas, canvas > -500
  if kind in ("texture", "real-like"):
    brain = (out > 0) & (out < 100)
    mottle = ndimage.gaussian_filter(rng.standard_normal(out.shape), rng.uniform(1.5, 3)) * 40
    speckle = rng.standard_normal(out.shape) * 4
    out = out + brain * (mottle + speckle).astype(np.float32)
  if kind in ("streaks", "real-like"):
    bone = np.argwhere(out > 700)
    for _ in range(int(rng.integers(4, 9))):
      (y0, x0), (y1, x1) = bone[rng.integers(len(bone), size=2)]
      n = int(np.hypot(y1 - y0, x1 - x0)) + 1
      ys, xs = np.linspace(y0, y1, n).astype(int), np.linspace(x0, x1, n).astype(int)
      line = np.zeros_like(out)
      line[ys, xs] = 1
      out = out + head * ndimage.gaussian_filter(line, 1.0) * rng.uniform(-150, -60)
  if kind in ("sharp", "real-like"):  # 512 matrix, sharp kernel: high-frequency quantum noise
    out = ndimage.zoom(out, 2, order=1)
    head = ndimage.zoom(head.astype(np.float32), 2, order=0) > 0.5
    noise = rng.standard_normal(out.shape)
    noise = noise - ndimage.gaussian_filter(noise, 1.0)  # high-pass: a sharp kernel's texture
    out = out + head * (noise / noise.std() * rng.uniform(15, 35)).astype(np.float32)
  return np.clip(out, -1024, 3071).astype(np.float32)


def statuses(predictor, sources) -> collections.Counter:
  counts = collections.Counter()
  for start in range(0, len(sources), 8):
    for p in predictor.predict(sources[start:start + 8], gradcam_on=False):
      counts[p.status] += 1
  return counts


def rates(counts: collections.Counter) -> dict:
  n = sum(counts.values())
  return {"n": n, **{k: counts[k] / n for k in ("ok", "out_of_scope", "out_of_domain")}}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", default=str(common.ROOT / "checkpoints" / "multilabel"))
  p.add_argument("--studies", type=int, default=40, help="fresh phantom studies (4-12 slices)")
  p.add_argument("--seed", type=int, default=2027, help="phantom seed (training used 7)")
  p.add_argument("--real-like", type=int, default=60, help="slices per out-of-domain kind")
  p.add_argument("--json", default=str(common.ROOT / "bench" / "results" / "trust_rates.json"))
  a = p.parse_args(argv)
  from ichflax.data import inputs, phantom
  from ichflax.serving.predictor import Predictor
  from ichflax.trust import scope
  from ichflax.xla import cache as xla_cache
  xla_cache.enable()
  predictor = Predictor.from_checkpoint(a.checkpoint)
  if not predictor.domain_checked:
    sys.exit(f"{a.checkpoint} carries no domain statistics: run python -m ichflax.calibrate")
  results: dict = {"checkpoint": a.checkpoint, "trained_on": predictor.trained_on()}
  with tempfile.TemporaryDirectory() as tmp:
    folder = phantom.write_rsna(tmp, num=a.studies * 8, seed=a.seed, size=256, workers=1)
    files = sorted((folder / phantom.IMAGES_DIR).glob("*.dcm"))
    slices = [predictor.load(f) for f in files]
    refused = [s.name for s in slices if scope.check(s) is not None]
    results["fresh_phantom"] = {**rates(statuses(predictor, slices)), "seed": a.seed,
                                "scope_false_refusals": len(refused) / len(slices)}
    ends = [s for s in slices if s.geometry.instance_number == 1] + [
        max((t for t in slices if t.geometry.series_instance_uid == s.geometry.series_instance_uid),
            key=lambda t: t.geometry.instance_number)
        for s in slices if s.geometry.instance_number == 1]
    results["fresh_phantom_top_bottom"] = rates(statuses(predictor, ends))
  rng = np.random.default_rng(a.seed + 1)
  for kind in KINDS:
    hus = [towards_real(phantom.make_slice(rng, 256, phantom.sample_subtypes(rng),
                                           level=rng.uniform(0.02, 0.98)).hu, kind, rng)
           for _ in range(a.real_like)]
    results[kind] = rates(statuses(predictor, [inputs.load_slice(h, f"{kind}{i}")
                                               for i, h in enumerate(hus)]))
  results["pydicom CT_small + MR_small"] = rates(statuses(predictor, [
      predictor.load(PYDICOM_FILES / n) for n in ("CT_small.dcm", "MR_small.dcm")]))
  # Cost per slice: the checks beside the model, same run, same slices (512 px HU).
  batch = [inputs.load_slice(phantom.make_slice(rng, 512).hu, f"t{i}",
                             windows=predictor.windows, stored_size=predictor.stored_size)
           for i in range(8)]
  predictor.predict(batch)  # compile
  timings = collections.defaultdict(list)
  domain = predictor.domains[0]
  features = np.random.default_rng(0).standard_normal((8, domain.mean.shape[0]))
  for _ in range(5):
    t = time.perf_counter()
    for s in batch:
      scope.check(s)
    timings["scope check"].append((time.perf_counter() - t) / 8)
    t = time.perf_counter()
    domain.score(features)
    timings["domain score"].append((time.perf_counter() - t) / 8)
    t = time.perf_counter()
    predictor.predict(batch)
    timings["Predictor.predict (model + Grad-CAM + checks)"].append((time.perf_counter() - t) / 8)
  results["ms_per_slice"] = {k: 1000 * float(np.median(v)) for k, v in timings.items()}
  results["machine"] = common.machine_info(argv)
  Path(a.json).parent.mkdir(parents=True, exist_ok=True)
  Path(a.json).write_text(json.dumps(results, indent=1))
  print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
