"""TensorBoard scalar curves, written while a run goes (tensorboardX: no TensorFlow needed).

`tensorboard --logdir WORKDIR/tb` shows them live; the report's PNG curves still come at the
end. Only process 0 writes, so a multi-host run has one set of curves.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import jax

TB_DIR = "tb"


class Curves:
  """Scalars by training step; a no-op when off (`--no-tensorboard`) or on processes > 0."""

  def __init__(self, logdir: str | os.PathLike | None):
    self._writer = None
    if logdir is not None and jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # Only when curves are wanted
      self._writer = SummaryWriter(os.fspath(Path(logdir)), flush_secs=30)

  def add(self, step: int, values: dict[str, float | None]) -> None:
    """Writes each finite value under its tag (None and NaN, e.g. an AUC with one class, skip)."""
    if self._writer is None:
      return
    for tag, value in values.items():
      if value is not None and math.isfinite(value):
        self._writer.add_scalar(tag, float(value), step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
