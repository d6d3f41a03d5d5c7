"""The CPU convolution route: 1x1 convolutions, and those whose operands XLA would swap, are
patches @ kernel; same values and gradients, same train-step losses, and lax itself elsewhere."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax

from ichflax import models, tasks
from ichflax.config import AugmentConfig
from ichflax.models import conv, preprocess
from ichflax.training import steps

SWAPPED = re.compile(r"convolution\(.*dim_labels=(?!b01f_01io->b01f)")


def _conv(fn, stride, pad):
  def f(x, w):
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    return fn(x, w, stride, pad, dimension_numbers=dn)
  return f


def _loss(f):
  return lambda x, w: jnp.sum(jnp.sin(f(x, w)))


# (input, kernel, stride, padding): layer4's 3x3 on a 2x2 map (64 px keras), the torchvision
# variant's strided 3x3 from 4x4 to 2x2, a 1x1 map (32 px), an asymmetric one; 1x1 kernels,
# plain and strided (a projection shortcut).
CASES = [((4, 2, 2, 16), (3, 3, 16, 8), (1, 1), ((1, 1), (1, 1))),
         ((2, 6, 6, 8), (1, 1, 8, 16), (1, 1), ((0, 0), (0, 0))),
         ((2, 7, 6, 8), (1, 1, 8, 16), (2, 2), ((0, 0), (0, 0))),
         ((4, 4, 4, 16), (3, 3, 16, 8), (2, 2), ((1, 1), (1, 1))),
         ((2, 1, 1, 8), (3, 3, 8, 8), (1, 1), ((1, 1), (1, 1))),
         ((2, 3, 2, 8), (3, 3, 8, 4), (2, 1), ((1, 0), (1, 1)))]


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CASES)
def test_small_maps_compute_what_lax_computes_without_a_swapped_convolution(x_shape, w_shape,
                                                                             stride, pad):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
  ref, new = _conv(lax.conv_general_dilated, stride, pad), _conv(conv.conv_general_dilated,
                                                                   stride, pad)
  # Sums of up to 144 products of N(0, 1) values (~10): float32 summation order, ~1e-5.
  np.testing.assert_allclose(new(x, w), ref(x, w), rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.grad(_loss(new), (0, 1))(x, w), jax.grad(_loss(ref), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  grad = jax.jit(jax.grad(_loss(new), (0, 1))).lower(x, w).compile().as_text()
  assert not SWAPPED.search(grad)
  assert " convolution(" not in grad  # dots only, forward and backward


def test_the_case_it_routes_is_the_one_xla_swaps():
  """Guards the premise: if a jaxlib stops swapping, the route can go."""
  x, w = jnp.ones((4, 2, 2, 16)), jnp.ones((3, 3, 16, 8))
  text = jax.jit(_conv(lax.conv_general_dilated, (1, 1), ((1, 1), (1, 1)))).lower(
      x, w).compile().as_text()
  if not SWAPPED.search(text):
    pytest.skip("this jaxlib does not swap the operands of a 3x3 convolution on a 2x2 map")


def test_large_maps_and_other_backends_are_lax_itself(monkeypatch):
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  pad = ((1, 1), (1, 1))
  text = jax.jit(_conv(conv.conv_general_dilated, (1, 1), pad)).lower(x, w).as_text()
  assert "stablehlo.convolution" in text and "dot_general" not in text
  small = jnp.ones((2, 2, 2, 4))
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  text = jax.jit(_conv(conv.conv_general_dilated, (1, 1), pad)).lower(small, w).as_text()
  assert "stablehlo.convolution" in text and "dot_general" not in text


def _first_step(trainable: str, route: bool, monkeypatch):
  """A train step's loss at 32 px (layer3 2x2, layer4 1x1: routed) and the gradients it takes
  of the `trainable` weights, from a fixed seed, with or without the route."""
  if not route:
    monkeypatch.setattr(conv, "_as_patches", lambda *a: False)
  model = models.build_classifier("binary", "keras", 0.4, rngs=nnx.Rngs(0))
  spec = steps.StepSpec("binary", 32, "keras", AugmentConfig(rotation=5.0))
  compiled, state, frozen = steps.make_steps(model, models.trainable_filter(trainable),
                                             optax.adam(1e-3), spec)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 40, 40, 1), dtype=np.uint8),
           "targets": np.tile([0.0, 1.0], 4)[:, None].astype(np.float32),
           "mask": np.ones(8, bool)}
  model.train()
  graphdef, params, rest = nnx.split(model, models.trainable_filter(trainable), ...)
  x = preprocess.model_input(batch["image"], 32, "keras")

  def loss(p):
    logits = nnx.merge(graphdef, p, rest, copy=True)(x)
    return jnp.mean(tasks.get_task("binary").loss(logits, batch["targets"]))
  grads = jax.jit(jax.grad(loss))(params)
  # After the gradients: the step donates the state it shares with the model.
  _, sums = compiled.train(state, frozen, batch, jax.random.key(0), 0, steps.StepSums.zeros())
  monkeypatch.undo()
  return sums.read(), dict(nnx.to_flat_state(grads))


@pytest.mark.parametrize("trainable", ["bn-head", "all"])
def test_train_step_loss_and_gradients_match_lax_convolutions(trainable, monkeypatch):
  """Not several steps: from a random init, XLA's own compile choices (YNNPACK fusions on or
  off) move these gradients by up to 6.5 % (measured), and Adam turns such differences in
  near-zero gradients into whole updates, so later losses part for either change."""
  (sums, grads), (ref_sums, ref_grads) = (_first_step(trainable, r, monkeypatch)
                                          for r in (True, False))
  # Measured: losses 1e-5 apart (relative), gradients at most 8e-4 (summation order).
  assert sums["loss"] == pytest.approx(ref_sums["loss"], rel=1e-4)
  assert sums["hits"] == ref_sums["hits"]
  for path, g in grads.items():
    if path[-1] == "bias" and path[0] == "backbone":
      continue  # a bias before BatchNorm has gradient 0: both are rounding noise
    want = np.asarray(ref_grads[path][...])
    err = np.linalg.norm(np.asarray(g[...]) - want) / np.linalg.norm(want)
    assert err < 1e-2, (path, err)
