"""Where a training run stands: loop position, running epoch sums, history, metrics.

Saved as its own checkpoint item (`progress`), apart from the model spec: a resumed run reads
its position from here, the report its history, and nothing here is needed to serve a model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass
class EpochSums:
  """Running sums over the training batches of the current epoch (a mid-epoch save keeps them)."""

  loss: float = 0.0  # sum of batch-mean loss x batch size
  hits: float = 0.0  # correct decisions (metrics.hits)
  n: int = 0  # examples seen
  seconds: float = 0.0  # step time, compile excluded
  timed: int = 0  # examples behind `seconds`


@dataclasses.dataclass
class EpochRecord:
  """One finished epoch, as the report's tables and curves read it."""

  epoch: int
  step: int
  train_loss: float
  train_accuracy: float
  val_loss: float
  val_accuracy: float
  val_auc: float | None = None  # None where undefined (validation holds one class)
  images_per_s: float | None = None

  def __post_init__(self):
    # NaN is saved as null: held as None too, so a resumed run's history equals its own.
    if self.val_auc is not None and not math.isfinite(self.val_auc):
      self.val_auc = None


@dataclasses.dataclass
class Progress:
  """The loop's position and what it has measured so far."""

  step: int = 0  # optimiser steps done
  epoch: int = 0  # epochs done
  batch: int = 0  # batches done in the current epoch
  epoch_sums: EpochSums | None = None
  history: list[EpochRecord] = dataclasses.field(default_factory=list)
  validation: dict[str, Any] | None = None  # metrics.evaluate of the last epoch's validation
  test: dict[str, Any] | None = None  # set on exported checkpoints from the run's report

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> Progress:
    d = dict(d)
    sums = d.pop("epoch_sums", None)
    history = [EpochRecord(**h) for h in d.pop("history", [])]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names},
               epoch_sums=EpochSums(**sums) if sums else None, history=history)

  def record(self, entry: EpochRecord) -> None:
    """Adds a finished epoch, replacing a record of the same epoch (a re-run after resume)."""
    self.history = [h for h in self.history if h.epoch != entry.epoch] + [entry]
