"""Metrics against cases worked out by hand (and the paper's own tables)."""

import json
import math

import numpy as np
import pytest

from ichflax import tasks
from ichflax.evaluation import metrics, paper

# Undefined values (no positives, a class never seen) are NaN by design, never a RuntimeWarning
# in the training log.
pytestmark = pytest.mark.filterwarnings("error")


def test_accuracy_and_confusion_matrix():
  y, p = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])
  assert metrics.accuracy(y, p) == pytest.approx(3 / 5)
  np.testing.assert_array_equal(metrics.confusion_matrix(y, p, 2), [[1, 1], [1, 2]])
  with pytest.raises(ValueError, match="empty"):
    metrics.accuracy(np.array([]), np.array([]))


def test_sensitivity_specificity_of_paper_table_2():
  sens, spec = metrics.sensitivity_specificity(np.array(paper.BINARY["confusion"]))
  assert sens == pytest.approx(1913 / 2000)
  assert spec == pytest.approx(227 / 400)
  sens, spec = metrics.sensitivity_specificity(np.array([[3, 0], [0, 0]]))
  assert math.isnan(sens) and spec == 1.0
  with pytest.raises(ValueError, match="2x2"):
    metrics.sensitivity_specificity(np.eye(3))


def test_per_class_sensitivity_of_paper_table_4():
  got = metrics.per_class_sensitivity(np.array(paper.SUBTYPE["confusion"]))
  np.testing.assert_allclose(got, np.array([225, 189, 235, 219, 205]) / 400)
  got = metrics.per_class_sensitivity(np.array([[2, 2, 0], [0, 1, 0], [0, 0, 0]]))
  assert got[0] == 0.5 and got[1] == 1.0 and math.isnan(got[2])  # one example; none


@pytest.mark.parametrize("y,s,want", [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of 4 pairs ordered
    ([0, 1], [0.5, 0.5], 0.5),  # a tie counts one half
    ([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9], 3.5 / 4),  # tie across classes
    ([1, 1, 0], [0.9, 0.8, 0.1], 1.0),
    ([1, 0], [0.1, 0.9], 0.0),
])
def test_roc_auc_hand_cases(y, s, want):
  assert metrics.roc_auc(np.array(y), np.array(s)) == pytest.approx(want)


def test_roc_auc_undefined_with_one_class():
  assert math.isnan(metrics.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))
  assert math.isnan(metrics.roc_auc(np.array([0, 0]), np.array([0.2, 0.3])))


def test_log_losses():
  binary = metrics.log_loss(np.array([[1.0], [0.0]]), np.array([[0.8], [0.3]]), "sigmoid")
  assert binary == pytest.approx((-math.log(0.8) - math.log(0.7)) / 2)
  softmax = metrics.log_loss(np.array([[1.0, 0, 0], [0, 1, 0]]),
                             np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]), "softmax")
  assert softmax == pytest.approx((-math.log(0.5) - math.log(0.6)) / 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_certain_misses_cost_the_clip_not_infinity(dtype):
  """A probability of exactly 0 or 1 (a saturated float32 sigmoid) on the wrong side costs
  -log(1e-7), the clip of Keras and the RSNA scorer, worked out in float64 whatever the input."""
  miss = -math.log(1e-7)
  p = np.array([[0.0], [1.0]], dtype)
  assert metrics.log_loss(np.array([[1.0], [0.0]]), p, "sigmoid") == pytest.approx(miss)
  p = np.array([[0.0, 1.0, 0.0]], dtype)
  assert metrics.log_loss(np.array([[1.0, 0, 0]]), p, "softmax") == pytest.approx(miss)
  t = np.array([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], float)
  assert metrics.rsna_log_loss(t, (1 - t).astype(dtype)) == pytest.approx(miss)


def test_rsna_log_loss_weights_any_twice():
  t = np.array([[0, 0, 0, 0, 0, 1.0]])
  p = np.array([[0.5, 0.5, 0.5, 0.5, 0.5, 0.9]])
  assert metrics.rsna_log_loss(t, p) == pytest.approx((5 * math.log(2) - 2 * math.log(0.9)) / 7)
  with pytest.raises(ValueError, match="six labels .*, got 5$"):
    metrics.rsna_log_loss(t[:, :5], p[:, :5])


def test_rsna_log_loss_matches_the_multilabel_training_loss():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 6)).astype(np.float32)
  targets = rng.integers(0, 2, size=(7, 6)).astype(np.float32)
  task = tasks.get_task("multilabel")
  want = float(np.mean(task.loss(logits, targets)))
  assert metrics.rsna_log_loss(targets, 1 / (1 + np.exp(-logits))) == pytest.approx(want, rel=1e-5)


