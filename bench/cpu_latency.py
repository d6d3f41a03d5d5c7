"""One-slice CPU inference latency of the serving path, beside a PyTorch ResNet50 forward.

What a demo visitor waits for: one DICOM slice through `ichflax.serving.predictor.Predictor`
(read, HU, windows, model, and optionally Grad-CAM + attention box), p50 / p90 / min over single
calls;
then the jitted model alone on the prepared input, as served (`ichflax.xla.options`) and as
jaxlib's default CPU options would compile it (the before of that change); then torchvision's
ResNet50 forward (eager, inference mode) on the very same normalised input, so the two
frameworks are compared on equal work in the same run. Cases are timed in turn, one call each
per round, so load from other work on a shared machine falls on all of them alike. torch is
imported lazily and only here.

    python bench/cpu_latency.py [--checkpoint DIR] [--repeats 50] [--json PATH] [--smoke]

Without a checkpoint (or with --random) a randomly initialised multilabel model at --image-size
is timed: latency does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python bench/cpu_latency.py`: make `bench` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common

DEFAULT_JSON = common.ROOT / "bench" / "results" / "cpu_latency.json"


@dataclasses.dataclass
class Latency:
  framework: str
  impl: str
  what: str
  p50_ms: float
  p90_ms: float
  min_ms: float
  first_call_s: float
  repeats: int
  note: str = ""


@dataclasses.dataclass
class Case:
  """One configuration: `call()` returns what `sync` waits on."""

  framework: str
  impl: str
  what: str
  call: Callable[[], Any]
  sync: Callable[[Any], Any]
  note: str = ""


def measure(cases: list[Case], warmup: int, repeats: int) -> list[Latency]:
  """First call apart, then single calls taken in turn (round robin), so that other work on a
  shared machine slows every case alike and their ratios stay fair."""
  first = []
  for case in cases:
    t0 = time.perf_counter()
    case.sync(case.call())
    first.append(time.perf_counter() - t0)
    for _ in range(warmup):
      case.sync(case.call())
  times = [[] for _ in cases]
  for _ in range(repeats):
    for case, out in zip(cases, times):
      t0 = time.perf_counter()
      case.sync(case.call())
      out.append((time.perf_counter() - t0) * 1e3)
  return [Latency(c.framework, c.impl, c.what, float(np.percentile(t, 50)),
                  float(np.percentile(t, 90)), float(np.min(t)), f, len(t), c.note)
          for c, t, f in zip(cases, times, first)]


def _predictor(args):
  """The checkpoint's Predictor, or a random-init multilabel one at --image-size."""
  from ichflax import tasks
  from ichflax.serving import predictor
  if args.checkpoint and not args.random:
    return predictor.Predictor.from_checkpoint(*args.checkpoint, batch_size=1), "checkpoint"
  from flax import nnx

  from ichflax import models
  from ichflax.data import image
  from ichflax.spec import ModelSpec
  model = models.build_classifier("multilabel", "keras", rngs=nnx.Rngs(0))
  model.eval()
  spec = ModelSpec(task="multilabel", class_names=tasks.LABELS, variant="keras",
                   image_size=args.image_size, stored_size=args.stored_size,
                   windows=image.THREE_WINDOWS, dropout=0.3, trainable="all",
                   data="random init (benchmark)")
  return predictor.Predictor([(model, spec)], batch_size=1), "random init"


def _torch_case(x_nhwc: np.ndarray) -> Case:
  import torch
  import torchvision
  model = torchvision.models.resnet50(weights=None).eval()
  x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))

  def forward():
    with torch.inference_mode():
      return model(x)

  return Case("torch", f"torchvision resnet50 eager ({torch.get_num_threads()} threads)",
              "forward only (same input)", forward, lambda out: out,
              "random init; 1000-class fc head")


def run(args, slice_path: Path) -> tuple[dict, list[Latency]]:
  import jax

  from ichflax.models import preprocess
  predictor, source = _predictor(args)
  size = predictor.specs[0].image_size
  images = predictor.load(slice_path).model_image[None]
  fns = predictor._runs[0]  # noqa: SLF001
  index = np.full(1, -1, np.int32)
  # The same forward compiled with jaxlib's default CPU options: what ichflax.xla.options buys.
  default_forward = jax.jit(fns.forward.__wrapped__)
  on_slice = f"{source}; {args.slice_size}x{args.slice_size} slice, {size} px"
  cases = [
      Case("jax", "ichflax Predictor", "DICOM -> probabilities",
           lambda: predictor.predict([slice_path], gradcam_on=False), lambda out: out, on_slice),
      Case("jax", "ichflax Predictor", "DICOM -> probabilities + Grad-CAM + box",
           lambda: predictor.predict([slice_path]), lambda out: out, on_slice),
      Case("jax", "ichflax jitted fn", "model forward only", lambda: fns.plain(images),
           jax.block_until_ready, f"{source}; {size} px"),
      Case("jax", "ichflax jitted fn", "forward + Grad-CAM", lambda: fns.with_cam(images, index),
           jax.block_until_ready, f"{source}; {size} px"),
      Case("jax", "jax.jit, jaxlib's default options", "model forward only",
           lambda: default_forward(fns.state, images), jax.block_until_ready,
           f"{source}; {size} px; without ichflax.xla.options"),
  ]
  if common.torch_available() and not args.no_torch:
    cases.append(_torch_case(np.asarray(preprocess.model_input(images, size, "torchvision"))))
  rows = measure(cases, args.warmup, args.repeats)
  info = common.machine_info()
  info["image_size"] = size
  return info, rows


def format_table(rows: list[Latency]) -> str:
  cols = ["framework", "impl", "what", "p50 ms", "p90 ms", "min ms", "first call s", "n", "note"]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    lines.append(f"| {r.framework} | {r.impl} | {r.what} | {r.p50_ms:.1f} | {r.p90_ms:.1f} | "
                 f"{r.min_ms:.1f} | {r.first_call_s:.2f} | {r.repeats} | {r.note} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", action="append", help="default: the demo weights in checkpoints/")
  p.add_argument("--random", action="store_true", help="time a random-init model instead")
  p.add_argument("--image-size", type=int, default=224, help="model input (random init only)")
  p.add_argument("--stored-size", type=int, default=256, help="stored image (random init only)")
  p.add_argument("--slice-size", type=int, default=512, help="the DICOM slice's side, pixels")
  p.add_argument("--repeats", type=int, default=50)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--json", type=Path, default=DEFAULT_JSON)
  p.add_argument("--smoke", action="store_true", help="toy sizes, a few repeats (CI)")
  args = p.parse_args(argv)
  if args.smoke:
    args.image_size, args.stored_size, args.slice_size = 64, 64, 96
    args.repeats, args.warmup, args.random = 3, 1, True
  if args.checkpoint is None and not args.random:
    from ichflax.checkpoint import discover
    args.checkpoint = discover.discover()
  from ichflax.data import ct_writer, items, phantom
  with tempfile.TemporaryDirectory() as tmp:  # one phantom subdural slice, as a DICOM file
    path = Path(tmp) / "slice.dcm"
    hu = phantom.make_slice(np.random.default_rng(0), args.slice_size, (4,)).hu
    ct_writer.write_ct(path, hu, items.SliceGeometry("ID_bench", "ID_s", "ID_r", 1, 0.0),
                       patient_id="PHANTOM")
    info, rows = run(args, path)
  print(common.heading("One-slice CPU latency", info))
  print(format_table(rows))
  common.write_json(args.json, info, [], latency=[dataclasses.asdict(r) for r in rows])
  return 0


if __name__ == "__main__":
  sys.exit(main())
