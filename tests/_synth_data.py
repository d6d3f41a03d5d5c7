"""Small anatomy-based phantom datasets for tests that train.

Three slices a series, so that even 80 slices make ~27 studies and the split by study puts
several in validation and test; `build` checks that every split holds both classes, so a change
to the generator that breaks this fails here, by name, not as a puzzle in a training test.
Rendered at twice the stored side, as the default build does.
"""

from __future__ import annotations

import os
from pathlib import Path

from ichflax import tasks
from ichflax.data import builders, splits, synth


def build(out: Path, *, num: int, size: int, seed: int = 0) -> str:
  """The TFDS dir of `num` synthetic slices stored at `size` px (full protocol), under `out`."""
  raw = synth.write_rsna(out / "raw", num, seed=seed, size=2 * size, workers=1, per_series=3)
  cfg = builders.BuildConfig(size, draw="by-patient", workers=1)
  dataset = os.fspath(builders.build_rsna(raw, out, cfg, prefix=f"n{num}_sy{seed}"))
  for name in splits.SPLITS:
    found = set(builders.read_meta(dataset, name)["labels"][:, tasks.ANY].tolist())
    assert found == {0, 1}, f"the {name} split of the test phantom holds only {found}"
  return dataset