def test_hits_per_example():
  np.testing.assert_allclose(
      metrics.hits("sigmoid", np.array([[0.9, 0.2], [0.4, 0.6]]), np.array([[1, 0], [1, 1]])),
      [1.0, 0.5])
  np.testing.assert_allclose(
      metrics.hits("softmax", np.array([[0.7, 0.3], [0.6, 0.4]]), np.array([[1, 0], [0, 1]])),
      [1.0, 0.0])
  # The top class counts, even below 0.5 (read per label at 0.5 these would be 2/3 and 1/3).
  np.testing.assert_allclose(
      metrics.hits("softmax", np.array([[0.4, 0.35, 0.25], [0.2, 0.3, 0.5]]), np.eye(3)[[0, 1]]),
      [1.0, 0.0])


def test_outputs_equal_to_their_targets_are_all_correct():
  """0.5 is on the positive side for targets and probabilities alike (as for the verdict's
  threshold), so outputs equal to their targets score every label right, soft targets too."""
  t = np.array([[1.0, 0.5, 0.0], [0.5, 0.0, 1.0]])
  np.testing.assert_allclose(metrics.hits("sigmoid", t, t), [1.0, 1.0])
  out = metrics.evaluate("binary", t[:, 1:2], t[:, 1:2])
  assert out["accuracy"] == 1.0 and out["confusion"] == [[1, 0], [0, 1]]


def test_evaluate_binary():
  probs = np.array([[0.9], [0.6], [0.2], [0.4]])
  targets = np.array([[1.0], [0.0], [0.0], [1.0]])
  out = metrics.evaluate("binary", probs, targets)
  assert set(out) == {"n", "log_loss", "accuracy", "confusion", "sensitivity", "specificity",
                      "auc"}  # one output: no per-class breakdown beside the same numbers
  assert out["n"] == 4 and out["accuracy"] == 0.5
  assert out["log_loss"] == pytest.approx(-math.log(0.9 * 0.4 * 0.8 * 0.4) / 4)
  assert json.dumps(out["confusion"]) == "[[1, 1], [1, 1]]"  # counts, written as integers
  assert out["sensitivity"] == 0.5 and out["specificity"] == 0.5
  assert out["auc"] == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ordered


def test_evaluate_subtype_and_multilabel():
  eye = np.eye(5)
  out = metrics.evaluate("subtype", eye[[0, 1, 2, 3, 4, 0]] * 0.8 + 0.04, eye[[0, 1, 2, 3, 4, 1]])
  assert out["n"] == 6 and out["accuracy"] == pytest.approx(5 / 6)
  assert out["log_loss"] == pytest.approx(-(5 * math.log(0.84) + math.log(0.04)) / 6)
  assert out["per_class_sensitivity"]["intraparenchymal"] == 0.5
  assert np.array(out["confusion"]).sum() == 6
  # Pairs ordered (ties one half): epidural 4.5 of 5 (the miss ties at 0.84), intraparenchymal
  # 6 of 8 (its missed slice ties the four negatives at 0.04), the others 5 of 5.
  assert out["per_class_auc"] == pytest.approx(dict(zip(tasks.SUBTYPES, [0.9, 0.75, 1, 1, 1])))
  assert out["auc"] == pytest.approx(4.65 / 5)
  t = np.array([[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]], float)
  out = metrics.evaluate("multilabel", np.where(t > 0, 0.8, 0.1), t)
  assert out["accuracy"] == 1.0 and out["confusion"] == [[1, 0], [0, 1]]
  # Row 1: epidural and `any` (x2) at 0.8, four negatives at 0.9; row 2: seven weights at 0.9.
  assert out["rsna_log_loss"] == pytest.approx((-3 * math.log(0.8) - 11 * math.log(0.9)) / 14)


def test_subtype_auc_of_a_set_with_one_class_is_nan():
  """A tiny split (`--limit`) can hold one subtype only: every class AUC is undefined."""
  out = metrics.evaluate("subtype", np.full((2, 5), 0.2), np.eye(5)[[2, 2]])
  assert math.isnan(out["auc"]) and all(math.isnan(a) for a in out["per_class_auc"].values())


