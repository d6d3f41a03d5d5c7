"""Train/eval steps on a real ResNet50 at 32 px: only the trainable subset moves, loss falls."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ichflax import models
from ichflax.config import AugmentConfig
from ichflax.training import steps


def _learnable_batch(n=16, size=32, seed=0):
  """A bright square means hemorrhage: learnable in a few steps even from random init."""
  rng = np.random.default_rng(seed)
  y = np.tile([0, 1], n // 2)
  img = rng.integers(0, 40, size=(n, size, size, 1)).astype(np.uint8)
  img[y == 1, 8:24, 8:24] = 220
  return {"image": img, "targets": y[:, None].astype(np.float32), "mask": np.ones(n, bool)}


@pytest.fixture(scope="module")
def seed_run():
  """Ten seed-recipe steps (augmentation on) from a random init; before/after states."""
  model = models.build_classifier("binary", "keras", 0.4, rngs=nnx.Rngs(0))
  trainable = models.trainable_filter("bn-head")
  spec = steps.StepSpec("binary", 32, "keras", AugmentConfig(rotation=5.0))
  compiled, state, frozen = steps.make_steps(model, trainable, optax.adam(1e-3), spec)
  before = jax.tree.map(np.array, (state.trainable, state.batch_stats))  # copies: state is donated
  frozen_before = [np.array(x) for x in jax.tree.leaves(nnx.state(frozen, nnx.Param))]
  batch, key, losses, accuracies = _learnable_batch(), jax.random.key(0), [], []
  for step in range(10):
    state, sums = compiled.train(state, frozen, batch, key, step, steps.StepSums.zeros())
    got = sums.read()
    losses.append(got["loss"] / got["n"])
    accuracies.append(got["hits"] / got["n"])
  return compiled, state, frozen, before, frozen_before, losses, batch, accuracies


def test_frozen_params_bit_identical_while_bn_and_head_change(seed_run):
  _, state, frozen, (params0, stats0), frozen0, *_ = seed_run
  frozen_now = jax.tree.leaves(nnx.state(frozen, nnx.Param))
  assert len(frozen_now) > 100  # every convolution kernel and bias is frozen
  for a, b in zip(frozen0, frozen_now):
    np.testing.assert_array_equal(a, b)
  paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(state.trainable)}
  assert any(p.startswith("head/") for p in paths) and any(p.startswith("backbone/") for p in paths)
  assert all("conv" not in p.split("/")[-2] for p in paths if p.startswith("backbone/"))
  for name, before, after in (("params", params0, state.trainable),
                              ("stats", stats0, state.batch_stats)):
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                         jax.tree.leaves(after))]
    assert all(changed), f"some {name} did not move"


def test_loss_falls_on_a_learnable_set(seed_run):
  losses, accuracies = seed_run[5], seed_run[7]
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
  assert accuracies[-1] >= 0.9, accuracies


def test_step_donates_state_and_sums_on_the_device(seed_run):
  """The loop reads sums at log intervals only: they must add up over steps, and a non-finite
  loss must leave the exact step it happened at."""
  compiled, state, frozen, *_, batch, _ = seed_run
  state = jax.tree.map(jnp.copy, state)
  key, sums = jax.random.key(2), steps.StepSums.zeros()
  poisoned = {**batch, "targets": np.full_like(batch["targets"], np.nan)}
  old_leaf = jax.tree.leaves(state)[0]
  per_step = []
  for step, b in enumerate([batch, batch, poisoned, batch]):
    probe = jax.tree.map(jnp.copy, state)
    _, one = compiled.train(probe, frozen, b, key, 10 + step, steps.StepSums.zeros())
    per_step.append(one.read())
    state, sums = compiled.train(state, frozen, b, key, 10 + step, sums)
  assert old_leaf.is_deleted()  # donated: the step wrote the new state into its buffers
  got = sums.read()
  assert got["first_nonfinite"] == 12 and got["n"] == 4 * len(batch["mask"])
  assert [p["first_nonfinite"] for p in per_step] == [-1, -1, 12, 13]
  assert got["hits"] == pytest.approx(sum(p["hits"] for p in per_step))
  assert not np.isfinite(got["loss"]) and np.isfinite(per_step[0]["loss"] + per_step[1]["loss"])


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

  def loss(step):  # from a copy each time: the step donates its state
    _, sums = compiled.train(jax.tree.map(jnp.copy, state), frozen, batch, key, step,
                             steps.StepSums.zeros())
    return sums.read()["loss"]

  assert loss(100) == loss(100) and loss(100) != loss(101)


def test_masked_mean_ignores_padding():
  x = jnp.array([1.0, 3.0, 100.0])
  assert float(steps.masked_mean(x, jnp.array([True, True, False]))) == 2.0
  assert float(steps.masked_mean(x, jnp.zeros(3, bool))) == 0.0


def test_compute_dtype():
  assert steps.compute_dtype("auto") == (jnp.float32 if jax.default_backend() == "cpu"
                                         else jnp.bfloat16)
  assert steps.compute_dtype("bfloat16") == jnp.bfloat16
