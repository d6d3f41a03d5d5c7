"""A task's examples of each split: the dataset prepared once, then the rows the task learns from.

Training and calibration both read their data through `load`, so a checkpoint is calibrated on
exactly the rows it was trained and validated on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ichflax import tasks
from ichflax.data import context as context_lib

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Split:
  """The examples of one split this task learns from."""

  source: Any
  indices: np.ndarray
  # Each selected example's image and study id (read from the split's metadata, not its images),
  # for per-slice tables and resampling by study.
  image_ids: np.ndarray
  study_ids: np.ndarray
  # Each selected example's series and position along the slice normal (NaN: unknown), and
  # the sequence stage groups and sorts by them.
  series_ids: np.ndarray
  positions: np.ndarray


def load(data: str | None, task: tasks.Task, *, draw: str, per_class: int | None,
         windows: int, size: int | None, phantom_slices: int, limit: int | None,
         seed: int, context: int = 1) -> tuple[dict, dict[str, Split]]:
  """(dataset info, split name -> Split): prepares the dataset once and picks each split's
  examples for the task; `limit` draws that many per split, seeded; `context` > 1 serves each
  example with its neighbours (`ichflax.data.context`). Raises DataError."""
  from ichflax.data import builders  # TFDS only when data is needed
  kwargs = {"draw": draw, "per_class": per_class, "windows": windows}
  if size is not None:
    kwargs["size"] = size
  if data in (None, "phantom"):
    kwargs["num"] = phantom_slices
  dataset_dir = Path(builders.prepare(data, **kwargs))
  info = builders.dataset_info(dataset_dir)
  if info.get("channels") not in (None, windows):
    raise builders.DataError(
        f"{dataset_dir} stores {info['channels']} channel(s) but --input-mode "
        f"{'grey' if windows == 1 else 'windows'} needs {windows}: pass the source folder "
        "instead, or the matching mode")
  splits = {}
  for name in SPLITS:
    labels = builders.read_meta(dataset_dir, name)
    indices = np.flatnonzero(task.select(labels["labels"], labels["group"]))
    if limit is not None and limit < len(indices):
      # Splits are stored class by class (balanced) or study by study (by-patient): a prefix
      # would hold only some classes or studies.
      rng = np.random.default_rng([seed, SPLITS.index(name)])
      indices = np.sort(rng.choice(indices, limit, replace=False))
    if len(indices) == 0:
      raise builders.DataError(f"the {name} split of {dataset_dir} has no examples for the "
                               f"{task.name} task: check --data and --task")
    source = builders.open_split(dataset_dir, name)
    n = len(labels["image_id"])
    series_ids = np.asarray(labels.get("series_id", [""] * n))
    positions = np.asarray(labels.get("position", np.full(n, np.nan)), np.float64)
    if context > 1:
      source = context_lib.Stacked(source, _neighbours(labels, context, dataset_dir, name))
    splits[name] = Split(source, indices, np.asarray(labels["image_id"])[indices],
                         np.asarray(labels["study_id"])[indices], series_ids[indices],
                         positions[indices])
  return info, splits


def _neighbours(meta: dict, k: int, dataset_dir: Path, split: str) -> np.ndarray:
  """Each stored slice's k neighbours in its series; refuses a split that keeps no series
  whole (the balanced draws take single slices, whose neighbours were never stored)."""
  from ichflax.data import builders
  if "series_id" not in meta:
    raise builders.DataError(f"{dataset_dir} was built before datasets kept series order: delete "
                             "it and build again (or pass its source folder) to train with "
                             f"--context {k}")
  series = context_lib.series_order(meta["series_id"], meta["position"], meta["instance"])
  median = float(np.median([len(m) for m in series]))
  if median < k:
    raise builders.DataError(
        f"the {split} split of {dataset_dir} keeps {median:g} slice(s) of a series on median, "
        f"so most slices have no stored neighbours for --context {k}: build with the draw that "
        "keeps every slice of a series (--draw by-patient)")
  return context_lib.neighbours(series, len(meta["series_id"]), k)


def data_name(info: dict) -> str:
  """What the weights were trained on, in words (reports and model cards name their data)."""
  if info.get("source") == "phantom":  # the description says which generator drew it
    return ("anatomy-based synthetic phantom" if "anatomy-based" in info.get("data", "")
            else "synthetic phantom")
  return f"{info.get('data', info.get('source', 'unknown'))}, {info.get('draw')} draw"
