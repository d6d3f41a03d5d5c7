"""What the page says about a set of analysed slices: one verdict per series, never across them.

Uploads are grouped by SeriesInstanceUID (`ichflax.data.sources`, like the CLI); each series gets
its own summary (`series.summarise`), a status in words, and a plot of P(hemorrhage) and the
subtypes along the slice position with the operating threshold drawn. Slices that are out of
scope never show probabilities; out-of-domain ones only when the visitor asks, marked as such.
"""

from __future__ import annotations

import collections

import pandas as pd

from ichflax import tasks
from ichflax.serving import series
from ichflax.trust import verdict

REVEAL_LABEL = "Show probabilities for inputs unlike the training data (unreliable, marked)"
THRESHOLD_SERIES = "operating threshold (hemorrhage)"
BEFORE_SERIES = "hemorrhage (any), slice model alone"  # before the sequence stage
TABLE_HEADERS = ["series", "#", "file", "z (mm)", "status", "P(hemorrhage)", "label"]


def series_of(views) -> dict[int, list]:
  """Views by series number, in upload order of the series."""
  groups: dict[int, list] = collections.defaultdict(list)
  for v in views:
    groups[v.series].append(v)
  return dict(groups)


def message(views, focus: int, thresholds: dict[str, float], trained_on: str,
            reveal: bool) -> str:
  """One paragraph per series, then what the shown slice is and why it was or was not judged."""
  groups = series_of(views)
  lines = []
  for number, members in groups.items():
    head = f"**Series {number + 1}** ({len(members)} slice{'s' * (len(members) > 1)})"
    lines.append(f"{head}: {_verdict(series.summarise(members, thresholds, reveal=reveal))}"
                 if len(groups) > 1 or len(members) > 1 else _verdict(
                     series.summarise(members, thresholds, reveal=reveal), members[0]))
  v = views[focus]
  if v.status != verdict.OK:
    lines.append(_explain(v, trained_on, reveal))
  if v.note:
    lines.append(f"*How {v.name} was read:* {v.note}.")
  return "\n\n".join(lines)


def _verdict(summary: dict, only=None) -> str:
  """A series' (or a single slice's) verdict in words."""
  if summary["status"] != verdict.OK:
    return f"**{verdict.WORDS[summary['status']]}** — {summary['reason']}."
  p = summary["hemorrhage_probability"]
  prob = f" — hemorrhage probability **{p:.2f}**" if p is not None else ""
  mark = " (*shown on request: includes slices unlike the training data*)" if summary.get(
      "revealed") else ""
  where = "" if only is not None else f", most suspicious slice {summary['most_suspicious_slice']}"
  name = f" ({only.name})" if only is not None else ""
  note = f" {summary['reason']}." if summary.get("reason") else ""
  return f"**{summary['label']}**{prob}{name}{where}{mark}.{note}"


def _explain(v, trained_on: str, reveal: bool) -> str:
  """Why the shown slice was not judged, and what the model was trained on."""
  if v.status == verdict.OUT_OF_SCOPE:
    return f"**This slice ({v.name}) is not judged**: {v.reason}."
  shown = ("Its probabilities are shown because you asked, and are **unreliable**." if reveal
           else f"Its probabilities are withheld; tick *{REVEAL_LABEL}* to see them anyway.")
  return (f"**Out of domain ({v.name})**: the model was trained on **{trained_on}** only, and "
          f"{v.reason}. {shown}")


def table(views, reveal: bool) -> list[list]:
  return [[v.series + 1, i + 1, v.name, None if v.position_z is None else round(v.position_z, 1),
           verdict.WORDS[v.status],
           round(v.probabilities["any"], 3) if v.shows(reveal) and "any" in v.probabilities
           else None, v.label if v.shows(reveal) else ""]
          for i, v in enumerate(views)]


def plot(views, focus: int, thresholds: dict[str, float], reveal: bool) -> pd.DataFrame | None:
  """P(hemorrhage) and subtypes along the focused slice's series, and the operating threshold;
  with a sequence stage, P(hemorrhage) of the slice model before it too.

  Long format for gr.LinePlot (x: slice position, y: probability, colour: output); slices whose
  probabilities may not be shown leave gaps. None for a single slice or nothing to show.
  """
  members = series_of(views)[views[focus].series]
  shown = [v for v in members if v.shows(reveal) and v.probabilities]
  if len(members) < 2 or not shown:
    return None
  by_z = all(v.position_z is not None for v in members)
  rows = []
  for i, v in enumerate(members):
    if v not in shown:
      continue
    x = v.position_z if by_z else float(i + 1)
    for label in tasks.LABELS:
      if label in v.probabilities:
        name = "hemorrhage (any)" if label == "any" else label
        rows.append((x, v.probabilities[label], name))
    if v.series_model and "any" in v.slice_probabilities:  # the sequence stage's change
      rows.append((x, v.slice_probabilities["any"], BEFORE_SERIES))
    if "any" in thresholds:
      rows.append((x, thresholds["any"], THRESHOLD_SERIES))
  return pd.DataFrame(rows, columns=["position", "probability", "output"])
