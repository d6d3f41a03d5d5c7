"""A slice with its neighbours in series order: what 2.5D models and the sequence stage read.

One set of ops for training, evaluation and serving (as big_vision keeps one set of
preprocessing ops): `series_order` groups slices into series sorted along the slice normal,
`neighbours` gives every slice the K slices centred on it (edge slices repeat themselves, as
the field's 2.5D RSNA models did), `stack` puts their images side by side as channels,
slice-major (slice -1's windows, then the slice's own, then slice +1's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def series_order(series_ids: Sequence[str], positions: Sequence[float] | None = None,
                 instances: Sequence[int] | None = None) -> list[np.ndarray]:
  """Indices of each series' slices in slice order: position along the normal (NaN: unknown),
  else instance number (-1: unknown), else the order given. Series in first-seen order; a
  slice without a series id is a series of its own."""
  n = len(series_ids)
  pos = np.full(n, np.nan) if positions is None else np.asarray(positions, np.float64)
  inst = np.full(n, -1) if instances is None else np.asarray(instances, np.int64)
  groups: dict[str, list[int]] = {}
  for i, sid in enumerate(series_ids):
    groups.setdefault(sid or f"\0{i}", []).append(i)
  ordered = []
  for members in groups.values():
    m = np.asarray(members, np.int64)
    if not np.isnan(pos[m]).any():
      m = m[np.argsort(pos[m], kind="stable")]
    elif (inst[m] >= 0).all():
      m = m[np.argsort(inst[m], kind="stable")]
    ordered.append(m)
  return ordered


def neighbours(series: Sequence[np.ndarray], n: int, k: int) -> np.ndarray:
  """(n, k) int: for every slice, the indices of the k slices centred on it in its series
  (an edge slice repeats itself where its series ends)."""
  if k < 1 or k % 2 == 0:
    raise ValueError(f"context {k}: use an odd number of slices (1, 3, 5 ...)")
  table = np.repeat(np.arange(n, dtype=np.int64)[:, None], k, axis=1)
  offsets = np.arange(k) - k // 2
  for members in series:
    places = np.clip(np.arange(len(members))[:, None] + offsets, 0, len(members) - 1)
    table[members] = members[places]
  return table


def spacing(positions: np.ndarray) -> float:
  """A series' slice spacing, mm: the median step between sorted positions (NaN if unknown)."""
  steps = np.abs(np.diff(np.asarray(positions, np.float64)))
  steps = steps[np.isfinite(steps) & (steps > 0)]
  return float(np.median(steps)) if len(steps) else float("nan")


def stack(images: Sequence[np.ndarray]) -> np.ndarray:
  """K (S, S, C) images -> (S, S, K*C), slice-major."""
  return np.concatenate(images, axis=-1)


class Stacked:
  """A random-access split whose records carry their neighbours' images as channels."""

  def __init__(self, source, table: np.ndarray):
    self._source, self._table = source, table

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    row = self._table[index]
    record = dict(self._source[index])
    record["image"] = stack([record["image"] if j == index else self._source[int(j)]["image"]
                             for j in row])
    return record
