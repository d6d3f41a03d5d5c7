"""The verdict: which statuses show probabilities, and the one label people read. No model."""

from __future__ import annotations

import pytest

from ichflax.trust import verdict


@pytest.mark.parametrize("probabilities,threshold,label", [
    # The most likely subtype, not the first, the last or the least likely.
    ({"epidural": 0.1, "intraparenchymal": 0.7, "intraventricular": 0.2, "subarachnoid": 0.05,
      "subdural": 0.3, "any": 0.9}, 0.5, "intraparenchymal"),
    ({"epidural": 0.6, "intraparenchymal": 0.2, "intraventricular": 0.1, "subarachnoid": 0.3,
      "subdural": 0.4, "any": 0.7}, 0.5, "epidural"),
    # `any` below the threshold says no hemorrhage, however likely a subtype looks.
    ({"epidural": 0.1, "subdural": 0.9, "any": 0.3}, 0.5, verdict.NO_HEMORRHAGE),
    ({"subdural": 0.8, "any": 0.5}, 0.5, "subdural"),  # at the threshold counts as hemorrhage
    ({"subdural": 0.8, "any": 0.9}, 0.95, verdict.NO_HEMORRHAGE),
    ({"subdural": 0.8, "any": 0.2}, 0.1, "subdural"),
    ({"any": 0.8}, 0.5, "hemorrhage"),  # a binary model names no subtype
    ({"epidural": 0.2, "subdural": 0.7}, 0.5, "subdural"),  # a subtype model alone
    # Per-label operating points (a calibrated checkpoint): `any` is judged by its own only.
    ({"subdural": 0.6, "any": 0.3}, {"subdural": 0.1, "any": 0.2}, "subdural"),
    ({"subdural": 0.6, "any": 0.3}, {"subdural": 0.1, "any": 0.4}, verdict.NO_HEMORRHAGE),
    # Every subtype over its own point is named, most over it first; none over: "hemorrhage".
    ({"epidural": 0.35, "subdural": 0.28, "any": 0.4}, {"epidural": 0.76, "subdural": 0.04,
                                                       "any": 0.175}, "subdural"),
    ({"subarachnoid": 0.5, "subdural": 0.3, "any": 0.9}, {"subarachnoid": 0.4, "subdural": 0.1,
                                                         "any": 0.5}, "subdural + subarachnoid"),
    ({"subdural": 0.6, "any": 0.3}, {"subdural": 0.9, "any": 0.2}, "hemorrhage"),
])
def test_decide_hand_cases(probabilities, threshold, label):
  assert verdict.decide(probabilities, threshold) == label


@pytest.mark.parametrize("status,reveal,shown", [
    (verdict.OK, False, True),
    (verdict.OK, True, True),
    (verdict.OUT_OF_DOMAIN, False, False),  # withheld unless revealed
    (verdict.OUT_OF_DOMAIN, True, True),
    (verdict.OUT_OF_SCOPE, True, False),  # never run through the model: nothing to reveal
    (verdict.ERROR, True, False),
])
def test_probabilities_shown_only_when_ok_or_revealed_out_of_domain(status, reveal, shown):
  assert verdict.shows(status, reveal) is shown


def test_shows_defaults_to_withholding():
  assert verdict.shows(verdict.OK) and not verdict.shows(verdict.OUT_OF_DOMAIN)


def test_error_record_is_the_documented_line():
  """docs/serving.md: `{"file", "status": "error", "reason"}`, nothing else."""
  assert verdict.error_record("series/broken.dcm", "truncated") == {
      "file": "series/broken.dcm", "status": "error", "reason": "truncated"}


@pytest.mark.parametrize("threshold", [0.02, 0.175, 0.5, 0.9])
def test_evidence_puts_each_threshold_at_half(threshold):
  assert verdict.evidence(threshold, threshold) == pytest.approx(0.5)
  assert verdict.evidence(0.0, threshold) == 0 and verdict.evidence(1.0, threshold) == 1
  grid = [verdict.evidence(p / 100, threshold) for p in range(101)]
  assert grid == sorted(grid)  # monotone: a higher probability never draws a shorter bar


def test_positive_flags_name_what_the_label_names():
  """Per label over its operating point; a subtype only when `any` is over its own too."""
  thresholds = {"any": 0.2, "subdural": 0.1, "epidural": 0.5}
  over = {"any": 0.3, "subdural": 0.15, "epidural": 0.4}
  assert verdict.positive(over, thresholds) == {"any": True, "subdural": True, "epidural": False}
  under = {**over, "any": 0.19}
  assert not any(verdict.positive(under, thresholds).values())  # decide: "no hemorrhage"
  assert verdict.decide(under, thresholds) == verdict.NO_HEMORRHAGE
  shown = verdict.numbers({"any": 0.123456, "subdural": 0.5}, 0.5)
  assert shown == {"probabilities": {"any": 0.1235, "subdural": 0.5},
                   "hemorrhage_probability": 0.1235, "thresholds": {"any": 0.5, "subdural": 0.5},
                   "positive": {"any": False, "subdural": False}}
