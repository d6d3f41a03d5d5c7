"""Training throughput: ichflax's own jitted train step vs torchvision ResNet50, in one run.

Why one run: figures from different days, drivers or machines do not divide. This script times,
side by side on the same device,
  (a) compute only: ichflax's `steps.make_steps` train step (on-device augmentation included) on a
      synthetic uint8 batch already on the device;
  (b) end to end: the same step fed by `ichflax.data.loader` from a TFDS dataset on disk, as the
      training loop runs it (state donated, sums on the device, no per-step host read) and as
      the loop before issue 14 ran it (no donation, loss and probabilities read every step);
  (c) torchvision ResNet50 (channels_last, bf16 autocast, eager and torch.compile) when torch
      imports: the baseline a user would otherwise run,
for bn-head (BatchNorm + head learn, the paper's recipe) and all (full fine-tuning), and prints
one table, so every ratio is measured, not copied. XLA's cost analysis gives the FLOPs of each
compiled ichflax step, which checks that bn-head really skips the frozen convolutions' weight
gradients.

  python bench/train_throughput.py --smoke --json /tmp/train.json          # CI size, ~1 min CPU
  python bench/train_throughput.py --trainable bn-head all --image-size 224 128 \
      --batch-sizes 64 128 256 --dtype bf16 --json $OUT/train.json        # a GPU
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/train_throughput.py`: make `bench` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common

DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  from ichflax.config import TRAINABLE
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--trainable", nargs="+", choices=TRAINABLE, default=list(TRAINABLE))
  p.add_argument("--image-size", nargs="+", type=int, default=[224, 128])
  p.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128, 256])
  p.add_argument("--dtype", nargs="+", choices=tuple(DTYPES), default=["bf16"])
  p.add_argument("--stored-size", type=int, default=None,
                 help="side of the stored uint8 slices fed to the step (default: the dataset's, "
                      "else 256)")
  p.add_argument("--channels", type=int, default=3, help="stored channels (CT windows)")
  p.add_argument("--context", type=int, default=1,
                 help="slices per input (2.5D, --context of train); compute mode only")
  p.add_argument("--task", default="binary")
  p.add_argument("--variant", default="keras", choices=("keras", "torchvision"))
  p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
  p.add_argument("--modes", nargs="+", choices=("compute", "end-to-end", "torch"),
                 default=["compute", "end-to-end", "torch"])
  p.add_argument("--torch-compile", choices=("auto", "on", "off"), default="auto",
                 help="auto: on, except in --smoke on CPU where inductor takes minutes to build")
  common.add_data_args(p)
  p.add_argument("--e2e-steps", type=int, default=None,
                 help="timed end-to-end steps (default: steps x repeats)")
  p.add_argument("--loader-threads", type=int, default=None,
                 help="decode threads for loader.batches (default: the loader's own)")
  p.add_argument("--time-budget", type=float, default=None,
                 help="seconds: configurations not started by then are skipped (GPU lease)")
  p.add_argument("--no-cost-analysis", dest="cost_analysis", action="store_false")
  p.add_argument("--smoke", action="store_true",
                 help="CI size: bn-head, 32 px, batch 2, 2 steps; checks the path, not speed")
  p.add_argument("--json", default=None, help="write machine info + rows here")
  args = p.parse_args(argv)
  if args.context > 1 and set(args.modes) != {"compute"}:
    p.error("--context > 1 times the compute mode only: add --modes compute")
  if args.smoke:
    args.trainable, args.image_size, args.batch_sizes = ["bn-head"], [32], [2]
    args.dtype = ["fp32"] if args.dtype == ["bf16"] else args.dtype
    args.stored_size = args.stored_size or 40
    args.steps, args.repeats, args.warmup = 1, 2, 1
    args.phantom_num = min(args.phantom_num, 64)
  return args


# --------------------------------------------------------------------------------------------
# ichflax


def jax_dtype(name: str):
  import jax.numpy as jnp
  return jnp.dtype(DTYPES[name]).type


def build_step(trainable: str, image_size: int, dtype: str, task: str, variant: str,
               context: int = 1):
  """ichflax's train step, built exactly as training builds it: (steps, state, frozen)."""
  import optax
  from flax import nnx

  from ichflax.config import AugmentConfig, TrainConfig
  from ichflax.models import build_classifier, trainable_filter
  from ichflax.training import steps
  dt = jax_dtype(dtype)
  model = build_classifier(task, variant, rngs=nnx.Rngs(0), dtype=dt, context=context)
  spec = steps.StepSpec(task=task, image_size=image_size, variant=variant,
                        augment=AugmentConfig(), dtype=dt, context=context)
  return steps.make_steps(model, trainable_filter(trainable), optax.adam(TrainConfig.lr), spec)


