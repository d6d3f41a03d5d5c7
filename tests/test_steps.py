"""Train/eval steps on a real ResNet50 at 32 px: only the trainable subset moves, loss falls."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ichflax import models, steps
from ichflax.config import AugmentConfig


def _learnable_batch(n=16, size=32, seed=0):
  """A bright square means hemorrhage: learnable in a few steps even from random init."""
  rng = np.random.default_rng(seed)
  y = np.tile([0, 1], n // 2)
  img = rng.integers(0, 40, size=(n, size, size, 1)).astype(np.uint8)
  img[y == 1, 8:24, 8:24] = 220
  return {"image": img, "targets": y[:, None].astype(np.float32), "mask": np.ones(n, bool)}


def _conv_weights(model) -> dict[str, np.ndarray]:
  """Every convolution kernel and bias of the model, by path."""
  return {"/".join(map(str, path)) + "/" + name: np.asarray(getattr(module, name)[...])
          for path, module in nnx.iter_graph(model) if isinstance(module, nnx.Conv)
          for name in ("kernel", "bias") if getattr(module, name, None) is not None}


@pytest.fixture(scope="module")
def seed_run():
  """Ten paper-recipe steps (augmentation on) from a random init; before/after states.

  The model itself ends as the steps left it, written back as the train loop saves it: the
  step's returned trainable parameters and BatchNorm statistics.
  """
  model = models.build_classifier("binary", "keras", 0.4, rngs=nnx.Rngs(0))
  convs_before = _conv_weights(model)
  trainable = models.trainable_filter("paper")
  spec = steps.StepSpec("binary", 32, "keras", AugmentConfig(rotation=5.0))
  compiled, state, frozen = steps.make_steps(model, trainable, optax.adam(1e-3), spec)
  before = jax.tree.map(np.asarray, (state.trainable, state.batch_stats))
  batch, key, losses = _learnable_batch(), jax.random.key(0), []
  for step in range(10):
    state, loss, probs = compiled.train(state, frozen, batch, key, step)
    losses.append(float(loss))
  nnx.update(model, state.trainable, state.batch_stats)
  return compiled, state, frozen, before, (convs_before, model), losses, batch, probs


def test_frozen_params_bit_identical_while_bn_and_head_change(seed_run):
  _, state, _, (params0, stats0), (convs0, trained), *_ = seed_run
  convs = _conv_weights(trained)  # read from the weights the steps produced
  assert len(convs) > 50 and convs.keys() == convs0.keys()  # every convolution of ResNet50
  for path, kernel in convs.items():
    np.testing.assert_array_equal(kernel, convs0[path], err_msg=path)
  paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(state.trainable)}
  assert any(p.startswith("head/") for p in paths) and any(p.startswith("backbone/") for p in paths)
  for name, before, after in (("params", params0, state.trainable),
                              ("stats", stats0, state.batch_stats)):
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                         jax.tree.leaves(after))]
    assert all(changed), f"some {name} did not move"


def test_loss_falls_on_a_learnable_set(seed_run):
  losses, probs, batch = seed_run[5], seed_run[7], seed_run[6]
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
  assert np.mean((np.asarray(probs) >= 0.5) == (batch["targets"] >= 0.5)) >= 0.9


def test_eval_uses_running_stats_and_is_deterministic(seed_run):
  compiled, state, frozen, *_, batch, _ = seed_run
  loss_a, probs_a = compiled.eval(state, frozen, batch)
  _, probs_b = compiled.eval(state, frozen, batch)
  np.testing.assert_array_equal(probs_a, probs_b)
  # Running statistics, not the batch's: one example alone scores as it does in the batch.
  _, single = compiled.eval(state, frozen, jax.tree.map(lambda x: x[:1], batch))
  np.testing.assert_allclose(single, probs_a[:1], rtol=1e-4, atol=1e-5)
  assert loss_a.shape == (16,)


def test_dropout_and_augmentation_keys_follow_the_step(seed_run):
  compiled, state, frozen, *_, batch, _ = seed_run
  key = jax.random.key(1)
  _, loss_a, _ = compiled.train(state, frozen, batch, key, 100)
  _, loss_b, _ = compiled.train(state, frozen, batch, key, 100)
  _, loss_c, _ = compiled.train(state, frozen, batch, key, 101)
  assert float(loss_a) == float(loss_b) and float(loss_a) != float(loss_c)


def test_masked_mean_ignores_padding():
  x = jnp.array([1.0, 3.0, 100.0])
  assert float(steps.masked_mean(x, jnp.array([True, True, False]))) == 2.0
  assert float(steps.masked_mean(x, jnp.zeros(3, bool))) == 0.0


def test_compute_dtype():
  assert steps.compute_dtype("auto") == (jnp.float32 if jax.default_backend() == "cpu"
                                         else jnp.bfloat16)
  assert steps.compute_dtype("bfloat16") == jnp.bfloat16
