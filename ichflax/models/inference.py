"""The compiled eval-mode programs of one Classifier: logits, pooled features, Grad-CAM.

One place for what serving (`ichflax.serving.predictor`) and calibration
(`ichflax.trust.calibrate`) both run, so the features a checkpoint is calibrated on are the
features it serves. Grad-CAM (Selvaraju et al. 2017) weights each channel of the backbone's
final feature map by the mean gradient of one class logit; pictures of it and the attention box
are drawn in `ichflax.serving.gradcam`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ichflax.models import preprocess
from ichflax.spec import ModelSpec
from ichflax.xla import options


def logits_and_cam(model, x: jax.Array, class_index: jax.Array, *,
                   with_features: bool = False) -> tuple[jax.Array, ...]:
  """Logits (N, k) and Grad-CAM maps (N, h, w) in [0, 1] on the feature-map grid (traceable).

  `with_features`: also the backbone's feature map (N, h, w, C), which serving pools for the
  training-domain check without a second forward pass.

  `model` is a Classifier in eval mode: `model.head(model.backbone(x))` are its logits, so the
  gradient of the chosen logit is taken with respect to the backbone's feature map. Examples do
  not interact in eval mode, so the gradient of the summed logits is each example's own.
  `class_index` (N,) int: the class per example, or -1 for that example's top class.
  """
  features = model.backbone(x).astype(jnp.float32)
  top = jnp.argmax(jax.lax.stop_gradient(model.head(features)), axis=1)
  class_index = jnp.where(class_index < 0, top, class_index)

  def chosen_logit(f):
    logits = model.head(f)
    return jnp.take_along_axis(logits, class_index[:, None], axis=1).sum(), logits

  grads, logits = jax.grad(chosen_logit, has_aux=True)(features)
  weights = grads.mean(axis=(1, 2))
  cam = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", features, weights))
  peak = cam.max(axis=(1, 2), keepdims=True)
  cam = jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
  return (logits, cam, features) if with_features else (logits, cam)


@dataclasses.dataclass
class Compiled:
  """One model's compiled programs and the state they run on (captured once)."""

  labels: tuple[str, ...]
  state: nnx.State
  forward: Callable  # (state, images) -> (logits, pooled features)
  forward_cam: Callable  # (state, images, class index) -> (logits, pooled features, cam)

  def plain(self, images):
    return self.forward(self.state, images)

  def with_cam(self, images, class_index):
    return self.forward_cam(self.state, images, class_index)


def compile_model(model: nnx.Module, spec: ModelSpec) -> Compiled:
  """Jitted logits + pooled features, with or without Grad-CAM, for one model, compiled with the
  CPU options of `ichflax.xla.options`. Temperatures and the domain score are applied on the
  host, in float64."""
  graphdef, state = nnx.split(model)
  size, variant = spec.image_size, spec.variant

  def inputs(images):
    return preprocess.model_input(images, size, variant, resize=spec.resize,
                                  normalization=spec.normalization, context=spec.context)

  @options.jit
  def plain(state, images):
    m = nnx.merge(graphdef, state)
    features = m.backbone(inputs(images))
    return m.head(features), pooled(features)

  @options.jit
  def with_cam(state, images, class_index):
    m = nnx.merge(graphdef, state)
    logits, cam, features = logits_and_cam(m, inputs(images), class_index,
                                                   with_features=True)
    return logits, pooled(features), cam

  return Compiled(spec.outputs, state, plain, with_cam)


def pooled(features: jax.Array) -> jax.Array:
  """(N, C) global average of the backbone's feature map: the head's input, and what the
  training-domain check models (`ichflax.trust.domain`)."""
  return features.astype(jnp.float32).mean(axis=(1, 2))