def synthetic_batch(batch_size: int, stored_size: int, channels: int, task: str, seed: int = 0):
  """A loader-shaped host batch (uint8 images, labels, group, mask) of random content."""
  import numpy as np
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (batch_size, stored_size, stored_size, channels),
                                dtype=np.uint8),
          "labels": rng.integers(0, 2, (batch_size, 6)).astype(np.int32),
          "group": np.full((batch_size,), -1, np.int32),
          "mask": np.ones((batch_size,), bool)}


def to_device(batch: dict[str, Any], task_name: str, mesh) -> dict[str, Any]:
  """Loader batch -> what the train step reads, split over the devices (as training does)."""
  from ichflax import tasks
  from ichflax.training import sharding
  task = tasks.get_task(task_name)
  local = {"image": batch["image"], "mask": batch["mask"],
           "targets": task.targets(batch["labels"], batch["group"])}
  return sharding.shard_batch(local, mesh)


def compile_step(built, device_batch, donate: bool = True) -> tuple[Any, float, float, float]:
  """AOT-compiles the train step once: (executable, compile seconds, GFLOP, GB accessed).

  donate=False: the same step without buffer donation, as the loop before issue 14 had it.
  """
  import jax

  from ichflax.training import steps
  steps_, state, frozen = built
  fn = steps_.train if donate else jax.jit(steps_.train.__wrapped__)
  t0 = time.perf_counter()
  compiled = fn.lower(state, frozen, device_batch, jax.random.key(0), 0,
                      steps.StepSums.zeros()).compile()
  seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) and cost else cost) or {}
  gflops = float(cost.get("flops", math.nan)) / 1e9
  gbytes = float(cost.get("bytes accessed", math.nan)) / 1e9
  return compiled, seconds, gflops, gbytes


class JaxTrainer:
  """Holds the evolving train state and on-device sums so a step is one call, as in training."""

  def __init__(self, compiled, state, frozen):
    import jax

    from ichflax.training import steps
    self.compiled, self.state, self.frozen = compiled, state, frozen
    self.sums = steps.StepSums.zeros()
    self.key = jax.random.key(0)
    self.i = 0

  def step(self, device_batch):
    self.state, self.sums = self.compiled(self.state, self.frozen, device_batch, self.key,
                                          self.i, self.sums)
    self.i += 1
    return self.sums


def sync_jax(x):
  import jax
  return jax.block_until_ready(x)


def bench_jax_compute(args, trainable, size, batch_size, dtype, mesh, stored) -> tuple[list, Any]:
  """(a) compute only; returns the row and (trainer, compile info) for the end-to-end run."""
  built = build_step(trainable, size, dtype, args.task, args.variant, args.context)
  dev_batch = to_device(synthetic_batch(batch_size, stored, args.channels * args.context,
                                        args.task),
                        args.task, mesh)
  import jax
  import jax.numpy as jnp
  fresh = jax.tree.map(jnp.copy, built[1])  # for the old loop: the new one donates built[1]
  compiled, compile_s, gflops, gbytes = compile_step(built, dev_batch)
  trainer = JaxTrainer(compiled, *built[1:])
  trainer.old_loop = lambda: JaxTrainer(compile_step(built, dev_batch, donate=False)[0], fresh,
                                        built[2])
  timing = common.time_steps(lambda: trainer.step(dev_batch), sync_jax, warmup=args.warmup,
                             repeats=args.repeats, steps_per_repeat=args.steps)
  row = common.row_from_timing(
      timing, bench="train", framework="jax", impl="ichflax step", mode="compute",
      trainable=trainable, image_size=size, batch_size=batch_size, dtype=dtype,
      gflops_per_step=gflops,
      note=f"stored {stored}px x{args.channels} x {args.context} slice(s), augment on device, "
           f"{gbytes:.1f} GB accessed")
  row.compile_s = compile_s
  return row, trainer


