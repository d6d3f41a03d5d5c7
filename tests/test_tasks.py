"""Tasks on the six RSNA labels: which examples, which targets, which loss."""

import jax.numpy as jnp
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
  assert t.targets(LABELS, GROUP).dtype == np.float32  # the device batch's dtype, as documented
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


def test_a_two_subtype_slice_learns_the_folder_it_was_drawn_for():
  """The paper's code files a multi-subtype slice under its first subtype with room left."""
  t = tasks.get_task("subtype")
  two = np.array([[1, 0, 0, 0, 1, 1]] * 3)  # epidural + subdural
  group = np.array([0, 4, tasks.NO_GROUP])  # epidural folder, subdural folder, not drawn
  np.testing.assert_array_equal(t.select(two, group), [True, True, False])
  np.testing.assert_array_equal(t.targets(two[:2], group[:2]), np.eye(5)[[0, 4]])


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


# Keras's clip (1e-7), as the paper's code trained with: past it, a miss costs -log(clip) and a
# hit -log(1 - clip), whatever the logit.
CLIP = 1e-7


def test_clipped_loss_of_certain_hits_and_misses():
  miss, hit = -np.log(CLIP), -np.log1p(-CLIP)
  logits = np.array([[100.0], [-100.0], [100.0], [-100.0]], np.float32)
  targets = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)
  np.testing.assert_allclose(tasks.get_task("binary").loss(logits, targets, CLIP),
                             [hit, hit, miss, miss], rtol=1e-4)
  logits = np.array([[100.0, 0.0, 0.0], [100.0, 0.0, 0.0]], np.float32)
  targets = np.eye(3, dtype=np.float32)[[0, 1]]
  subtype = tasks.get_task("subtype")  # the softmax loss never reads the class count
  np.testing.assert_allclose(subtype.loss(logits, targets, CLIP), [hit, miss], rtol=1e-4)


def test_bfloat16_logits_give_float32_losses_and_probabilities():
  """A bf16 model's outputs: probabilities of 3 significant digits would tie AUC ranks."""
  logits = jnp.asarray([[0.5, -1.0, 2.0, 0.0, 1.0, -0.5]], jnp.bfloat16)
  task = tasks.get_task("multilabel")
  assert task.loss(logits, jnp.ones((1, 6))).dtype == jnp.float32
  assert task.probabilities(logits).dtype == jnp.float32
