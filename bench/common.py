"""Shared benchmark helpers: timing, machine facts, one result table, JSON.

Every benchmark reports the same row type and the same machine record, so figures from one run
can be divided by each other (ratios measured side by side) and every figure in
docs/benchmarks.md can name its machine, versions, date and command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere imports the repo's ichflax.
  sys.path.insert(0, str(ROOT))

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
            "array-record", "numpy", "pillow", "torch", "torchvision")


@dataclasses.dataclass
class Row:
  """One measured configuration. `images_per_s` is the headline; the rest says what was run."""

  bench: str  # "train" | "loader"
  framework: str  # "jax" | "torch"
  impl: str  # e.g. "ichflax step", "eager", "torch.compile", "loader w=2"
  mode: str  # "compute" (synthetic batch on device) | "end-to-end" | "loader"
  trainable: str = "-"  # "bn-head" | "all" | "-"
  image_size: int = 0
  batch_size: int = 0
  dtype: str = "-"
  images_per_s: float = float("nan")
  step_ms: float = float("nan")  # median time per step (or per batch for the loader)
  step_ms_spread: float = float("nan")  # (max - min) / median over the repeats, a noise gauge
  compile_s: float = float("nan")  # first call (trace + compile + run), reported apart
  repeats: int = 0
  gflops_per_step: float = float("nan")  # XLA cost analysis, when available
  note: str = ""

  def key(self) -> tuple:
    return (self.trainable, self.image_size, self.batch_size, self.dtype)


def versions() -> dict[str, str]:
  """Installed versions read from package metadata, without importing (torch is slow, optional)."""
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      out[name] = importlib.metadata.version(name)
  return out


def cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine_info(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Who measured what where: the record each figure in the docs must carry."""
  info: dict[str, Any] = {
      "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
      "command": "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT),
                                         *(sys.argv[1:] if argv is None else argv)]),
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "platform": platform.platform(),
      # Other work on a shared machine slows every figure: the load says how busy it was.
      "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
      "versions": versions(),
  }
  if "jax" in sys.modules:  # Only when the benchmark already uses jax: no import side effects.
    import jax
    devs = jax.devices()
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in devs]
  if "torch" in sys.modules:
    import torch
    if torch.cuda.is_available():
      info["torch_cuda_device"] = torch.cuda.get_device_name(0)
      info["torch_cuda"] = torch.version.cuda
    info["torch_threads"] = torch.get_num_threads()
  return info


@dataclasses.dataclass
class Timing:
  first_s: float  # the first call: compile (jax.jit / torch.compile) + one run
  times_s: list[float]

  @property
  def median_s(self) -> float:
    return statistics.median(self.times_s)

  @property
  def spread(self) -> float:
    return (max(self.times_s) - min(self.times_s)) / self.median_s if self.times_s else math.nan


def time_steps(step: Callable[[], Any], sync: Callable[[Any], Any], *, warmup: int,
               repeats: int, steps_per_repeat: int = 1) -> Timing:
  """Times `step` (which must return what `sync` waits on): first call apart, then the median.

  The first call carries compilation, so it is reported apart; `warmup` more calls settle
  allocators and autotuning; each of the `repeats` times `steps_per_repeat` back-to-back steps
  with one sync at the end, so device queues stay full as in training.
  """
  t0 = time.perf_counter()
  sync(step())
  first = time.perf_counter() - t0
  for _ in range(warmup):
    out = step()
  if warmup:
    sync(out)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps_per_repeat):
      out = step()
    sync(out)
    times.append((time.perf_counter() - t0) / steps_per_repeat)
  return Timing(first, times)


def row_from_timing(timing: Timing, **fields) -> Row:
  batch = fields.get("batch_size", 0)
  med = timing.median_s
  return Row(images_per_s=batch / med if med > 0 else math.nan, step_ms=med * 1e3,
             step_ms_spread=timing.spread, compile_s=timing.first_s, repeats=len(timing.times_s),
             **fields)


