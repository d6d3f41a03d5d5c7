"""Where ichflax's train step spends its work: XLA cost analysis, HLO checks, a timed breakdown.

Why: "make the step fast" starts from checkable facts, not guesses. On any backend this reports
  - FLOPs and bytes of the compiled step per --trainable (cost analysis): bn-head (the paper's
    recipe) must cost about 2 forward passes (forward + input gradients) and all (full
    fine-tuning) about 3 (+ weight gradients); if bn-head ~ all, frozen convolutions still get
    weight gradients;
  - buffer donation: bytes the compiled step aliases (reuses) between input and output state,
    without donation (the loop before issue 14) and as the project's step compiles it (state and
    sums donated);
  - the dtypes in the optimised HLO of a bf16 step: convolutions in bf16, BatchNorm statistic
    reductions in f32, and how many layout transposes/copies XLA inserted;
  - a timed breakdown at a small size: augmentation alone, forward, forward+backward, whole step;
  - with --ops: a per-op profile of the compiled step (a jax.profiler trace of whole steps, each
    XLA op's time summed by kind: forward / input-gradient / weight-gradient convolution, a
    convolution whose operands XLA swapped, YNNPACK fusions, transposes, ...), which names the
    ops that cost more than their arithmetic.

  python bench/step_profile.py --smoke
  python bench/step_profile.py --image-size 224 --batch-size 8 --time-size 64 --json /tmp/p.json
  python bench/step_profile.py --ops --ops-size 64 --ops-batch 16 --dtypes fp32 --no-breakdown
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common
from bench import train_throughput as tt


def parse_args(argv=None) -> argparse.Namespace:
  from ichflax.config import TRAINABLE
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--image-size", type=int, default=224, help="size for the cost analysis")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--stored-size", type=int, default=256)
  p.add_argument("--time-size", type=int, default=64, help="size for the timed breakdown")
  p.add_argument("--time-batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--task", default="binary")
  p.add_argument("--variant", default="keras")
  p.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
  p.add_argument("--trainable", nargs="+", choices=TRAINABLE, default=list(TRAINABLE))
  p.add_argument("--no-donation", dest="donation", action="store_false",
                 help="skip compiling the donated variant (its aliasing is backend-independent)")
  p.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                 help="skip the timed breakdown (cost analysis and HLO checks only)")
  p.add_argument("--ops", action="store_true",
                 help="per-op profile of the compiled fp32 step (a jax.profiler trace)")
  p.add_argument("--ops-size", type=int, default=64, help="image size for --ops")
  p.add_argument("--ops-batch", type=int, default=16, help="batch for --ops")
  p.add_argument("--ops-steps", type=int, default=2, help="traced steps for --ops")
  p.add_argument("--top", type=int, default=12, help="single ops listed by --ops")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  if args.smoke:
    args.image_size, args.batch_size, args.stored_size = 32, 2, 40
    args.time_size, args.time_batch, args.repeats = 32, 2, 2
    args.ops_size, args.ops_batch, args.ops_steps = 32, 2, 1
  return args


def costs(compiled) -> dict[str, float]:
  """FLOPs, bytes and buffer sizes XLA reports for one compiled executable."""
  ca = compiled.cost_analysis()
  ca = (ca[0] if isinstance(ca, (list, tuple)) and ca else ca) or {}
  out = {"gflops": float(ca.get("flops", math.nan)) / 1e9,
         "gbytes_accessed": float(ca.get("bytes accessed", math.nan)) / 1e9}
  mem = compiled.memory_analysis()
  if mem is not None:
    for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                 "alias_size_in_bytes"):
      out[name.replace("_size_in_bytes", "_mb")] = getattr(mem, name, math.nan) / 2**20
  return out


def _dtype(tensor_type: str) -> str:
  return tensor_type.rsplit("x", 1)[-1] if "x" in tensor_type else tensor_type


def hlo_census(lowered, compiled) -> dict[str, Any]:
  """What the program asks for (StableHLO) and what XLA compiled (optimised HLO).

  Requested: convolution operand dtypes and the input dtype of every reduction over 3+ axes
  (BatchNorm statistics reduce over N, H, W; their input must be f32 even in a bf16 step).
  Compiled: convolution dtypes (a CPU upcasts bf16 convolutions to f32; a GPU should not),
  layout transposes and copies XLA inserted, and the number of fusions.
  """
  src = lowered.as_text()
  conv = collections.Counter(
      _dtype(m) for m in re.findall(r"stablehlo\.convolution\(.*?: \(tensor<([^>]+)>", src))
  reduces = re.findall(
      r"stablehlo\.reduce\(.*?across dimensions = \[([^\]]*)\] : \(tensor<([^>]+)>", src)
  stats = collections.Counter(_dtype(t) for dims, t in reduces if len(dims.split(",")) >= 3)
  text = compiled.as_text()
  return {"requested_convolutions": dict(conv), "requested_bn_stat_reduces": dict(stats),
          "compiled_convolutions": dict(collections.Counter(
              re.findall(r"= (\w+)\[[^\]]*\][^=]*? convolution\(", text))),
          "transposes": len(re.findall(r" transpose\(", text)),
          "copies": len(re.findall(r" copy\(", text)),
          "fusions": len(re.findall(r" fusion\(", text))}


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$", re.M)
_COMPUTATION = re.compile(r"^%?([\w.\-]+) \(.*?\{$(.*?)^\}$", re.M | re.S)


def _source_files(text: str) -> dict[str, set[str]]:
  """{stack_frame_id: every source file on that frame's stack} from the module's frame tables."""
  def table(name: str) -> dict[str, str]:
    block = re.search(rf"^{name}\n(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    return dict(line.split(" ", 1) for line in block.group(1).splitlines()) if block else {}
  files = {k: v.strip('"') for k, v in table("FileNames").items()}
  locations = {k: re.search(r"file_name_id=(\d+)", v).group(1)
               for k, v in table("FileLocations").items()}
  frames = {k: re.search(r"file_location_id=(\d+) parent_frame_id=(\d+)", v).groups()
            for k, v in table("StackFrames").items()}
  out: dict[str, set[str]] = {}
  for frame in frames:
    seen, f = set(), frame
    while f in frames and f not in seen:
      seen.add(f)
      out.setdefault(frame, set()).add(os.path.basename(files.get(locations.get(frames[f][0]),
                                                                  "?")))
      f = frames[f][1]
  return out


def _conv_kind(rest: str) -> str:
  """Forward / input-gradient / weight-gradient, from a convolution's metadata and window.

  XLA writes a weight gradient as a convolution whose window is the feature map, so a window
  that is no ResNet50 kernel size (1, 3, 7) is one; lhs_dilate marks the input gradient of a
  strided convolution; dim_labels other than NHWC x HWIO -> NHWC mean XLA swapped the operands
  (a feature map smaller than its kernel), which its CPU backend runs as a naive loop.
  """
  labels = re.search(r"dim_labels=([^,\s]+)", rest)
  labels = labels.group(1) if labels else "?"
  backward = "transpose(jvp" in rest
  window = re.search(r"window=\{size=([\dx]+)", rest)
  if labels != "b01f_01io->b01f":
    return f"conv {'backward' if backward else 'forward'}, operands swapped ({labels})"
  if window and any(int(k) not in (1, 3, 7) for k in window.group(1).split("x")):
    return "conv weight-gradient"
  if "lhs_dilate" in rest:
    return "conv input-gradient, strided (lhs_dilate)"
  return "conv input-gradient" if backward else "conv forward"


def hlo_op_kinds(text: str) -> dict[str, str]:
  """{instruction name: what it does} over the optimised HLO `text` of a compiled step.

  A fusion is named by the convolution or dot inside it when it has one (YNNPACK fuses the
  elementwise work around them), else by its fusion kind; anything traced from augment.py is
  "augmentation: ...", so the input path shows apart from the network.
  """
  bodies = {m.group(1): m.group(2) for m in _COMPUTATION.finditer(text)}
  sources = _source_files(text)
  out = {}
  for m in _INSTRUCTION.finditer(text):
    name, rest = m.groups()
    called = re.search(r"calls=%?([\w.\-]+)", rest)
    body = bodies.get(called.group(1), "") if called else ""
    inner = re.search(r"^.* convolution\(.*$", body, re.M)
    if " convolution(" in f" {rest}":
      kind = _conv_kind(rest)
    elif inner:
      kind = _conv_kind(f"{inner.group(0)} {rest}") + " (fused)"  # the fusion's metadata
    elif re.search(r" dot\(", body) or " dot(" in f" {rest}":
      kind = "dot"
    else:
      kind = re.sub(r"(\.\d+)+$", "", name)
      kind = kind if "fusion" in kind else re.sub(r"^wrapped_", "", kind)
    frame = re.search(r"stack_frame_id=(\d+)", rest)
    if frame and "augment.py" in sources.get(frame.group(1), ()):
      kind = f"augmentation: {kind}"
    out[name] = kind
  return out


def trace_ops(call, sync, steps: int, ops: dict[str, str]) -> dict[str, dict[str, float]]:
  """ms per step of each XLA op `call` runs, from a jax.profiler trace of `steps` calls.

  Returns {"ops": {name: ms}, "kinds": {kind: ms}, "counts": {kind: ops}, "step_ms": wall ms};
  the CPU runtime records one event per op (thunk), named as in the optimised HLO.
  """
  import gzip
  import json

  import jax
  sync(call())  # warm: nothing of the first call's allocation in the trace
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(steps):
        out = call()
      sync(out)
    wall = (time.perf_counter() - t0) / steps
    path = next(p for p in _walk(tmp) if p.endswith("perfetto_trace.json.gz"))
    with gzip.open(path) as f:
      events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  per_op: collections.Counter = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in ops:
      per_op[e["name"]] += e.get("dur", 0) / 1e3 / steps
  kinds: collections.Counter = collections.Counter()
  counts: collections.Counter = collections.Counter()
  for name, ms in per_op.items():
    kinds[ops[name]] += ms
    counts[ops[name]] += 1
  return {"ops": dict(per_op.most_common()), "kinds": dict(kinds.most_common()),
          "counts": dict(counts), "step_ms": wall * 1e3}


def _walk(root: str):
  for folder, _, files in os.walk(root):
    yield from (os.path.join(folder, f) for f in files)


def op_profile(args, trainable: str) -> dict[str, Any]:
  """The per-op profile of the project's fp32 step (`--ops`) for one trainable."""
  import jax

  from ichflax.training import steps
  size, batch = args.ops_size, args.ops_batch
  (_, state, frozen), dev, _, donated, _ = compile_variants(trainable, size, batch, "fp32", args)
  holder = {"s": state}

  def call():
    holder["s"], sums = donated(holder["s"], frozen, dev, jax.random.key(0), 0,
                                steps.StepSums.zeros())
    return sums
  out = trace_ops(call, tt.sync_jax, args.ops_steps, hlo_op_kinds(donated.as_text()))
  out["size"], out["batch"] = size, batch
  return out


def format_op_profile(profiles: dict[str, dict[str, Any]], top: int) -> str:
  """Markdown: ms per step by op kind for each trainable side by side, then the costliest ops."""
  columns = list(profiles)
  kinds = sorted({k for p in profiles.values() for k in p["kinds"]},
                 key=lambda k: -max(p["kinds"].get(k, 0.0) for p in profiles.values()))
  lines = ["| op kind | " + " | ".join(f"{r} ms (ops)" for r in columns) + " |",
           "|---|" + "---|" * len(columns)]
  for k in kinds:
    cells = [f"{p['kinds'].get(k, 0.0):.1f} ({p['counts'].get(k, 0)})" for p in
             profiles.values()]
    lines.append(f"| {k} | " + " | ".join(cells) + " |")
  lines.append("| **sum of ops / step wall** | " + " | ".join(
      f"**{sum(p['kinds'].values()):.0f} / {p['step_ms']:.0f}**" for p in profiles.values())
      + " |")
  for r, p in profiles.items():
    lines.append(f"\nCostliest single ops, {r}: " + ", ".join(
        f"{name} {ms:.1f}" for name, ms in list(p["ops"].items())[:top]))
  return "\n".join(lines)


def compile_variants(trainable, size, batch, dtype, args, donation: bool = True):
  """The step jitted without donation, and the project's own step (state and sums donated)."""
  import jax

  from ichflax.training import sharding, steps
  built = tt.build_step(trainable, size, dtype, args.task, args.variant)
  steps_, state, frozen = built
  batch_ = tt.to_device(tt.synthetic_batch(batch, args.stored_size, 3, args.task), args.task,
                        sharding.make_mesh())
  key = jax.random.key(0)
  sums = steps.StepSums.zeros()
  lowered = jax.jit(steps_.train.__wrapped__).lower(state, frozen, batch_, key, 0, sums)
  project = lowered.compile()
  donated = None
  if donation:
    donated = steps_.train.lower(state, frozen, batch_, key, 0, sums).compile()
  return built, batch_, project, donated, lowered


def forward_cost(size, batch, dtype, args) -> dict[str, float]:
  """One eval-mode forward of the classifier: the unit the train step is measured in."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from ichflax.models import build_classifier
  model = build_classifier(args.task, args.variant, rngs=nnx.Rngs(0), dtype=tt.jax_dtype(dtype))
  model.eval()
  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  x = jnp.zeros((batch, size, size, 3), jnp.float32)
  return costs(fwd.lower(state, x).compile())


def time_breakdown(args, trainable: str) -> dict[str, float]:
  """ms per call of: augmentation alone, the forward+loss, its gradient, the whole step.

  Differences between consecutive stages say where the time goes; each stage is its own jit,
  so fusion across stage boundaries is lost and the parts need not sum exactly to the whole.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from ichflax import tasks
  from ichflax.config import AugmentConfig
  from ichflax.models import build_classifier, trainable_filter
  from ichflax.training import augment, steps
  size, batch, dtype = args.time_size, args.time_batch, "fp32"
  task = tasks.get_task(args.task)
  (_, state, frozen), dev, project, donated, _ = compile_variants(trainable, size, batch, dtype,
                                                                  args)
  key = jax.random.key(0)
  aug = jax.jit(lambda im, k: augment.model_input(im, k, AugmentConfig(), size, args.variant))
  x = aug(dev["image"], key)
  model = build_classifier(args.task, args.variant, rngs=nnx.Rngs(0))
  model.train()
  graphdef, params, rest = nnx.split(model, trainable_filter(trainable), ...)

  def loss(p, r, x):
    logits = nnx.merge(graphdef, p, r, copy=True)(x)
    return jnp.mean(task.loss(logits, dev["targets"]))

  fwd = jax.jit(loss)
  grad = jax.jit(jax.grad(loss))
  out = {}
  for name, fn in (("augment", lambda: aug(dev["image"], key)),
                   ("forward+loss", lambda: fwd(params, rest, x)),
                   ("forward+backward", lambda: grad(params, rest, x)),
                   ("step", lambda: project(state, frozen, dev, key, 0,
                                            steps.StepSums.zeros()))):
    t = common.time_steps(fn, tt.sync_jax, warmup=1, repeats=args.repeats)
    out[name] = t.median_s * 1e3
  holder = {"s": state}

  def donated_step():
    holder["s"], sums = donated(holder["s"], frozen, dev, key, 0, steps.StepSums.zeros())
    return sums
  out["step (state donated)"] = common.time_steps(
      donated_step, tt.sync_jax, warmup=1, repeats=args.repeats).median_s * 1e3
  return out


def time_augment(args) -> dict[str, float]:
  """ms of the on-device augmentation alone at the profiled size: its share of a step."""
  import jax

  from ichflax.config import AugmentConfig
  from ichflax.training import augment, sharding
  dev = tt.to_device(tt.synthetic_batch(args.batch_size, args.stored_size, 3, args.task),
                     args.task, sharding.make_mesh())
  out = {}
  for name, cfg in (("augment", AugmentConfig()), ("resize only", AugmentConfig(enabled=False))):
    fn = jax.jit(lambda im, k, cfg=cfg: augment.model_input(im, k, cfg, args.image_size,
                                                            args.variant))
    key = jax.random.key(0)
    out[name] = common.time_steps(lambda fn=fn, key=key: fn(dev["image"], key), tt.sync_jax,
                                  warmup=2, repeats=args.repeats).median_s * 1e3
  return out


def main(argv=None) -> int:
  args = parse_args(argv)
  import jax
  result: dict[str, Any] = {"cost": {}, "hlo": {}, "breakdown_ms": {}, "ops": {}}
  s, b = args.image_size, args.batch_size
  for dtype in args.dtypes:
    fwd = forward_cost(s, b, dtype, args)
    result["cost"][f"forward {dtype}"] = fwd
    for trainable in args.trainable:
      t0 = time.perf_counter()
      _, _, project, donated, lowered = compile_variants(trainable, s, b, dtype, args,
                                                         args.donation)
      c = costs(project)
      c["flops_over_forward"] = c["gflops"] / fwd["gflops"]
      if donated is not None:
        c["alias_mb_if_donated"] = costs(donated).get("alias_mb", math.nan)
      c["compile_s_both"] = time.perf_counter() - t0
      result["cost"][f"{trainable} {dtype}"] = c
      if dtype == "bf16":
        result["hlo"][f"{trainable} {dtype}"] = hlo_census(lowered, project)
      if args.json:  # after each compile: a run cut short keeps what it measured
        common.write_json(args.json, {**common.machine_info(), "partial": True}, [],
                          quiet=True, profile=result)
      print(f"[profile] {trainable} {dtype} {s}px b{b}: {c['gflops']:.1f} GFLOP "
            f"({c['flops_over_forward']:.2f}x forward)", file=sys.stderr, flush=True)
  result["input_ms"] = time_augment(args)
  for trainable in args.trainable if args.breakdown else ():
    result["breakdown_ms"][trainable] = time_breakdown(args, trainable)
  for trainable in args.trainable if args.ops else ():
    result["ops"][trainable] = op_profile(args, trainable)
  info = common.machine_info()
  info["jax_backend"] = jax.default_backend()
  print(common.heading("Train-step profile", info))
  print(f"Cost analysis at {s}px, batch {b} (stored {args.stored_size}px):\n")
  print("| step | GFLOP | x forward | GB accessed | args MB | out MB | temp MB | aliased MB "
        "| aliased MB if donated |")
  print("|---|---|---|---|---|---|---|---|---|")
  for k, c in result["cost"].items():
    print(f"| {k} | {c['gflops']:.1f} | {c.get('flops_over_forward', 1.0):.2f} | "
          f"{c['gbytes_accessed']:.2f} | {c.get('argument_mb', math.nan):.0f} | "
          f"{c.get('output_mb', math.nan):.0f} | {c.get('temp_mb', math.nan):.0f} | "
          f"{c.get('alias_mb', math.nan):.0f} | {c.get('alias_mb_if_donated', math.nan):.0f} |")
  print("\nHLO of the bf16 steps:\n")
  for k, h in result["hlo"].items():
    print(f"- {k}: requested convolutions {h['requested_convolutions']}, BatchNorm-statistic "
          f"reduces {h['requested_bn_stat_reduces']}; compiled convolutions "
          f"{h['compiled_convolutions']}, transposes {h['transposes']}, copies {h['copies']}, "
          f"fusions {h['fusions']}")
  print(f"\nInput path alone ({args.stored_size} -> {s}px, batch {b}, median ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["input_ms"].items()))
  if result["breakdown_ms"]:
    print(f"\nTimed breakdown (fp32, {args.time_size}px, batch {args.time_batch}, median ms):\n")
    stages = list(next(iter(result["breakdown_ms"].values())))
    print("| trainable | " + " | ".join(stages) + " |")
    print("|---|" + "---|" * len(stages))
    for trainable, d in result["breakdown_ms"].items():
      print(f"| {trainable} | " + " | ".join(f"{d[k]:.1f}" for k in stages) + " |")
  if result["ops"]:
    print(f"\nPer-op profile (fp32, {args.ops_size}px, batch {args.ops_batch}, "
          f"ms per step over {args.ops_steps} traced steps):\n")
    print(format_op_profile(result["ops"], args.top))
  if args.json:
    common.write_json(args.json, info, [], profile=result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
