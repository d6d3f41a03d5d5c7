"""Open a dataset built by `ichflax.data.builders.build`: random-access records, labels, info.

Reading needs only the TFDS files and the two side files the build writes beside them (labels
per split for `read_meta`, `ichflax.json` for `dataset_info`), never the sources.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from ichflax import flags

log = logging.getLogger("ichflax.data.builders")
INFO_FILE = "ichflax.json"
REPORT_FILE = "build_report.txt"
SERIES_KEYS = ("series_id", "position", "instance")  # series order in the labels side file


class DataError(ValueError):
  """A data source or dataset that cannot be used; says what was wrong and what to do."""


def resolve(dataset_dir: str | os.PathLike) -> Path:
  """The version folder holding dataset_info.json, given it or a folder above it."""
  path = Path(dataset_dir)
  if (path / "dataset_info.json").exists():
    return path
  found = sorted(p.parent for p in path.glob("**/dataset_info.json") if "_work" not in p.parts)
  if len(found) == 1:
    return found[0]
  if not found:
    raise DataError(f"{path}: neither a built dataset (no dataset_info.json), an RSNA folder "
                    f"(stage_*_train.csv + images), nor PNG class folders; build one with "
                    "`python -m ichflax.data build --rsna DIR --out TFDS_DIR`")
  raise DataError(f"{path}: holds {len(found)} datasets; pass one of: "
                  + ", ".join(map(os.fspath, found)))


class Split:
  """Random-access examples of one split, ids as str (TFDS returns bytes)."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    record = dict(self._source[index])
    for key in ("image_id", "study_id"):
      record[key] = record[key].decode()
    return record


def open_split(dataset_dir: str | os.PathLike, split: str) -> Split:
  """Records {image (S, S, C) uint8, labels (6,), group, image_id, study_id} of one split."""
  path = resolve(dataset_dir)
  builder = tfds.builder_from_directory(os.fspath(path))
  if split not in builder.info.splits:
    raise DataError(f"{path}: no split {split!r}; it has {', '.join(builder.info.splits)}")
  if isinstance(builder.info.features["image"], tfds.features.Image):
    log.warning("%s stores its slices as PNG (dataset version %s): they still read, about 6x "
                "slower than raw storage; delete it and rebuild (`python -m ichflax.data build`, "
                "or let training rebuild it) to feed a GPU", path, builder.info.version)
  return Split(builder.as_data_source(split=split))


def read_meta(dataset_dir: str | os.PathLike, split: str) -> dict:
  """labels (N, 6), group (N,), image_id, study_id of a split, without decoding any image; and
  series_id, position, instance (series order) when the build kept them (since 2026-12)."""
  path = resolve(dataset_dir) / f"meta-{split}.npz"
  if not path.exists():
    raise DataError(f"{path} not found: split {split!r} missing, or the dataset was not built "
                    "by ichflax.data")
  with np.load(path) as saved:
    meta = {"labels": saved["labels"], "group": saved["group"],
            "image_id": saved["image_id"].tolist(), "study_id": saved["study_id"].tolist()}
    meta.update({k: saved[k] for k in SERIES_KEYS if k in saved})
  return meta


def dataset_info(dataset_dir: str | os.PathLike) -> dict:
  """What was built and how: source, data, draw, size, channels, windows, split sizes (a
  dataset built before the renames reads in today's names)."""
  path = resolve(dataset_dir) / INFO_FILE
  if not path.exists():
    raise DataError(f"{path} not found: the dataset was not built by ichflax.data")
  return flags.upgrade(json.loads(path.read_text())) | {"dataset_dir": os.fspath(path.parent)}
