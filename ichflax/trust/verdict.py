"""One status for every answer: the CLI's JSON lines, the Predictor and the page say the same.

    {"status": "ok" | "out_of_scope" | "out_of_domain" | "error", "reason": "..."}

`ok`: judged, probabilities given. `out_of_scope`: not an axial head CT slice
(`ichflax.trust.scope`), never run through the model. `out_of_domain`: a head CT slice unlike the
training data (`ichflax.trust.domain`): probabilities withheld unless revealed, and then marked.
`error`: the file
could not be read. `reason` (one sentence) is present whenever the status is not ok.

Which statuses show probabilities (`shows`) and the one label people read (`decide`) live here
too: pure logic, shared by the Predictor, the series summary and the page, and tested without a
model.
"""

from __future__ import annotations

from ichflax import tasks
from ichflax.trust import calibration

OK, OUT_OF_SCOPE, OUT_OF_DOMAIN, ERROR = "ok", "out_of_scope", "out_of_domain", "error"
STATUSES = (OK, OUT_OF_SCOPE, OUT_OF_DOMAIN, ERROR)
# The status in words, for people (the page's table and summaries).
WORDS = {OK: "judged", OUT_OF_SCOPE: "not a head CT slice: not judged",
         OUT_OF_DOMAIN: "unlike the training data: probabilities withheld",
         ERROR: "could not be read"}
THRESHOLD = calibration.DEFAULT_THRESHOLD
PLACES = 4  # decimals of a shown probability or threshold
NO_HEMORRHAGE = "no hemorrhage"


def error_record(file: str, reason: str) -> dict:
  """The JSON line of a file that could not be read."""
  return {"file": file, "status": ERROR, "reason": reason}


def shows(status: str, reveal: bool = False) -> bool:
  """Whether probabilities may be shown: ok, or out of domain and revealed on request."""
  return status == OK or (reveal and status == OUT_OF_DOMAIN)


def decide(probabilities: dict[str, float], thresholds: dict[str, float] | float = THRESHOLD
           ) -> str:
  """One label for people: no hemorrhage, or every subtype at or over its operating point.

  `thresholds`: the operating point per label (or one for all). `any` below its own is no
  hemorrhage; over it, the subtypes over theirs are named, most over first ("subdural +
  subarachnoid"), or "hemorrhage" when none is. A model without `any` names its most likely.
  """
  thresholds = _per_label(probabilities, thresholds)
  subtypes = {k: v for k, v in probabilities.items() if k in tasks.SUBTYPES}
  if "any" not in probabilities:
    return max(subtypes, key=subtypes.get) if subtypes else "hemorrhage"
  over = positive(probabilities, thresholds)
  if not over["any"]:
    return NO_HEMORRHAGE
  named = [k for k in sorted(subtypes, key=lambda k: -evidence(subtypes[k], thresholds[k]))
           if over[k]]
  return " + ".join(named) or "hemorrhage"


def positive(probabilities: dict[str, float], thresholds: dict[str, float] | float = THRESHOLD
             ) -> dict[str, bool]:
  """Per label: at or over its operating point, and for a subtype `any` too (when the model
  has it), so the flags name exactly what `decide` names."""
  thresholds = _per_label(probabilities, thresholds)
  over = {k: v >= thresholds[k] for k, v in probabilities.items()}
  if "any" in over:
    over = {k: v and (k not in tasks.SUBTYPES or over["any"]) for k, v in over.items()}
  return over


def numbers(probabilities: dict[str, float], thresholds: dict[str, float] | float = THRESHOLD
            ) -> dict:
  """What an answer shows of its numbers: probabilities, operating points and positive flags,
  rounded to `PLACES` (a model's fifth decimal means nothing)."""
  per_label, shown = _per_label(probabilities, thresholds), _rounded(probabilities)
  return {"probabilities": shown, "hemorrhage_probability": shown.get("any"),
          "thresholds": _rounded(per_label), "positive": positive(probabilities, per_label)}


def _rounded(values: dict[str, float]) -> dict[str, float]:
  return {k: round(float(v), PLACES) for k, v in values.items()}


def _per_label(probabilities: dict[str, float], thresholds: dict[str, float] | float
               ) -> dict[str, float]:
  if not isinstance(thresholds, dict):
    return dict.fromkeys(probabilities, float(thresholds))
  return {k: thresholds.get(k, THRESHOLD) for k in probabilities}


def evidence(probability: float, threshold: float) -> float:
  """A probability against its operating point, on [0, 1] with the threshold at 0.5.

  Piecewise linear (0 -> 0, threshold -> 0.5, 1 -> 1): the page's bars show it, so a bar past
  half is an output over its threshold and the longest bar is what the headline names first.
  """
  t = min(max(threshold, 1e-6), 1 - 1e-6)
  if probability < t:
    return 0.5 * probability / t
  return 0.5 + 0.5 * (probability - t) / (1 - t)
