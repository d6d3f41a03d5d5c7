"""Input pipeline throughput: can ichflax.data.loader feed the train step?

Why: end-to-end training is only as fast as the slower of the loader and the step. This times
the loader alone (batches/s and images/s from a TFDS dataset on disk, per worker count) and
compares it with the train step's measured rate (from bench/train_throughput.py's JSON). It
also times, side by side in one run, what one stored record costs to read through TFDS: raw
uint8 (ichflax's format since dataset version 1.1.0) against PNG (the format before, rebuilt
here from the same slices), and the bare array_record equivalents, so a storage change is
decided by numbers.

  python bench/loader_throughput.py --smoke --json /tmp/loader.json
  python bench/loader_throughput.py --workers 0 1 2 --batch-size 64 \
      --train-json /tmp/train.json --json /tmp/loader.json
"""

from __future__ import annotations

import argparse
import inspect
import io
import itertools
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/loader_throughput.py`: make `bench` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from bench import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  common.add_data_args(p)
  p.add_argument("--stored-size", type=int, default=256,
                 help="slice side when the phantom has to be built")
  p.add_argument("--split", default="train")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2],
                 help="loader worker processes to sweep (when the loader takes workers)")
  p.add_argument("--threads", nargs="+", type=int, default=[2],
                 help="in-process decode threads to sweep (when the loader takes threads)")
  p.add_argument("--batches", type=int, default=30, help="timed batches per repeat")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--warmup", type=int, default=2, help="untimed batches (worker start-up)")
  p.add_argument("--records", type=int, default=512,
                 help="records read per storage format in the storage comparison")
  p.add_argument("--no-storage", dest="storage", action="store_false",
                 help="skip the PNG vs raw-bytes storage comparison")
  p.add_argument("--train-json", default=None,
                 help="train_throughput JSON: compare the loader with the step it feeds")
  p.add_argument("--smoke", action="store_true", help="CI size: tiny batches, a few reads")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  if args.smoke:
    args.stored_size = 40 if args.data is None else args.stored_size
    args.batch_size, args.batches, args.repeats, args.warmup = 4, 2, 2, 1
    args.workers, args.threads, args.records = args.workers[:1], args.threads[:1], 16
    args.phantom_num = min(args.phantom_num, 64)
  return args


# --------------------------------------------------------------------------------------------
# the loader


def loader_kwargs(workers: int, threads: int) -> dict[str, Any] | None:
  """The loader's worker/thread arguments it has (None: it cannot run this setting)."""
  from ichflax.data import loader
  params = inspect.signature(loader.batches).parameters
  out = {}
  for value, names, default in ((workers, ("workers", "num_workers"), 0),
                                (threads, ("threads", "num_threads"), None)):
    name = next((n for n in names if n in params), None)
    if name:
      out[name] = value
    elif default is not None and value != default:
      return None
  return out


def bench_loader(source, indices, args, workers: int, threads: int) -> common.Row | None:
  """Batches/s of `loader.batches` alone, with the whole batch materialised on the host."""
  from ichflax.data import loader
  kwargs = loader_kwargs(workers, threads)
  if kwargs is None:
    return None

  def epochs():
    for epoch in itertools.count():
      yield from loader.batches(source, indices, args.batch_size, shuffle=True, seed=0,
                                epoch=epoch, drop_remainder=True, **kwargs)

  it = epochs()
  timing = common.time_steps(lambda: next(it), lambda b: b["image"].sum(), warmup=args.warmup,
                             repeats=args.repeats, steps_per_repeat=args.batches)
  impl = "loader " + " ".join(f"{k}={v}" for k, v in kwargs.items())
  return common.row_from_timing(
      timing, bench="loader", framework="grain", impl=impl, mode="loader",
      image_size=int(source[int(indices[0])]["image"].shape[0]), batch_size=args.batch_size,
      dtype="uint8", note=f"{len(indices)} examples, split {args.split}")


# --------------------------------------------------------------------------------------------
# storage: what one record costs to read


def png_bytes(image: np.ndarray) -> bytes:
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(image if image.shape[-1] == 3 else image[..., 0]).save(buf, format="PNG")
  return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
  from PIL import Image
  return np.asarray(Image.open(io.BytesIO(data)))


def png_tfds(tmp: Path, records: list[dict]):
  """The given records rebuilt as the dataset format before 1.1.0 (PNG feature): its source."""
  import tensorflow_datasets as tfds
  from PIL import Image

  from ichflax.data.builders import tfds_builders
  paths = []
  for n, r in enumerate(records):
    image = np.asarray(r["image"])
    paths.append(tmp / f"{n}.png")
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        paths[-1], format="PNG", compress_level=1)

  class PngCopy(tfds_builders.IchPhantom):
    VERSION = tfds.core.Version("1.0.0")  # the last version that stored PNG

    def _info(self):
      info = super()._info()
      features = dict(info.features)
      features["image"] = tfds.features.Image(shape=records[0]["image"].shape, dtype=np.uint8,
                                              encoding_format="png")
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                   disable_shuffling=True)

    def _generate_examples(self, plan):
      for n, (p, r) in enumerate(zip(paths, records)):
        yield str(n), {"image": str(p), "labels": np.asarray(r["labels"], np.int32),
                       "group": r["group"], "image_id": str(n), "study_id": r["study_id"]}

  tfds.disable_progress_bar()
  builder = PngCopy(plan={"train": records}, size=records[0]["image"].shape[0],
                    channels=records[0]["image"].shape[-1], data_dir=str(tmp / "tfds"),
                    config=tfds.core.BuilderConfig(name="png_copy"), file_format="array_record")
  builder.download_and_prepare()
  return builder.as_data_source(split="train")


def write_records(path: Path, payloads: list[bytes]) -> None:
  from array_record.python import array_record_module
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  for p in payloads:
    writer.write(p)
  writer.close()


def time_reads(n: int, read: Callable[[int], np.ndarray], order: np.ndarray,
               repeats: int) -> common.Timing:
  """Seconds per record of random-order reads (a shuffled epoch's access pattern)."""
  def one_pass():
    for i in order:
      read(int(i))
    return None
  timing = common.time_steps(one_pass, lambda _: None, warmup=0, repeats=repeats)
  timing.times_s = [t / n for t in timing.times_s]
  timing.first_s /= n
  return timing


def bench_storage(source, indices, args) -> list[common.Row]:
  """Per-record read cost: the TFDS source (PNG) vs array_record of PNG vs of raw uint8 bytes."""
  from array_record.python import array_record_data_source
  n = min(args.records, len(indices))
  rng = np.random.default_rng(0)
  picked = rng.permutation(indices)[:n]
  images = [np.asarray(source[int(i)]["image"]) for i in picked]
  shape, size = images[0].shape, images[0].shape[0]
  order = rng.permutation(n)
  rows = []

  def add(impl: str, read: Callable[[int], np.ndarray], note: str):
    t = time_reads(n, read, order, args.repeats)
    rows.append(common.row_from_timing(t, bench="loader", framework="numpy", impl=impl,
                                       mode="read 1 record", image_size=size, batch_size=1,
                                       dtype="uint8", note=note))
    rows[-1].compile_s = float("nan")

  add("TFDS source (ichflax's stored format)", lambda i: source[int(picked[i])]["image"],
      "ichflax.data.open_split record (raw uint8 when built by this version)")
  with tempfile.TemporaryDirectory() as tmp:
    old = png_tfds(Path(tmp), [source[int(i)] for i in picked])
    add("TFDS source (PNG, the format before 1.1.0)", lambda i: old[i]["image"],
        "same records as a TFDS Image(png) feature, convert's level 1, as_data_source")
    png = [png_bytes(im) for im in images]
    raw = [im.tobytes() for im in images]
    for name, payloads in (("png", png), ("raw", raw)):
      write_records(Path(tmp) / f"{name}.array_record", payloads)
    src_png = array_record_data_source.ArrayRecordDataSource([str(Path(tmp) / "png.array_record")])
    src_raw = array_record_data_source.ArrayRecordDataSource([str(Path(tmp) / "raw.array_record")])
    mean_png = sum(map(len, png)) / n
    add("array_record PNG", lambda i: decode_png(src_png[i]),
        f"PIL decode, {mean_png / 1024:.1f} KiB/record")
    add("array_record raw uint8", lambda i: np.frombuffer(src_raw[i], np.uint8).reshape(shape),
        f"np.frombuffer, {len(raw[0]) / 1024:.1f} KiB/record "
        f"({len(raw[0]) / mean_png:.1f}x the PNG bytes)")
  return rows


# --------------------------------------------------------------------------------------------
# run


def step_rates(path: str | None) -> dict[int, list[tuple[str, float]]]:
  """Images/s of the train step per batch size, from a train_throughput JSON."""
  if not path:
    return {}
  out: dict[int, list[tuple[str, float]]] = {}
  from ichflax import flags
  for r in map(flags.upgrade, json.loads(Path(path).read_text())["rows"]):  # older: `recipe`
    if r["framework"] == "jax" and r["mode"] == "compute" and r["images_per_s"]:
      label = f"{r['trainable']} {r['image_size']}px b{r['batch_size']} {r['dtype']}"
      out.setdefault(r["batch_size"], []).append((label, r["images_per_s"]))
  return out


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  dataset_dir, source, indices = common.open_dataset(args, args.stored_size, args.split)
  rows: list[common.Row] = []
  skipped = []
  for w, t in itertools.product(args.workers, args.threads):
    row = bench_loader(source, indices, args, w, t)
    if row is None:
      skipped.append(f"workers={w} threads={t}")
      continue
    rows.append(row)
    common.save_partial(args.json, rows)
    print(f"[bench] {row.impl}: {row.images_per_s:,.0f} img/s", file=sys.stderr, flush=True)
  if args.storage:
    rows += bench_storage(source, indices, args)
  info = common.machine_info()
  info["dataset"] = str(dataset_dir)
  print(common.heading("Loader throughput", info))
  print(common.format_table(rows))
  if skipped:
    print(f"- loader.batches cannot take {', '.join(skipped)}: not measured")
  compare = {}
  rates = step_rates(args.train_json)
  best_loader = max((r.images_per_s for r in rows if r.mode == "loader"), default=float("nan"))
  for label, rate in rates.get(args.batch_size, []) or itertools.chain(*rates.values()):
    compare[label] = best_loader / rate
    print(f"- best loader / train step ({label}): {compare[label]:.2f}")
  if args.json:
    common.write_json(args.json, info, rows, loader_over_step=compare, workers_skipped=skipped)
  return 0


if __name__ == "__main__":
  sys.exit(main())
