"""Evaluation metrics as plain numpy, so they are easy to check by hand and run anywhere.

Confusion matrices are indexed [actual, predicted], as in the paper's Tables 2 and 4.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ichflax import tasks

# Probabilities are clipped like Keras and the RSNA scorer, so one confident miss stays finite.
EPS = 1e-7


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  if y_true.size == 0:
    raise ValueError("accuracy of an empty set is undefined: no examples were evaluated")
  return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
  """int64 (k, k) counts, rows actual class, columns predicted class."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
  return cm


def sensitivity_specificity(cm: np.ndarray) -> tuple[float, float]:
  """Binary (2, 2) matrix, class 1 positive: (TP / (TP + FN), TN / (TN + FP)); NaN if undefined."""
  cm = np.asarray(cm)
  if cm.shape != (2, 2):
    raise ValueError(f"sensitivity/specificity need a 2x2 confusion matrix, got {cm.shape}")
  return _ratio(cm[1, 1], cm[1].sum()), _ratio(cm[0, 0], cm[0].sum())


def per_class_sensitivity(cm: np.ndarray) -> np.ndarray:
  """Recall of each class: diagonal over row sums (NaN for a class with no examples)."""
  cm = np.asarray(cm)
  rows = cm.sum(axis=1)
  with np.errstate(invalid="ignore"):  # 0 / 0 for an empty row; no row has x / 0 with x > 0
    return np.where(rows > 0, np.diag(cm) / rows, np.nan)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve from ranks (Mann-Whitney U); tied scores count one half.

  NaN when only one class is present, since the curve is then undefined.
  """
  y_true = np.asarray(y_true).astype(bool)
  scores = np.asarray(scores)
  n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
  if n_pos == 0 or n_neg == 0:
    return math.nan
  ranks = _average_ranks(scores)
  u = ranks[y_true].sum() - n_pos * (n_pos + 1) / 2
  return float(u / (n_pos * n_neg))


def bootstrap_auc(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray, *,
                  resamples: int = 1000, seed: int = 0, level: float = 0.95
                  ) -> tuple[float, float]:
  """(low, high) percentile interval of the ROC AUC, resampling whole groups (studies).

  Slices of one study are correlated; resampling slices would make the interval too narrow.
  Resamples with one class only are skipped; (nan, nan) when none has both.
  """
  y_true, scores = np.asarray(y_true).astype(bool), np.asarray(scores)
  return bootstrap(lambda rows: roc_auc(y_true[rows], scores[rows]), groups,
                   resamples=resamples, seed=seed, level=level)


def bootstrap(statistic: Callable[[np.ndarray], float], groups: np.ndarray, *,
              resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
  """(low, high) percentile interval of `statistic(rows)` over resamples of whole groups
  (NaN results skipped; (nan, nan) when every one is NaN). A paired difference of two models
  on the same rows is one statistic: its interval says whether the change is more than noise."""
  _, group_of = np.unique(np.asarray(groups), return_inverse=True)
  members = np.split(np.argsort(group_of, kind="stable"),
                     np.cumsum(np.bincount(group_of))[:-1])
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(resamples):
    rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
    values.append(statistic(rows))
  values = np.asarray(values, np.float64)
  values = values[~np.isnan(values)]
  if not len(values):
    return math.nan, math.nan
  tail = 100 * (1 - level) / 2
  return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def paired_change(task_name: str, before: np.ndarray, after: np.ndarray, targets: np.ndarray,
                  groups: np.ndarray, *, resamples: int = 1000, seed: int = 0) -> dict:
  """How `after` differs from `before` on the same rows: the AUC of `any` (higher is better)
  and the log loss (lower is better), each with a 95% interval resampling whole groups."""
  task = tasks.get_task(task_name)
  col = task.outputs.index("any")
  y = targets[:, col] >= 0.5

  def auc_gain(rows):
    return roc_auc(y[rows], after[rows, col]) - roc_auc(y[rows], before[rows, col])

  def loss_change(rows):
    return (log_loss(targets[rows], after[rows], task.activation)
            - log_loss(targets[rows], before[rows], task.activation))

  everything = np.arange(len(y))
  return {name: {"value": float(f(everything)),
                 "interval": bootstrap(f, groups, resamples=resamples, seed=seed)}
          for name, f in (("auc_any", auc_gain), ("log_loss", loss_change))}


def log_loss(targets: np.ndarray, probs: np.ndarray, activation: str) -> float:
  """Mean cross-entropy: categorical for softmax outputs, per-label binary for sigmoid."""
  t = np.asarray(targets)
  p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
  if activation == "softmax":
    return float(np.mean(-np.sum(t * np.log(p), axis=-1)))
  return float(np.mean(_bce(t, p)))


def rsna_log_loss(targets: np.ndarray, probs: np.ndarray) -> float:
  """RSNA 2019 metric: binary log loss over the six labels, weighted `any` x2, averaged."""
  t = np.asarray(targets)
  p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
  if t.shape[-1] != len(tasks.LABELS):
    raise ValueError(f"the RSNA log loss needs all six labels {tasks.LABELS}, got {t.shape[-1]}")
  w = tasks.RSNA_WEIGHTS
  return float(np.mean(_bce(t, p) @ w / w.sum()))


def hits(activation: str, probs, targets):
  """Per-example fraction of correct outputs (top class for softmax, each label at 0.5 else).

  Array methods only, so numpy and jax arrays alike: the train step sums it on the device.
  """
  if activation == "softmax":
    return (probs.argmax(-1) == targets.argmax(-1)).astype(float)
  return ((probs >= 0.5) == (targets >= 0.5)).astype(float).mean(-1)


def series_auc(targets: np.ndarray, probs: np.ndarray, series_ids: np.ndarray) -> list[float]:
  """Per output, the AUC over series: a series scores its highest slice probability and is
  positive when any of its slices is (how a series summary answers)."""
  names, where = np.unique(np.asarray(series_ids), return_inverse=True)
  worst_p = np.full((len(names), probs.shape[1]), -np.inf)
  worst_t = np.zeros((len(names), probs.shape[1]))
  np.maximum.at(worst_p, where, probs)
  np.maximum.at(worst_t, where, targets)
  return [roc_auc(worst_t[:, k] >= 0.5, worst_p[:, k]) for k in range(probs.shape[1])]


def evaluate(task_name: str, probs: np.ndarray, targets: np.ndarray,
             series_ids: np.ndarray | None = None) -> dict:
  """Every metric the task reports, from probabilities and targets of the evaluated examples;
  with their `series_ids` (all known), the per-series AUC of a sigmoid task too."""
  task = tasks.get_task(task_name)
  probs, targets = np.asarray(probs), np.asarray(targets)
  out: dict = {"n": len(targets), "log_loss": log_loss(targets, probs, task.activation)}
  if series_ids is not None and task.activation == "sigmoid" and all(map(len, series_ids)):
    aucs = series_auc(targets, probs, series_ids)
    out["series"] = {"n": len(np.unique(series_ids)),
                     "auc": dict(zip(task.class_names, _floats(aucs)))}
  if task.activation == "softmax":
    y, pred = targets.argmax(-1), probs.argmax(-1)
    cm = confusion_matrix(y, pred, task.num_outputs)
    aucs = [roc_auc(y == k, probs[:, k]) for k in range(task.num_outputs)]
    out |= {"accuracy": accuracy(y, pred), "confusion": cm.tolist(),
            "per_class_sensitivity": dict(zip(task.class_names,
                                              _floats(per_class_sensitivity(cm)))),
            "per_class_auc": dict(zip(task.class_names, _floats(aucs))),
            "auc": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else math.nan}
    return out
  y, pred = targets >= 0.5, probs >= 0.5
  # Binary and multilabel both report the hemorrhage-vs-none view through the `any` column.
  col = task.class_names.index("any") if "any" in task.class_names else 0
  cm = confusion_matrix(y[:, col], pred[:, col], 2)
  sens, spec = sensitivity_specificity(cm)
  out |= {"accuracy": accuracy(y, pred), "confusion": cm.tolist(), "sensitivity": sens,
          "specificity": spec, "auc": roc_auc(y[:, col], probs[:, col])}
  if task.num_outputs > 1:
    out["per_class_auc"] = dict(zip(task.class_names, _floats(
        [roc_auc(y[:, k], probs[:, k]) for k in range(task.num_outputs)])))
    out["per_class_sensitivity"] = dict(zip(task.class_names, _floats(
        [_ratio((y[:, k] & pred[:, k]).sum(), y[:, k].sum()) for k in range(task.num_outputs)])))
  if task.num_outputs == len(tasks.LABELS):
    out["rsna_log_loss"] = rsna_log_loss(targets, probs)
  return out


def _bce(t: np.ndarray, p: np.ndarray) -> np.ndarray:
  return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def _ratio(num: float, den: float) -> float:
  return float(num / den) if den else math.nan


def _floats(xs) -> list[float]:
  return [float(x) for x in xs]


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks with ties given their average rank."""
  order = np.argsort(x)  # any order within a run of ties: the run shares one rank
  sorted_x = x[order]
  # Each run of equal values gets the mean of the ranks it spans.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  run_rank = (starts + 1 + ends) / 2.0
  ranks = np.empty(len(x))
  ranks[order] = np.repeat(run_rank, ends - starts)
  return ranks
