"""JSON-safe copies of run records: checkpoint items, reports and sweep tables all write JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import numpy as np


def jsonable(x: Any) -> Any:
  """JSON-safe copy: dataclasses, tuples, numpy scalars/arrays and NaN (as null)."""
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return jsonable(dataclasses.asdict(x))
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.ndarray, jax.Array)):
    return jsonable(np.asarray(x).tolist())
  if isinstance(x, (np.floating, float)):
    return None if not np.isfinite(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, (str, int, bool)) or x is None:
    return x
  return json.loads(json.dumps(x, default=str))
