"""One summary per series (grouping and order by position: `ichflax.data.sources`)."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from ichflax.serving.predictor import Judged, Prediction
from ichflax.trust import verdict


def summarise(predictions: Sequence[Prediction | Judged],
              thresholds: dict[str, float] | float = verdict.THRESHOLD, *,
              reveal: bool = False) -> dict:
  """One series' verdict: per label the max over its judged slices, and the slice that carries it.

  Only slices whose probabilities may be shown count (ok, or out of domain when `reveal`);
  a series with none gets no probabilities, its status and a reason instead.
  """
  counts = collections.Counter(p.status for p in predictions)
  shown = [p for p in predictions if p.shows(reveal)]
  out = {"slices": len(predictions), "statuses": dict(counts)}
  if not shown:
    status = verdict.OUT_OF_DOMAIN if counts[verdict.OUT_OF_DOMAIN] else verdict.OUT_OF_SCOPE
    parts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
    return {"status": status, "reason": f"no slice of this series could be judged ({parts})",
            **out}
  probs = {k: max(p.probabilities[k] for p in shown) for k in shown[0].probabilities}
  key = "any" if "any" in probs else max(probs, key=probs.get)
  top = max(shown, key=lambda p: p.probabilities[key])
  out = {"status": verdict.OK, **out, "probabilities": probs,
         "hemorrhage_probability": probs.get("any"), "label": verdict.decide(probs, thresholds),
         "most_suspicious_slice": top.name}
  if any(p.status != verdict.OK for p in shown):
    out["revealed"] = True  # includes slices unlike the training data, shown on request
  if len(shown) < len(predictions):
    out["reason"] = (f"{len(predictions) - len(shown)} of {len(predictions)} slices were not "
                     "judged (see their own lines); the summary covers the rest")
  return out
