"""Tasks: which targets a model learns from the six RSNA labels, and how it is scored.

Every dataset stores the six RSNA labels per slice (plus the per-class draws' folder `group`), so
one dataset serves every task; a task only selects examples, builds targets and defines the loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

LABELS = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
SUBTYPES = LABELS[:5]
ANY = 5
# The per-class draws take a folder per class: groups 0..4 are the subtypes, 5 is "no hemorrhage".
NO_HEMORRHAGE_GROUP = 5
NO_GROUP = -1
# RSNA 2019 metric: weighted multi-label log loss, `any` weighted 2, each subtype 1.
RSNA_WEIGHTS = np.array([1, 1, 1, 1, 1, 2], np.float32)


@dataclasses.dataclass(frozen=True)
class Task:
  """A learning problem on the six labels."""

  name: str
  class_names: tuple[str, ...]
  activation: str  # "sigmoid" (independent labels) or "softmax" (one of k)
  default_dropout: float
  default_batch_size: int
  _select: Callable[[np.ndarray, np.ndarray], np.ndarray]
  _targets: Callable[[np.ndarray, np.ndarray], np.ndarray]
  outputs: tuple[str, ...]  # each output as an RSNA label (the binary task's one output: any)
  # Per-output weights of the loss, or None for a plain mean (multilabel: RSNA's metric).
  loss_weights: tuple[float, ...] | None = None
  # The validation metric that ranks checkpoints and sweep points, and whether higher is better:
  # multilabel ranks by the RSNA weighted log loss (the competition's metric, lower is better),
  # computed unclipped from the probabilities, not by the training loss.
  ranking: tuple[str, bool] = ("accuracy", True)

  @property
  def num_outputs(self) -> int:
    return len(self.class_names)

  def select(self, labels: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Boolean mask of the examples this task learns from. labels: (N, 6) 0/1, group: (N,)."""
    return self._select(np.asarray(labels), np.asarray(group))

  def targets(self, labels: np.ndarray, group: np.ndarray) -> np.ndarray:
    """float32 (N, num_outputs) targets for selected examples (one-hot for softmax)."""
    return self._targets(np.asarray(labels), np.asarray(group)).astype(np.float32)

  def loss(self, logits: jax.Array, targets: jax.Array, clip: float = 0.0) -> jax.Array:
    """Per-example loss (N,), in float32 whatever the compute dtype.

    clip > 0: probabilities clipped to [clip, 1 - clip] first, as Keras's losses do (1e-7):
    one confident miss then costs at most -log(clip), and nothing past the clip has a gradient.
    """
    logits = logits.astype(jnp.float32)
    if self.activation == "softmax":
      log_p = jax.nn.log_softmax(logits)
      if clip:
        log_p = jnp.clip(log_p, jnp.log(clip), jnp.log1p(-clip))
      return -jnp.sum(targets * log_p, axis=-1)
    if clip:  # sigmoid(z) clipped to [c, 1 - c] is sigmoid of z clipped to +-logit(1 - c)
      bound = float(np.log1p(-clip) - np.log(clip))
      logits = jnp.clip(logits, -bound, bound)
    bce = -(targets * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits))
    if self.loss_weights is not None:
      w = jnp.asarray(self.loss_weights, jnp.float32)
      return jnp.sum(bce * w, axis=-1) / jnp.sum(w)
    return jnp.mean(bce, axis=-1)

  def probabilities(self, logits):
    """Probabilities per class; works on jax or numpy logits."""
    logits = jnp.asarray(logits, jnp.float32)
    return jax.nn.softmax(logits) if self.activation == "softmax" else jax.nn.sigmoid(logits)


def _one_subtype(labels: np.ndarray, group: np.ndarray) -> np.ndarray:
  drawn = group >= 0  # by a per-class draw (balanced, paper-code)
  exactly_one = labels[:, :5].sum(axis=1) == 1
  return np.where(drawn, group < NO_HEMORRHAGE_GROUP, exactly_one)


def _subtype_targets(labels: np.ndarray, group: np.ndarray) -> np.ndarray:
  # A per-class draw labels a slice by the folder it was drawn for; otherwise its one subtype.
  # Only selected rows (and zero padding) get here, so the index is a subtype, never folder 5.
  index = np.where(group >= 0, group, np.argmax(labels[:, :5], axis=1))
  return np.eye(5)[index]


TASKS: dict[str, Task] = {
    "binary": Task(
        "binary", ("hemorrhage",), "sigmoid", 0.4, 16,
        lambda labels, group: np.ones(len(labels), bool),
        lambda labels, group: labels[:, ANY:ANY + 1], outputs=("any",)),
    "subtype": Task(
        "subtype", SUBTYPES, "softmax", 0.3, 8, _one_subtype, _subtype_targets,
        outputs=SUBTYPES),
    "multilabel": Task(
        "multilabel", LABELS, "sigmoid", 0.3, 16,
        lambda labels, group: np.ones(len(labels), bool),
        lambda labels, group: labels, outputs=LABELS,
        loss_weights=tuple(float(w) for w in RSNA_WEIGHTS), ranking=("rsna_log_loss", False)),
}


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
  return TASKS[name]
