"""Calibrated probabilities and operating points, fitted on the validation split.

Temperature scaling (Guo et al. 2017): each output's logit is divided by one temperature T fitted
by negative log-likelihood on validation; T > 1 softens an over-confident output. It keeps the
ranking (AUC) and is one number per output, so it cannot over-fit a few hundred slices. A softmax
task (the subtype model) has one temperature shared by its outputs, as its classes compete. A
temperature that would raise its output's validation ECE is dropped (`keep_if_better`).

Operating points: per output, the highest threshold on the calibrated probability whose
validation sensitivity reaches the target (default 0.95): a screening aid should miss few bleeds.
Outputs with no positive validation slice keep 0.5. Research and education use only.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

DEFAULT_THRESHOLD = 0.5
TARGET_SENSITIVITY = 0.95
ECE_BINS = 15
_EPS = 1e-7


def apply(logits: np.ndarray, temperatures) -> np.ndarray:
  """Logits divided by their output's temperature (no temperatures: unchanged)."""
  logits = np.asarray(logits, np.float64)
  return logits if not len(temperatures) else logits / np.asarray(temperatures, np.float64)


def probabilities(logits: np.ndarray, activation: str, temperatures=()) -> np.ndarray:
  z = apply(logits, temperatures)
  if activation == "softmax":
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
  return 1.0 / (1.0 + np.exp(-z))


def nll(logits: np.ndarray, targets: np.ndarray, activation: str, temperatures=()) -> float:
  """Mean negative log-likelihood per output (sigmoid) or per example (softmax)."""
  p = np.clip(probabilities(logits, activation, temperatures), _EPS, 1 - _EPS)
  t = np.asarray(targets, np.float64)
  if activation == "softmax":
    return float(-np.mean(np.sum(t * np.log(p), axis=1)))
  return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def fit_temperatures(logits: np.ndarray, targets: np.ndarray, activation: str) -> tuple[float, ...]:
  """One temperature per output (shared by a softmax's outputs), minimising validation NLL."""
  logits, targets = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
  k = logits.shape[1]

  def best(z, t) -> float:
    def loss(log_t):
      return nll(z, t, activation, (np.exp(log_t),) * z.shape[1])
    res = optimize.minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))

  if activation == "softmax":
    return (best(logits, targets),) * k
  return tuple(best(logits[:, [j]], targets[:, [j]]) for j in range(k))


def keep_if_better(logits: np.ndarray, targets: np.ndarray, activation: str,
                   temperatures) -> tuple[float, ...]:
  """Each output's temperature where it lowers that output's validation ECE, else 1.

  NLL picks the temperature; the calibration error it is meant to reduce may veto it (a few
  hundred validation slices can make NLL's optimum a hair worse in ECE). A softmax's shared
  temperature is judged on all its outputs at once.
  """
  t = np.asarray(temperatures, np.float64)
  before = probabilities(logits, activation)
  after = probabilities(logits, activation, t)
  columns = [list(range(len(t)))] if activation == "softmax" else [[j] for j in range(len(t))]
  for cols in columns:
    if (reliability(after[:, cols], targets[:, cols])["ece"]
        > reliability(before[:, cols], targets[:, cols])["ece"]):
      t[cols] = 1.0
  return tuple(float(v) for v in t)


def operating_thresholds(probs: np.ndarray, targets: np.ndarray,
                         target_sensitivity: float = TARGET_SENSITIVITY) -> tuple[float, ...]:
  """Per output, the highest threshold whose sensitivity on these examples reaches the target."""
  if not 0.0 < target_sensitivity <= 1.0:
    raise ValueError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
  out = []
  for j in range(probs.shape[1]):
    positives = np.sort(probs[targets[:, j] > 0.5, j])
    if positives.size == 0:
      out.append(DEFAULT_THRESHOLD)
      continue
    need = int(np.ceil(target_sensitivity * positives.size - 1e-9))
    out.append(float(positives[positives.size - need]))
  return tuple(out)


def sensitivity_specificity(probs: np.ndarray, targets: np.ndarray, thresholds) -> list[dict]:
  """Per output: sensitivity and specificity with `probs >= threshold` read as positive."""
  out = []
  for j, thr in enumerate(thresholds):
    pred, pos = probs[:, j] >= thr, targets[:, j] > 0.5
    out.append({"threshold": float(thr),
                "sensitivity": _ratio(np.sum(pred & pos), np.sum(pos)),
                "specificity": _ratio(np.sum(~pred & ~pos), np.sum(~pos))})
  return out


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> dict:
  """Expected calibration error and the reliability diagram's bins, over every (slice, output).

  Each output is a yes/no event (a softmax's too, one-vs-rest), so one diagram covers a model.
  """
  p, t = np.asarray(probs, np.float64).ravel(), np.asarray(targets, np.float64).ravel()
  index = np.minimum((p * bins).astype(int), bins - 1)
  count = np.bincount(index, minlength=bins)
  conf = np.bincount(index, p, bins) / np.maximum(count, 1)
  freq = np.bincount(index, t, bins) / np.maximum(count, 1)
  ece = float(np.sum(count * np.abs(conf - freq)) / max(len(p), 1))
  return {"ece": ece, "count": count.tolist(), "confidence": conf.tolist(),
          "frequency": freq.tolist()}


def _ratio(num, den) -> float | None:
  return float(num) / float(den) if den else None
