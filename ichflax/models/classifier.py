"""Backbone + the paper's head, and the filters that say which parameters train."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from ichflax import tasks
from ichflax.models import backbones
from ichflax.models.head import Head


class Classifier(nnx.Module):
  """`model(x)` -> logits; `model.head(model.backbone(x))` is the same, split for Grad-CAM."""

  def __init__(self, backbone: nnx.Module, num_outputs: int, dropout: float, *, rngs: nnx.Rngs,
               head_width: int = 256, head_init: str = "lecun"):
    self.backbone = backbone
    self.head = Head(backbone.features, num_outputs, dropout, rngs=rngs, width=head_width,
                     kernel_init=head_init)

  @property
  def variant(self) -> str:
    return self.backbone.variant

  @property
  def arch(self) -> str:
    return self.backbone.arch

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.backbone(x))


def build_classifier(task_name: str, variant: str, dropout: float | None = None, *,
                     rngs: nnx.Rngs, dtype=jnp.float32,
                     backbone: nnx.Module | None = None,
                     arch: str = backbones.DEFAULT,
                     zero_init_residual: bool = False,
                     head_init: str = "lecun", context: int = 1) -> Classifier:
  """A classifier for a task on the `arch` backbone; dropout None takes the task's paper preset.

  Pass `backbone` (e.g. from `ichflax.weights.load_backbone`) to start from ImageNet weights;
  otherwise the backbone is randomly initialised (`zero_init_residual`: see ResNet50).
  `head_init`: the head's Dense kernels, "lecun" (flax) or "glorot" (Keras, the paper's).
  `context`: slices per input; the stem is widened to read them (`backbones.widen_stem`).
  """
  task = tasks.get_task(task_name)
  if backbone is None:
    backbone = backbones.build(arch, variant, rngs=rngs, dtype=dtype,
                               zero_init_residual=zero_init_residual)
  elif (backbone.arch, backbone.variant) != (arch, variant):
    raise ValueError(f"backbone is the {backbone.variant!r} {backbone.arch} but {variant!r} "
                     f"{arch} was asked for: pass what the backbone was converted from")
  p = task.default_dropout if dropout is None else dropout
  return Classifier(backbones.widen_stem(backbone, context), task.num_outputs, p, rngs=rngs,
                    head_init=head_init)


def _is_backbone_norm(path: tuple, _) -> bool:
  return (len(path) > 0 and path[0] == "backbone"
          and any(isinstance(k, str) and k.startswith(backbones.NORM_PREFIXES) for k in path))


def trainable_filter(trainable: Literal["bn-head", "all"]) -> nnx.filterlib.Filter:
  """nnx filter of the parameters that train.

  "bn-head": the paper froze every backbone layer except BatchNorm, so every backbone
  normalisation layer's scale/bias (BatchNorm, or LayerNorm in ConvNeXt) plus the whole head;
  "all": every parameter.
  """
  if trainable == "all":
    return nnx.Param
  if trainable == "bn-head":
    return nnx.All(nnx.Param, nnx.Any(nnx.PathContains("head"), _is_backbone_norm))
  raise ValueError(f"unknown trainable {trainable!r}: choose 'bn-head' or 'all'")


def reseed(rng_state: nnx.State, key: jax.Array) -> nnx.State:
  """Every RNG stream restarted from `key`; pure, so safe under jit and grad (and on abstract
  states, which it makes concrete)."""
  def leaf(x):
    is_key = jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    return key if is_key else jnp.zeros(x.shape, x.dtype)
  return jax.tree.map(leaf, rng_state)
