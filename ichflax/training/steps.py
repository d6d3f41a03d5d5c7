"""Pure, jit-compiled train and eval steps over a split NNX model.

The Classifier is split once into (trainable, BatchNorm statistics, everything else). Gradients
are taken w.r.t. the trainable part only, so in the paper's recipe the frozen convolutions cost no
weight gradients and Adam keeps moments for BatchNorm + head alone. Train and eval use two
graph definitions of the same model (train mode / eval mode), so the mode is static.

The train step donates its state and its running sums (XLA writes the new ones into the old
buffers: one copy of the trainable state and Adam moments, not two) and returns no per-step
values: loss, hits and the first non-finite step are summed on the device, so the loop reads
them only where a log line or a checkpoint needs them and never waits on the device in between.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ichflax import models, tasks
from ichflax.config import AugmentConfig
from ichflax.evaluation import metrics
from ichflax.models import preprocess
from ichflax.training import augment


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """What the compiled steps need to know statically."""

  task: str
  image_size: int
  variant: str
  augment: AugmentConfig
  dtype: Any = jnp.float32
  resize: str = "antialiased"  # stored -> model size (ModelSpec.resize)
  normalization: str = "backbone"  # ModelSpec.normalization
  loss_clip: float = 0.0  # Keras-style probability clip in the loss (tasks.Task.loss)
  context: int = 1  # slices per example (ModelSpec.context)


@dataclasses.dataclass
class TrainState:
  """The arrays one train step reads and returns (a pytree)."""

  trainable: nnx.State
  batch_stats: nnx.State
  opt_state: Any


jax.tree_util.register_dataclass(TrainState, data_fields=["trainable", "batch_stats", "opt_state"],
                                 meta_fields=[])


@dataclasses.dataclass
class StepSums:
  """Running sums over train steps, kept on the device (a pytree); `read` brings them over."""

  loss: jax.Array  # sum over examples of the loss (float32)
  hits: jax.Array  # correct decisions (metrics.hits)
  n: jax.Array  # examples
  first_nonfinite: jax.Array  # int32: the first step whose loss was not finite, -1 for none

  @classmethod
  def zeros(cls) -> StepSums:
    return cls(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
               jnp.full((), -1, jnp.int32))

  def read(self) -> dict[str, float | int]:
    """The sums as Python numbers: the one place the loop waits on the device."""
    host = jax.device_get(self)
    return {"loss": float(host.loss), "hits": float(host.hits), "n": int(host.n),
            "first_nonfinite": int(host.first_nonfinite)}


jax.tree_util.register_dataclass(StepSums, data_fields=["loss", "hits", "n", "first_nonfinite"],
                                 meta_fields=[])


@dataclasses.dataclass(frozen=True)
class Steps:
  """The compiled train and eval steps of one model."""

  train: Callable  # (state, frozen, batch, key, step, sums) -> (state, sums); donates both
  eval: Callable  # (state, frozen, batch) -> (per-example loss, probs)


def split(model: nnx.Module, trainable: nnx.filterlib.Filter):
  """(graphdef, trainable, batch_stats, frozen): frozen holds fixed params and RNG streams."""
  return nnx.split(model, trainable, nnx.BatchStat, ...)


def make_steps(model: nnx.Module, trainable: nnx.filterlib.Filter,
               tx: optax.GradientTransformation,
               spec: StepSpec) -> tuple[Steps, TrainState, nnx.State]:
  """Compiles the steps for `model`; returns them with the initial state and the frozen part."""
  task = tasks.get_task(spec.task)
  model.train()
  train_def, params, stats, frozen = split(model, trainable)
  model.eval()
  eval_def = nnx.graphdef(model)
  state = TrainState(params, stats, tx.init(params))

  def loss_fn(params, stats, frozen, batch, key):
    # Each step's dropout masks and augmentation follow from (run key, step) alone.
    drop_key, aug_key = jax.random.split(key)
    rng, fixed = nnx.split_state(frozen, nnx.RngState, ...)
    module = nnx.merge(train_def, params, stats, models.reseed(rng, drop_key), fixed, copy=True)
    x = augment.model_input(batch["image"], aug_key, spec.augment, spec.image_size,
                            spec.variant, spec.dtype, resize=spec.resize,
                            normalization=spec.normalization, context=spec.context)
    logits = module(x)
    loss = masked_mean(task.loss(logits, batch["targets"], spec.loss_clip), batch["mask"])
    return loss, (nnx.state(module, nnx.BatchStat), task.probabilities(logits))

  @functools.partial(jax.jit, donate_argnums=(0, 5))
  def train_step(state: TrainState, frozen, batch, key, step, sums: StepSums):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (stats, probs)), grads = grad_fn(state.trainable, state.batch_stats, frozen, batch,
                                            jax.random.fold_in(key, step))
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    params = optax.apply_updates(state.trainable, updates)
    return TrainState(params, stats, opt_state), accumulate(sums, loss, probs, batch, step,
                                                            task.activation)

  @jax.jit
  def eval_step(state: TrainState, frozen, batch):
    module = nnx.merge(eval_def, state.trainable, state.batch_stats, frozen, copy=True)
    x = preprocess.model_input(batch["image"], spec.image_size, spec.variant, spec.dtype,
                               resize=spec.resize, normalization=spec.normalization,
                               context=spec.context)
    logits = module(x)
    return task.loss(logits, batch["targets"], spec.loss_clip), task.probabilities(logits)

  return Steps(train_step, eval_step), state, frozen


def accumulate(sums: StepSums, loss, probs, batch, step, activation: str) -> StepSums:
  """`sums` plus one step: its masked examples' loss and hits, and whether its loss was finite."""
  mask = batch["mask"].astype(jnp.float32)
  n = jnp.sum(mask)
  hits = jnp.sum(metrics.hits(activation, probs, batch["targets"]) * mask)
  bad = (sums.first_nonfinite < 0) & ~jnp.isfinite(loss)
  first = jnp.where(bad, jnp.asarray(step, jnp.int32), sums.first_nonfinite)
  return StepSums(sums.loss + loss * n, sums.hits + hits, sums.n + n, first)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over rows where mask is True; padding rows count nothing."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def compute_dtype(name: str) -> Any:
  """'auto' -> bf16 compute on GPU/TPU (fp32 params stay), fp32 on CPU where bf16 is slow."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  return jnp.dtype(name).type
