"""RSNA 2019 labels, the Kaggle folder layouts, and the ways to draw them into splits.

The balanced draw (the paper's text): per class `per_class` images (five subtypes and "no
hemorrhage"), 80:20 train/test, then 90:10 train/validation, each image in at most one class so
no slice is in two splits. The by-patient draw: every image, validation and test drawn by
patient (else study) so slices of one scan never straddle splits.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
from pathlib import Path

import numpy as np

from ichflax import tasks

SPLITS = ("train", "validation", "test")
# balanced: the paper's text, a per-class draw; paper-code: the authors' parser (walk the CSV,
# first subtype with room wins); by-patient: every image, split by patient (else study). Here,
# beside the draws, so the builders need no training config; `ichflax.config` offers the same
# choices (their old names: `ichflax.flags.OLD_VALUES`).
DRAWS = ("balanced", "paper-code", "by-patient")
# Kaggle layouts: stage 2 (2019 final) and stage 1 names, for images and label files.
IMAGE_DIRS = ("stage_2_train", "stage_2_train_images", "stage_1_train_images", "stage_1_train")
CSV_NAMES = ("stage_2_train.csv", "stage_1_train.csv")
TEST_FRACTION = 0.2  # paper: 80:20 train/test per class
VALIDATION_FRACTION = 0.1  # paper: then 90:10 train/validation


class LabelError(ValueError):
  """A label file or folder that cannot be used at all (not one bad row: those are reported)."""


@dataclasses.dataclass
class LabelTable:
  """Six labels per image. `problems` lists images left out and why (never silently)."""

  image_ids: list[str]
  labels: np.ndarray  # int32 (N, 6) in tasks.LABELS order
  problems: list[str]


def read_labels(path: str | os.PathLike) -> LabelTable:
  """Parse `stage_*_train.csv` (`ID_<hex>_<type>,Label`, six rows per image).

  Identical duplicate rows are tolerated (the real file has some). An image with conflicting
  duplicates or missing types is left out and listed in `problems`.
  """
  path = Path(path)
  if not path.is_file():
    raise LabelError(f"{path}: label file not found; expected the Kaggle "
                     f"{' or '.join(CSV_NAMES)} (columns ID,Label)")
  seen: dict[str, dict[str, int]] = {}
  conflicts: dict[str, str] = {}
  with open(path, newline="") as fh:
    rows = csv.reader(fh)
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:2]] != ["ID", "Label"]:
      raise LabelError(f"{path}: first line must be the header 'ID,Label', got {header!r}")
    for line, row in enumerate(rows, start=2):
      if not row:
        continue
      try:
        image_id, kind = row[0].rsplit("_", 1)
        value = int(row[1])
        if kind not in tasks.LABELS or value not in (0, 1) or not image_id.startswith("ID_"):
          raise ValueError
      except (ValueError, IndexError):
        raise LabelError(f"{path}, line {line}: expected 'ID_<hex>_<type>,<0|1>' with type one "
                         f"of {', '.join(tasks.LABELS)}; got {','.join(row)!r}") from None
      labels = seen.setdefault(image_id, {})
      if labels.get(kind, value) != value:
        conflicts[image_id] = f"conflicting duplicate rows for {kind} (0 and 1)"
      labels[kind] = value
  ids, table, problems = [], [], []
  for image_id, labels in seen.items():
    missing = [k for k in tasks.LABELS if k not in labels]
    if image_id in conflicts:
      problems.append(f"{image_id}: {conflicts[image_id]}")
    elif missing:
      problems.append(f"{image_id}: missing label rows for {', '.join(missing)}")
    else:
      ids.append(image_id)
      table.append([labels[k] for k in tasks.LABELS])
  if not ids:
    raise LabelError(f"{path}: no image has all six label rows")
  return LabelTable(ids, np.asarray(table, np.int32).reshape(-1, 6), problems)


def find_layout(root: str | os.PathLike) -> tuple[Path, Path]:
  """(images folder, label CSV) of a Kaggle RSNA download, stage 1 or stage 2 naming."""
  root = Path(root)
  if not root.is_dir():
    raise LabelError(f"{root}: not a folder; give the RSNA download folder holding "
                     f"{CSV_NAMES[0]} and {IMAGE_DIRS[0]}/")
  candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
  for base in candidates:
    csvs = [base / n for n in CSV_NAMES if (base / n).is_file()]
    dirs = [base / n for n in IMAGE_DIRS if (base / n).is_dir()]
    if csvs and dirs:
      # Prefer the label file of the same stage as the images.
      stage = dirs[0].name[:7]
      return dirs[0], next((c for c in csvs if c.name.startswith(stage)), csvs[0])
  raise LabelError(f"{root}: no RSNA layout found; expected a label file ({', '.join(CSV_NAMES)}) "
                   f"beside an images folder ({', '.join(d + '/' for d in IMAGE_DIRS)})")


def _split_sizes(n: int) -> tuple[int, int, int]:
  """(train, validation, test) counts; each split gets at least one so none is empty."""
  test = max(1, round(n * TEST_FRACTION))
  validation = max(1, round((n - test) * VALIDATION_FRACTION))
  return n - test - validation, validation, test


def class_candidates(labels: np.ndarray) -> list[np.ndarray]:
  """Per paper class (five subtypes, then "no hemorrhage") the indices that belong to it."""
  labels = np.asarray(labels)
  return ([np.flatnonzero(labels[:, c] == 1) for c in range(5)]
          + [np.flatnonzero(labels[:, tasks.ANY] == 0)])


def _draw(candidates: list[np.ndarray], per_class: int, rng) -> list[np.ndarray] | None:
  """Exclusive draws, rarest class first; None when some class runs short."""
  taken = np.zeros(max((int(x.max()) + 1 for x in candidates if len(x)), default=0), bool)
  chosen: list[np.ndarray] = [np.empty(0, np.int64)] * len(candidates)
  for c in np.argsort([len(x) for x in candidates], kind="stable"):
    free = candidates[c][~taken[candidates[c]]]
    if len(free) < per_class:
      return None
    chosen[c] = rng.permutation(free)[:per_class]
    taken[chosen[c]] = True
  return chosen


def max_per_class(labels: np.ndarray) -> int:
  """Largest per-class count the balanced draw can take from these labels."""
  cands = class_candidates(labels)
  lo, hi = 0, min(len(c) for c in cands)
  while lo < hi:  # feasibility is monotone in per_class: binary search
    mid = (lo + hi + 1) // 2
    if _draw(cands, mid, np.random.default_rng(0)) is None:
      hi = mid - 1
    else:
      lo = mid
  return lo


def balanced_split(labels: np.ndarray, per_class: int = 2000,
                seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The balanced draw: split -> (indices into labels, group per index)."""
  cands = class_candidates(labels)
  if per_class < 3:
    raise LabelError(f"per_class must be at least 3 (one image each for train, validation and "
                     f"test), got {per_class}")
  chosen = _draw(cands, per_class, np.random.default_rng(seed))
  if chosen is None:
    names = [*tasks.SUBTYPES, "no hemorrhage"]
    counts = ", ".join(f"{n} {len(c)}" for n, c in zip(names, cands))
    raise LabelError(f"not enough images for {per_class} per class (available: {counts}; each "
                     f"image counts for one class only); use --per-class "
                     f"{max_per_class(labels)} or less")
  out: dict[str, list] = {s: [[], []] for s in SPLITS}
  for group, idx in enumerate(chosen):
    for split, part in zip(SPLITS, np.split(idx, np.cumsum(_split_sizes(per_class))[:2])):
      out[split][0].append(part)
      out[split][1].append(np.full(len(part), group, np.int32))
  return {s: (np.concatenate(i), np.concatenate(g)) for s, (i, g) in out.items()}


