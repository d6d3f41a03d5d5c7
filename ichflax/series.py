"""A series of slices: ordered along the patient's axis, and one summary for the study."""

from __future__ import annotations

from collections.abc import Sequence

from ichflax.data import inputs, sources
from ichflax.predictor import THRESHOLD, Prediction, decide


def order_series(slices: Sequence[inputs.Slice]) -> list[list[inputs.Slice]]:
  """Groups DICOM slices by series and orders each by ImagePositionPatient (z), then number."""
  groups: dict[str, list[inputs.Slice]] = {}
  for s in slices:
    key = s.geometry.series_instance_uid if s.geometry else f"file:{s.name}"
    groups.setdefault(key, []).append(s)
  return [sorted(group, key=lambda s: sources.order_key(s.name, s.geometry))
          for group in groups.values()]


def study_summary(predictions: Sequence[Prediction], threshold: float = THRESHOLD) -> dict:
  """Study probability per label = max over its slices; the slice that carries it is named."""
  probs = {k: max(p.probabilities[k] for p in predictions) for k in predictions[0].probabilities}
  key = "any" if "any" in probs else max(probs, key=probs.get)
  top = max(predictions, key=lambda p: p.probabilities[key])
  return {"slices": len(predictions), "probabilities": probs,
          "hemorrhage_probability": probs.get("any"), "label": decide(probs, threshold),
          "most_suspicious_slice": top.slice.name}
