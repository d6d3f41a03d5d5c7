"""Tasks on the six RSNA labels: which examples, which targets, which loss."""

import numpy as np
import pytest

from ichflax import tasks

# Rows: epidural only (seed folder 0), subdural + any (no folder), two subtypes, no bleed.
LABELS = np.array([[1, 0, 0, 0, 0, 1],
                   [0, 0, 0, 0, 1, 1],
                   [1, 0, 0, 1, 0, 1],
                   [0, 0, 0, 0, 0, 0]])
GROUP = np.array([0, -1, -1, -1])


def test_binary_learns_any_from_every_slice():
  t = tasks.get_task("binary")
  assert t.select(LABELS, GROUP).all()
  np.testing.assert_array_equal(t.targets(LABELS, GROUP)[:, 0], [1, 1, 1, 0])
  assert (t.default_dropout, t.default_batch_size) == (0.4, 16)  # the seed's tuned preset


def test_subtype_keeps_slices_with_one_subtype_or_a_seed_folder():
  t = tasks.get_task("subtype")
  np.testing.assert_array_equal(t.select(LABELS, GROUP), [True, True, False, False])
  targets = t.targets(LABELS, GROUP)
  np.testing.assert_array_equal(targets[0], np.eye(5)[0])
  np.testing.assert_array_equal(targets[1], np.eye(5)[4])
  # The seed protocol labels by the folder a slice was drawn for; the "no" folder is not a subtype.
  assert not t.select(LABELS[:1], np.array([tasks.NO_HEMORRHAGE_GROUP]))[0]
  assert (t.default_dropout, t.default_batch_size) == (0.3, 8)


def test_losses_match_hand_computed_values():
  logits = np.array([[0.0, 2.0, -1.0, 0.5, 0.0, 1.0]], np.float32)
  targets = np.array([[1, 0, 0, 1, 0, 1]], np.float32)
  sig = 1 / (1 + np.exp(-logits))
  bce = -(targets * np.log(sig) + (1 - targets) * np.log(1 - sig))
  weighted = (bce * [1, 1, 1, 1, 1, 2]).sum() / 7  # RSNA: any counts twice
  np.testing.assert_allclose(tasks.get_task("multilabel").loss(logits, targets), [weighted],
                             rtol=1e-5)
  np.testing.assert_allclose(tasks.get_task("binary").loss(logits[:, :1], targets[:, :1]),
                             [bce[0, 0]], rtol=1e-5)
  five = logits[:, :5]
  softmax_ce = -(five[0, 3] - np.log(np.exp(five).sum()))
  np.testing.assert_allclose(tasks.get_task("subtype").loss(five, np.eye(5)[[3]]), [softmax_ce],
                             rtol=1e-5)


def test_probabilities_follow_the_activation():
  logits = np.array([[0.0, 0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_allclose(tasks.get_task("subtype").probabilities(logits), [[0.2] * 5])
  np.testing.assert_allclose(tasks.get_task("multilabel").probabilities(np.zeros((1, 6))),
                             [[0.5] * 6])


def test_unknown_task_names_the_choices():
  with pytest.raises(ValueError, match="binary, subtype, multilabel"):
    tasks.get_task("segmentation")


@pytest.mark.parametrize("name", ["binary", "subtype", "multilabel"])
def test_loss_is_one_value_per_example(name):
  """Each example's own loss: a sum or mean over the wrong axis would mix examples."""
  task = tasks.get_task(name)
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, task.num_outputs)).astype(np.float32)
  targets = np.eye(task.num_outputs, dtype=np.float32)[[0, task.num_outputs - 1, 0]]
  loss = np.asarray(task.loss(logits, targets))
  assert loss.shape == (3,)
  for i in range(3):
    np.testing.assert_allclose(loss[i], np.asarray(task.loss(logits[i:i + 1], targets[i:i + 1]))[0],
                               rtol=1e-6)
