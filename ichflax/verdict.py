"""One status for every answer: the CLI's JSON lines, the Predictor and the page say the same.

    {"status": "ok" | "out_of_scope" | "out_of_domain" | "error", "reason": "..."}

`ok`: judged, probabilities given. `out_of_scope`: not an axial head CT slice (`ichflax.scope`),
never run through the model. `out_of_domain`: a head CT slice unlike the training data
(`ichflax.domain`): probabilities withheld unless revealed, and then marked. `error`: the file
could not be read. `reason` (one sentence) is present whenever the status is not ok.
"""

from __future__ import annotations

OK, OUT_OF_SCOPE, OUT_OF_DOMAIN, ERROR = "ok", "out_of_scope", "out_of_domain", "error"
STATUSES = (OK, OUT_OF_SCOPE, OUT_OF_DOMAIN, ERROR)
# The status in words, for people (the page's table and summaries).
WORDS = {OK: "judged", OUT_OF_SCOPE: "not a head CT slice: not judged",
         OUT_OF_DOMAIN: "unlike the training data: probabilities withheld",
         ERROR: "could not be read"}


def error_record(file: str, reason: str) -> dict:
  """The JSON line of a file that could not be read."""
  return {"file": file, "status": ERROR, "reason": reason}