def _fmt(x: Any, digits: int = 1) -> str:
  if isinstance(x, float):
    if math.isnan(x):
      return "-"
    return f"{x:,.{digits}f}"
  return str(x)


def ratios(rows: Sequence[Row], reference_impl: str) -> list[float]:
  """images/s of each row over the reference impl's row of the same trainable/size/batch/dtype."""
  ref = {r.key(): r.images_per_s for r in rows if r.impl == reference_impl}
  return [r.images_per_s / ref[r.key()] if r.key() in ref else math.nan for r in rows]


def format_table(rows: Sequence[Row], reference_impl: str | None = None) -> str:
  """The one table printed at the end: markdown, so it pastes into docs/benchmarks.md as is."""
  cols = ["framework", "impl", "mode", "trainable", "size", "batch", "dtype", "img/s", "ms/step",
          "spread", "first call s", "GFLOP/step"]
  rel = ratios(rows, reference_impl) if reference_impl else None
  if rel is not None:
    cols.append(f"x {reference_impl}")
  cols.append("note")
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for i, r in enumerate(rows):
    cells = [r.framework, r.impl, r.mode, r.trainable, _fmt(r.image_size), _fmt(r.batch_size),
             r.dtype, _fmt(r.images_per_s), _fmt(r.step_ms), _fmt(r.step_ms_spread, 2),
             _fmt(r.compile_s, 2), _fmt(r.gflops_per_step)]
    if rel is not None:
      cells.append(_fmt(rel[i], 2))
    cells.append(r.note.replace("|", "/"))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_json(path: str | os.PathLike, info: dict[str, Any], rows: Iterable[Row], *,
               quiet: bool = False, **extra: Any) -> None:
  out = {"machine": info, "rows": [dataclasses.asdict(r) for r in rows], **extra}
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  # NaN is not JSON: write null so any reader (and the smoke test) parses the file.
  Path(path).write_text(json.dumps(_nan_to_none(out), indent=1, default=str) + "\n")
  if not quiet:
    print(f"\nwrote {path}")


def save_partial(path: str | None, rows: Sequence[Row]) -> None:
  """Rows so far, so a run killed by a lease's time limit still leaves its figures."""
  if path:
    write_json(path, {**machine_info(), "partial": True}, rows, quiet=True)


def heading(title: str, info: dict[str, Any]) -> str:
  """The line above each table: when and on what, so a pasted table keeps its machine."""
  devices = info.get("jax_devices") or "-"
  torch_dev = f"; torch {info['torch_device']}" if info.get("torch_device") else ""
  return (f"\n## {title} ({info['date_utc']}; jax {devices}{torch_dev}; {info['cpu_count']} "
          f"CPUs: {info['cpu_model']}; 1-min load {info['loadavg_1m']})\n")


def _nan_to_none(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _nan_to_none(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_nan_to_none(v) for v in x]
  return x


def torch_available() -> bool:
  """torch is a reference only: importable here is enough, never a requirement."""
  try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
  except Exception:  # noqa: BLE001  (a broken CUDA torch raises OSError etc.)
    return False
  return True


def add_data_args(p) -> None:
  """The dataset flags both benchmarks share (argparse parser `p`)."""
  p.add_argument("--data", default=None,
                 help="TFDS dataset dir (default: the synthetic phantom, built once)")
  p.add_argument("--phantom-num", type=int, default=1000,
                 help="phantom slices to generate when --data is not given")
  p.add_argument("--data-out", default=None,
                 help="where the phantom is built (default: ichflax.data's cache dir)")


def open_dataset(args, stored_size: int, split: str = "train"):
  """(dataset_dir, random-access split, indices of every example) through ichflax.data."""
  import numpy as np

  from ichflax import data
  # Every slice, split by subject: the balanced draw fails on a small synthetic set
  # (epidural is rare), and throughput does not depend on the split.
  dataset_dir = args.data or data.prepare(None, size=stored_size, num=args.phantom_num,
                                          draw="by-patient", out=args.data_out)
  source = data.open_split(dataset_dir, split)
  return dataset_dir, source, np.arange(len(source))