def paper_code_groups(labels: np.ndarray, per_class: int = 2000) -> np.ndarray:
  """The authors' `parser_dcm.py`: each image's folder (0..4 subtypes, 5 none, -1 unused).

  Walks the images in CSV order and moves each into the folder of its first subtype (in the
  CSV's row order) that is 1 and still holds fewer than `per_class`; `any` = 0 goes to none,
  also capped. A multi-subtype image counts for one folder only.
  """
  labels = np.asarray(labels)
  counts = np.zeros(tasks.NO_HEMORRHAGE_GROUP + 1, np.int64)
  groups = np.full(len(labels), tasks.NO_GROUP, np.int32)
  for i, row in enumerate(labels):
    wanted = ([tasks.NO_HEMORRHAGE_GROUP] if row[tasks.ANY] == 0
              else np.flatnonzero(row[:tasks.ANY]).tolist())
    for g in wanted:
      if counts[g] < per_class:
        groups[i] = g
        counts[g] += 1
        break
  return groups


def paper_code_split(labels: np.ndarray, per_class: int = 2000,
                     seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The paper's code: `paper_code_groups`, then 80:20 and 90:10 per folder (1440/160/400)."""
  groups = paper_code_groups(labels, per_class)
  return _split_groups(groups, np.zeros(len(groups), bool), seed)


def given_test_split(groups: np.ndarray, is_test: np.ndarray,
                     seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Class folders holding a test/ subfolder: it is the test split; the rest 90:10 per class."""
  return _split_groups(np.asarray(groups), np.asarray(is_test, bool), seed)


def _split_groups(groups: np.ndarray, is_test: np.ndarray,
                  seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Per class: the `is_test` images are the test split when there are any, else 20% drawn;
  validation 10% of the rest, drawn with `seed`."""
  rng = np.random.default_rng(seed)
  names = [*tasks.SUBTYPES, "no hemorrhage"]
  out: dict[str, list] = {s: [[], []] for s in SPLITS}
  for g, name in enumerate(names):
    members = np.flatnonzero(groups == g)
    given = members[is_test[members]]
    rest = rng.permutation(members[~is_test[members]])
    if len(given):
      n_val = max(1, round(len(rest) * VALIDATION_FRACTION))
      parts = (rest[n_val:], rest[:n_val], given)
    else:
      _, n_val, n_test = _split_sizes(len(rest))
      parts = (rest[n_test + n_val:], rest[n_test:n_test + n_val], rest[:n_test])
    if len(members) < 3 or min(map(len, parts)) == 0:
      raise LabelError(f"class {name} has {len(rest)} training and {len(given)} test images: "
                       "each class needs at least one image for train, validation and test")
    for split, part in zip(SPLITS, parts):
      out[split][0].append(np.sort(part))
      out[split][1].append(np.full(len(part), g, np.int32))
  return {s: (np.concatenate(i), np.concatenate(g)) for s, (i, g) in out.items()}


def by_patient_split(study_ids: list[str], seed: int = 0, validation: float = 0.1,
               test: float = 0.1, patient_keys: list[str] | None = None
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Every image; validation and test drawn by patient (`patient_keys`; where a file names
  none, by its study; by image where both are unknown), so one patient never spans two splits.

  Patients are drawn in the order of their first study id: where each patient has one study,
  the draw is the by-study draw of datasets built before patients were read.
  """
  studies = [s or f"image:{i}" for i, s in enumerate(study_ids)]
  keys = [p or s for p, s in zip(patient_keys or [""] * len(studies), studies)]
  first: dict[str, str] = {}
  for k, s in zip(keys, studies):
    first[k] = min(first.get(k, s), s)
  units = sorted(first, key=lambda k: (first[k], k))
  if len(units) < 3:
    raise ValueError(f"the by-patient draw splits by patient or study and needs at least 3; found "
                     f"{len(units)}")
  order = np.random.default_rng(seed).permutation(len(units))
  n_test = max(1, round(len(units) * test))
  n_val = max(1, round(len(units) * validation))
  which = {}
  for rank, j in enumerate(order):
    which[units[j]] = 2 if rank < n_test else 1 if rank < n_test + n_val else 0
  split_of = np.array([which[k] for k in keys], np.int32)
  return {s: (np.flatnonzero(split_of == k), np.full(int((split_of == k).sum()), tasks.NO_GROUP,
                                                     np.int32)) for k, s in enumerate(SPLITS)}


def count_by_group(groups: np.ndarray) -> dict[str, int]:
  """Readable per-class counts for reports."""
  names = [*tasks.SUBTYPES, "no hemorrhage"]
  return {names[g] if g >= 0 else "all": n for g, n in collections.Counter(
      np.asarray(groups).tolist()).items()}