def open_dataset(args, stored_size: int):
  """TFDS train split (random access) + the indices the task learns from."""
  from ichflax import data, tasks
  dataset_dir, source, _ = common.open_dataset(args, stored_size)
  meta = data.read_meta(dataset_dir, "train")
  import numpy as np
  indices = np.flatnonzero(tasks.get_task(args.task).select(meta["labels"], meta["group"]))
  return dataset_dir, source, indices


def loader_batches(source, indices, batch_size: int, threads: int | None):
  """Endless seeded epochs of ichflax.data.loader batches, as the training loop draws them."""
  from ichflax.data import loader
  kwargs = {} if threads is None else {"threads": threads}
  for epoch in itertools.count():
    yield from loader.batches(source, indices, batch_size, shuffle=True, seed=0, epoch=epoch,
                              drop_remainder=True, **kwargs)


def bench_jax_end_to_end(args, trainer, dataset, trainable, size, batch_size, dtype, mesh,
                         host_sync: bool):
  """(b) loader from disk -> device -> the compiled step, timed over whole steps.

  host_sync=False is ichflax/training/loop.py's loop: donated state, sums kept on the device, the
  queue kept full (the host loads batch n+1 while step n runs). True is the loop before issue 14:
  the step without donation, its results read back every step, which serialises loading and compute;
  the gap between the two rows is what the new loop buys.
  """
  dataset_dir, source, indices = dataset
  if len(indices) < batch_size:
    raise SystemExit(f"dataset {dataset_dir} has {len(indices)} training examples for the "
                     f"task, fewer than one batch of {batch_size}")
  it = loader_batches(source, indices, batch_size, args.loader_threads)

  if host_sync:
    trainer = trainer.old_loop()

  def step():
    sums = trainer.step(to_device(next(it), args.task, mesh))
    if host_sync:
      sums.read()
    return sums

  total = args.e2e_steps or args.steps * args.repeats
  per = max(1, total // args.repeats)
  timing = common.time_steps(step, sync_jax, warmup=args.warmup, repeats=args.repeats,
                             steps_per_repeat=per)
  threads = "default" if args.loader_threads is None else args.loader_threads
  return common.row_from_timing(
      timing, bench="train", framework="jax", impl="ichflax step",
      mode="end-to-end, old loop" if host_sync else "end-to-end",
      trainable=trainable, image_size=size, batch_size=batch_size, dtype=dtype,
      note=f"{'/'.join(Path(dataset_dir).parts[-3:-1])}, {len(indices)} examples, "
           f"loader threads {threads}")


# --------------------------------------------------------------------------------------------
# run


def stored_size_of(args) -> int:
  if args.stored_size:
    return args.stored_size
  if args.data:
    from ichflax import data
    return int(data.dataset_info(args.data)["size"])
  return 256


def run(args) -> tuple[dict[str, Any], list[common.Row]]:
  import jax

  from ichflax.training import sharding
  mesh = sharding.make_mesh()
  stored = stored_size_of(args)
  want_torch = "torch" in args.modes and common.torch_available()
  on_gpu = jax.default_backend() != "cpu"
  torch_compile = {"on": True, "off": False,
                   "auto": not (args.smoke and not on_gpu)}[args.torch_compile]
  dataset = open_dataset(args, stored) if "end-to-end" in args.modes else None
  rows: list[common.Row] = []
  skipped: list[str] = []
  start = time.perf_counter()
  # Size outermost, trainable choices side by side: under --time-budget the first sizes are
  # complete.
  for size, batch_size, trainable, dtype in itertools.product(args.image_size, args.batch_sizes,
                                                              args.trainable, args.dtype):
    label = f"{trainable} {size}px batch {batch_size} {dtype}"
    if args.time_budget and time.perf_counter() - start > args.time_budget:
      skipped.append(label)
      continue
    if "compute" in args.modes or dataset is not None:
      row, trainer = bench_jax_compute(args, trainable, size, batch_size, dtype, mesh, stored)
      if "compute" in args.modes:
        rows.append(row)
        _progress(args, rows, label)
      if dataset is not None:
        for host_sync in (False, True):
          rows.append(bench_jax_end_to_end(args, trainer, dataset, trainable, size, batch_size,
                                           dtype, mesh, host_sync))
          _progress(args, rows, label)
      del trainer
    if want_torch:
      from bench import torch_resnet
      for compile_ in (False, True) if torch_compile else (False,):
        rows.append(torch_resnet.bench_train(
            trainable=trainable, image_size=size, batch_size=batch_size, dtype=dtype,
            compile_=compile_, warmup=args.warmup, repeats=args.repeats,
            steps_per_repeat=args.steps))
        _progress(args, rows, label)
  info = common.machine_info()
  info["skipped_for_time"] = skipped
  # Peak device memory over every configuration run (GPU/TPU; CPU devices report none).
  stats = jax.devices()[0].memory_stats() or {}
  info["peak_device_bytes"] = stats.get("peak_bytes_in_use")
  if want_torch:
    from bench import torch_resnet
    info["torch_device"] = torch_resnet.device_name()
  elif "torch" in args.modes:
    info["torch_device"] = "torch/torchvision not importable: baselines skipped"
  return info, rows


def _progress(args, rows: list[common.Row], label: str) -> None:
  row = rows[-1]
  common.save_partial(args.json, rows)
  print(f"[bench] {label}: {row.framework} {row.impl} {row.mode}: "
        f"{row.images_per_s:,.1f} img/s ({row.step_ms:.1f} ms/step, compile {row.compile_s:.1f} s)",
        file=sys.stderr, flush=True)


def summary(rows: list[common.Row]) -> dict[str, dict[str, float]]:
  """The ratios the issue's goals are stated in, per configuration."""
  ref = next((i for i in ("torch.compile", "eager") if any(r.impl == i for r in rows)), None)
  out: dict[str, dict[str, float]] = {}
  for r in rows:
    if r.framework != "jax":
      continue
    key = f"{r.trainable} {r.image_size}px b{r.batch_size} {r.dtype}"
    d = out.setdefault(key, {})
    if ref:
      base = [t for t in rows if t.impl == ref and t.key() == r.key()]
      if base:
        d[f"{r.mode} / torch {ref}"] = r.images_per_s / base[0].images_per_s
    if r.mode.startswith("end-to-end"):
      comp = [t for t in rows if t.framework == "jax" and t.mode == "compute"
              and t.key() == r.key()]
      if comp:
        d[f"{r.mode} / compute"] = r.images_per_s / comp[0].images_per_s
  return out


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  info, rows = run(args)
  ref = next((i for i in ("torch.compile", "eager") if any(r.impl == i for r in rows)), None)
  ratios = summary(rows)
  print(common.heading("Train throughput", info))
  print(common.format_table(rows, ref))
  for key, d in ratios.items():
    if d:
      print(f"- {key}: " + ", ".join(f"{k} = {v:.2f}" for k, v in d.items()))
  if info["skipped_for_time"]:
    print(f"- not run (--time-budget {args.time_budget:g} s spent): "
          + "; ".join(info["skipped_for_time"]))
  if args.json:
    common.write_json(args.json, info, rows, ratios=ratios, reference=ref)
  return 0


if __name__ == "__main__":
  sys.exit(main())