# Six slices where `any` differs from every subtype column and each column has its own AUC,
# so a metric read from the wrong column, or from `any` alone, gives another number.
ML_TARGETS = np.array([
    # epi ipa ivh sah sdh any
    [1, 0, 1, 0, 1, 1],
    [1, 0, 0, 1, 0, 1],
    [0, 1, 1, 0, 0, 1],
    [0, 1, 0, 1, 1, 1],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0]], float)
ML_PROBS = np.array([
    [.9, .9, .6, .5, .1, .9],
    [.8, .1, .7, .3, .9, .6],
    [.1, .8, .6, .4, .8, .7],
    [.2, .2, .1, .2, .2, .3],
    [.3, .3, .2, .6, .7, .4],
    [.4, .05, .8, .1, .6, .1]])


def test_multilabel_per_class_auc_and_accuracies_by_hand():
  for k in range(5):  # the fixture's point: no subtype column equals `any`
    assert not np.array_equal(ML_TARGETS[:, k], ML_TARGETS[:, 5])
  out = metrics.evaluate("multilabel", ML_PROBS, ML_TARGETS)
  # Positive-negative pairs ordered, of 2 x 4 (4 x 2 for `any`), counted by hand per column.
  assert out["per_class_auc"] == pytest.approx({
      "epidural": 8 / 8, "intraparenchymal": 5 / 8, "intraventricular": 4 / 8,
      "subarachnoid": 2 / 8, "subdural": 0 / 8, "any": 7 / 8})
  assert out["auc"] == pytest.approx(7 / 8)  # the hemorrhage-vs-none view reads `any`
  # Correct labels at 0.5 per column: 6, 4, 4, 2, 0, 5 of 6; on `any` alone it would be 5/6.
  assert out["accuracy"] == pytest.approx(21 / 36)
  assert out["confusion"] == [[2, 0], [1, 3]]
  assert out["per_class_sensitivity"] == pytest.approx({
      "epidural": 1.0, "intraparenchymal": 0.5, "intraventricular": 1.0, "subarachnoid": 0.0,
      "subdural": 0.0, "any": 0.75})
  # The training loop's accuracy (per-example hits) agrees with evaluation's on the same data.
  hits = metrics.hits("sigmoid", ML_PROBS, ML_TARGETS)
  np.testing.assert_allclose(hits, np.array([3, 3, 5, 2, 4, 4]) / 6)
  assert float(np.mean(hits)) == pytest.approx(21 / 36)


def test_bootstrap_auc_resamples_whole_studies():
  """Ten identical slices per study carry one study's evidence: resampling by study gives the
  wide interval 20 studies deserve, resampling slices a falsely narrow one."""
  rng = np.random.default_rng(0)
  label = rng.random(20) < 0.5
  score = label + rng.normal(0, 0.8, 20)
  y, s, study = np.repeat(label, 10), np.repeat(score, 10), np.repeat(np.arange(20), 10)
  low, high = metrics.bootstrap_auc(y, s, study, resamples=300)
  slice_low, slice_high = metrics.bootstrap_auc(y, s, np.arange(200), resamples=300)
  assert low < metrics.roc_auc(y, s) < high
  assert high - low > 2 * (slice_high - slice_low)
  assert metrics.bootstrap_auc(y, y.astype(float), study, resamples=50) == (1.0, 1.0)
  assert all(math.isnan(v) for v in metrics.bootstrap_auc(np.ones(4), np.ones(4), np.arange(4)))


def test_paired_change_is_after_minus_before_with_an_interval_over_groups():
  rng = np.random.default_rng(0)
  targets = np.zeros((200, 6))
  targets[:100, tasks.ANY] = 1
  before = np.full((200, 6), 0.5)
  before[:, tasks.ANY] = rng.random(200)
  after = before.copy()
  after[:100, tasks.ANY] = np.clip(after[:100, tasks.ANY] + 0.3, 0, 1)  # positives rise
  groups = np.repeat(np.arange(40), 5)
  change = metrics.paired_change("multilabel", before, after, targets, groups, resamples=200)
  assert change["auc_any"]["value"] > 0 and change["auc_any"]["interval"][0] > 0
  assert change["log_loss"]["value"] < 0 and change["log_loss"]["interval"][1] < 0
