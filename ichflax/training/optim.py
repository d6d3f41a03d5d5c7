"""The optimiser a run trains with: optax's Adam, or Adam as Keras computes it.

Keras (2 and 3) adds epsilon to the square root of the *uncorrected* second moment and folds
both bias corrections into the step size; optax adds it to the corrected one. That is the same
update with epsilon scaled by 1 / sqrt(1 - beta2^t): about 30x larger on the first step, so
small gradients (frozen-backbone BatchNorm) move differently. The paper's code used Keras's.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

# Keras's Adam defaults (`compile(optimizer='adam')`).
KERAS_EPSILON = 1e-7


class KerasAdamState(NamedTuple):
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_keras_adam(b1: float = 0.9, b2: float = 0.999,
                        eps: float = KERAS_EPSILON) -> optax.GradientTransformation:
  """m / (sqrt(v) + eps) x sqrt(1 - b2^t) / (1 - b1^t), with m, v uncorrected (Keras's Adam)."""

  def init(params):
    zeros = lambda p: jnp.zeros_like(p, jnp.float32)  # noqa: E731
    return KerasAdamState(jnp.zeros([], jnp.int32), jax.tree.map(zeros, params),
                          jax.tree.map(zeros, params))

  def update(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
    count = state.count + 1
    t = count.astype(jnp.float32)
    alpha = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    out = jax.tree.map(lambda m, v: alpha * m / (jnp.sqrt(v) + eps), mu, nu)
    return out, KerasAdamState(count, mu, nu)

  return optax.GradientTransformation(init, update)


def keras_adam(lr: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
               eps: float = KERAS_EPSILON) -> optax.GradientTransformation:
  return optax.chain(scale_by_keras_adam(b1, b2, eps), optax.scale_by_learning_rate(lr))


def schedule(kind: str, lr: float, total_steps: int) -> optax.ScalarOrSchedule:
  """constant (the paper's), or cosine decay to 0 at `total_steps` (better ends for short runs
  from random init)."""
  if kind == "constant":
    return lr
  if kind == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  raise ValueError(f"unknown learning-rate schedule {kind!r}: choose constant or cosine")


def rate_at(lr: optax.ScalarOrSchedule, step: int) -> float:
  """The learning rate the optimiser applies at `step` (curves log it)."""
  return float(lr(step)) if callable(lr) else float(lr)


def make(kind: str, lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """The one place a run's optimiser is chosen (config field `adam`)."""
  if kind == "keras":
    return keras_adam(lr)
  if kind == "optax":
    return optax.adam(lr)
  raise ValueError(f"unknown Adam {kind!r}: choose optax or keras")
