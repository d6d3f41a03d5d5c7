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


def load(data: str | None, task: tasks.Task, *, draw: str, per_class: int | None,
         windows: int, size: int | None, phantom_slices: int, limit: int | None,
         seed: int) -> tuple[dict, dict[str, Split]]:
  """(dataset info, split name -> Split): prepares the dataset once and picks each split's
  examples for the task; `limit` draws that many per split, seeded. Raises DataError."""
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
    splits[name] = Split(builders.open_split(dataset_dir, name), indices,
                         np.asarray(labels["image_id"])[indices],
                         np.asarray(labels["study_id"])[indices])
  return info, splits


def data_name(info: dict) -> str:
  """What the weights were trained on, in words (reports and model cards name their data)."""
  if info.get("source") == "phantom":  # the description says which generator drew it
    return ("anatomy-based synthetic phantom" if "anatomy-based" in info.get("data", "")
            else "synthetic phantom")
  return f"{info.get('data', info.get('source', 'unknown'))}, {info.get('draw')} draw"
