"""A split read as a checkpoint serves it: the slice model's embeddings grouped into ordered
series, and a sequence stage's refined outputs over them.

Training a sequence stage (`ichflax.training.sequence`) and measuring a checkpoint that has one
(`ichflax.evaluate`) read a split through these same two functions, as serving reads an upload.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ichflax.data import context
from ichflax.models import sequence
from ichflax.trust import calibrate


@dataclasses.dataclass
class Embedded:
  """One split's slices, embedded by the frozen slice model, grouped into ordered series."""

  embeddings: np.ndarray  # (N, D) pooled backbone features
  logits: np.ndarray  # (N, k) slice model logits (uncalibrated)
  targets: np.ndarray  # (N, k)
  series: list[np.ndarray]  # indices of each series' slices, in slice order
  spacing: list[float]  # each series' slice spacing, mm (NaN: unknown)
  series_ids: np.ndarray  # (N,)


def embed(model, spec, split) -> Embedded:
  """Every selected slice of `split` through the slice model (eval mode), in series order."""
  logits, pooled, _, _, targets = calibrate.outputs(model, spec, split)
  groups = context.series_order(split.series_ids, split.positions)
  return Embedded(pooled, logits, targets, groups,
                  [context.spacing(split.positions[g]) for g in groups], split.series_ids)


def refine(refiner: sequence.Refiner, data: Embedded) -> tuple[np.ndarray, np.ndarray]:
  """(refined slice logits (N, k), series logits (S, k)) over every series of a split."""
  out = np.zeros_like(data.logits, np.float64)
  series = []
  for members, gap in zip(data.series, data.spacing):
    out[members], s = refiner(data.embeddings[members], data.logits[members], gap)
    series.append(s)
  return out, np.stack(series)
