"""What `ichflax.predict` writes: typed records, and the formats its neighbours read.

Every record has a `type`: `slice` (one slice's answer, `Prediction.to_json`'s schema plus its
UIDs), `error` (a file or slice that could not be read) or `series` (one series' summary, with
its SeriesInstanceUID and the input it came from). Formats:

- `jsonl`: one JSON object per line, every record (docs/serving.md);
- `csv`: one row per record, one column per label's probability and positive flag (spreadsheets,
  pandas);
- `kaggle`: the RSNA 2019 submission, `ID,Label` with `ID_<SOPInstanceUID>_<label>` rows for the
  six labels of every slice that has probabilities.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO

from ichflax import tasks
from ichflax.data import sources
from ichflax.serving import series
from ichflax.serving.predictor import Prediction
from ichflax.trust import verdict

FORMATS = ("jsonl", "csv", "kaggle")
SLICE, ERROR, SERIES = "slice", "error", "series"


def slice_record(pred: Prediction, reveal: bool = False, **extra) -> dict:
  """A slice's answer; its UIDs (not patient tags) when its file had them."""
  out = {"type": SLICE, **pred.to_json(reveal=reveal)}
  g = pred.slice.geometry
  if g is not None and g.sop_instance_uid:
    out.update(sop_instance_uid=g.sop_instance_uid, series_instance_uid=g.series_instance_uid)
  return {**out, **extra}


def error_record(problem: sources.Problem) -> dict:
  """The row of a file (or slice) that gave no prediction: the reason names it."""
  return {"type": ERROR, **verdict.error_record(problem.file, str(problem))}


def series_record(group: sources.Series, judged: Sequence[Prediction],
                  thresholds: dict[str, float], reveal: bool = False) -> dict:
  """One series' summary: which series, from which input, and its verdict."""
  summary = series.summarise(judged, thresholds, reveal=reveal)
  if "probabilities" in summary:
    summary |= verdict.numbers(summary["probabilities"], thresholds)
  uids = {p.slice.geometry.series_instance_uid for p in judged if p.slice.geometry is not None}
  return {"type": SERIES, "source": group.source,
          "series_instance_uid": uids.pop() if len(uids) == 1 else None, **summary}


class Writer:
  """JSON lines: every record as it comes (a stopped run keeps what was written).

  Counts what `--strict` asks about: `errors` (error records) and `skipped` (records the format
  has no row for).
  """

  def __init__(self, out: IO[str], labels: Sequence[str]):
    self.out, self.labels, self.errors, self.skipped = out, tuple(labels), 0, 0

  def write(self, record: dict) -> None:
    self.errors += record["type"] == ERROR
    self._emit(record)
    self.out.flush()

  def _emit(self, record: dict) -> None:
    self.out.write(json.dumps(record) + "\n")


class CsvWriter(Writer):
  """One row per record; nested values (box, statuses) as JSON in their cell."""

  FIELDS = ("type", "file", "frame", "status", "reason", "note", "label",
            "hemorrhage_probability", "source", "series_instance_uid", "sop_instance_uid",
            "slice_index", "position_z", "slices", "most_suspicious_slice", "domain_score",
            "revealed", "context", "series_model", "gradcam", "box")

  def __init__(self, out: IO[str], labels: Sequence[str]):
    super().__init__(out, labels)
    self.columns = [*self.FIELDS, *(f"p_{k}" for k in self.labels),
                    *(f"positive_{k}" for k in self.labels)]
    self.csv = csv.DictWriter(out, self.columns, extrasaction="ignore")
    self.csv.writeheader()

  def _emit(self, record: dict) -> None:
    row = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in record.items()}
    for k in self.labels:
      row[f"p_{k}"] = record.get("probabilities", {}).get(k)
      row[f"positive_{k}"] = record.get("positive", {}).get(k)
    self.csv.writerow(row)


class KaggleWriter(Writer):
  """The RSNA 2019 submission: six rows per slice; other records are left out and counted."""

  def __init__(self, out: IO[str], labels: Sequence[str]):
    missing = [k for k in tasks.LABELS if k not in labels]
    if missing:
      raise ValueError(f"the kaggle format needs all six RSNA labels; these weights lack "
                       f"{', '.join(missing)}: use a multilabel checkpoint (or a binary + a "
                       "subtype one), or --format jsonl")
    super().__init__(out, labels)
    out.write("ID,Label\n")

  def _emit(self, record: dict) -> None:
    sop, probs = record.get("sop_instance_uid"), record.get("probabilities")
    if record["type"] == SERIES:
      return
    if record["type"] != SLICE or not sop or probs is None:
      self.skipped += 1  # an error, a slice not judged, or a file without a SOPInstanceUID
      return
    stem = sop if sop.startswith("ID_") else f"ID_{sop}"
    self.out.write("".join(f"{stem}_{k},{probs[k]}\n" for k in tasks.LABELS))


WRITERS: dict[str, type[Writer]] = {"jsonl": Writer, "csv": CsvWriter, "kaggle": KaggleWriter}
