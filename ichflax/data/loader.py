"""Seeded, resumable uint8 batches from a random-access split (grain).

The order of an epoch is a pure function of (seed, epoch), so a run resumed at `start_batch`
sees exactly the batches it would have seen. Eval batches keep every example once: the short
last batch is padded and `mask` marks the real rows. Images stay uint8 until the device.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence

import grain
import numpy as np
from absl import flags


class _Take:
  """The examples of `source` at `indices`, in that order, as a random-access source."""

  def __init__(self, source, indices: np.ndarray):
    self._source, self._indices = source, indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> dict:
    return self._source[int(self._indices[i])]


def _collate(records: Sequence[dict], batch_size: int) -> dict[str, np.ndarray]:
  """Stack records; pad a short batch to `batch_size` with zero rows, mask=False."""
  n, pad = len(records), batch_size - len(records)
  out = {"image": np.stack([r["image"] for r in records]),
         "labels": np.stack([np.asarray(r["labels"], np.int32) for r in records]),
         "group": np.array([r["group"] for r in records], np.int32),
         "mask": np.ones(n, bool)}
  if pad:
    out = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in out.items()}
  return out


def epoch_order(indices: Sequence[int], *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
  """The example order of one epoch: a permutation fixed by (seed, epoch)."""
  indices = np.asarray(indices, np.int64)
  if not shuffle:
    return indices
  return indices[np.random.default_rng([seed, epoch]).permutation(len(indices))]


def batches(source, indices: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0,
            epoch: int = 0, drop_remainder: bool = False, start_batch: int = 0,
            prefetch: int = 4, threads: int | None = None, workers: int = 0) -> Iterator[dict]:
  """Batches {image (B, S, S, C) uint8, labels (B, 6) int32, group (B,), mask (B,) bool}.

  drop_remainder: training drops the short last batch; eval (False) pads it, mask=False.
  threads/prefetch: in-process decoding ahead of use; None: one thread per CPU core (a 256 px
  PNG slice costs ~2-4 ms per core, so a GPU step needs many). workers > 0 decodes in grain
  worker processes instead (measured slower than in-process on 2 cores; needs a __main__ guard).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  if start_batch < 0:
    raise ValueError(f"start_batch must be >= 0, got {start_batch}")
  order = epoch_order(indices, shuffle=shuffle, seed=seed, epoch=epoch)
  if len(order) and (order.min() < 0 or order.max() >= len(source)):
    raise IndexError(f"indices must lie in [0, {len(source)}) for this split")
  ds = grain.MapDataset.source(_Take(source, order)).batch(
      batch_size, drop_remainder=drop_remainder,
      batch_fn=functools.partial(_collate, batch_size=batch_size))
  if start_batch >= len(ds):
    return iter(())
  ds = ds[start_batch:]
  threads = threads or os.cpu_count() or 2
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
  if workers:
    if not flags.FLAGS.is_parsed():  # grain reads absl flags; we are not an absl app
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(it)
