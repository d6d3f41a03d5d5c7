"""The paper's binary model in Keras 3 and ichflax's `paper-code` model take one identical step.

Keras side: `ResNet50(weights=None, include_top=False)`, the paper's freezing loop (only
BatchNorm trains), `Sequential([resnet, GAP, Dense(256, relu), Dropout, BatchNorm, Dense(1,
sigmoid)])`, `compile(optimizer='adam', loss='binary_crossentropy')`, `train_on_batch` on x / 255.
ichflax side: the same weights (backbone through the Keras h5 converter, head copied), the
`paper-code` config's optimiser, head and loss, its rescale input path, one jitted train step.
Dropout is 0 in both: their masks come from different generators (dropout itself is covered by
the classifier tests). Keras 3 moves the BatchNorm variance with the biased estimate, unlike the
paper's Keras 2, so this comparison runs ichflax with `bn_variance="biased"`; the Keras 2 rule is
checked against a hand computation below.

Tolerances, float32 on CPU: the two frameworks sum ResNet50's reductions in different orders
(flax's BatchNorm also uses E[x^2] - E[x]^2), so activations agree to ~1e-6 relative
(test_weights), the loss to ~1e-5 (1e-4 allowed) and moving statistics to ~1e-5 (1e-4). The
backward pass through 53 batch-statistic BatchNorms amplifies that: gradients (Adam's first
moment / 0.1 in both) differ by up to ~4% of their tensor's largest, so they are compared
per tensor by relative L2 norm (5% allowed); in float64 the two losses agree to 5e-5, with
our head still in float32. Adam's first step is lr x g / (|g| + 3.2e-6), ~lr x sign(g):
where g is within rounding of 0 both signs are noise, so updates are compared where |g| >
10% of the tensor's largest, to lr / 1000.
Frozen weights must be bit-identical. Adam's epsilon semantics are pinned exactly by
`test_keras_adam_matches_keras` (optax's differs there by up to 100% of an update).
A batch of i.i.d. noise images is useless here: deep features come out near-identical, their
batch variance is rounding, and Keras float32 and float64 differed by 15% in the loss.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

SIZE, BATCH, LR = 64, 4, 1e-3


@pytest.fixture(scope="module")
def keras_step(tmp_path_factory):
  """Keras's model before and after one step, the h5 of its backbone and the batch."""
  import h5py
  import keras
  from keras.src.legacy.saving import legacy_h5_format

  keras.utils.set_random_seed(0)
  resnet = keras.applications.ResNet50(weights=None, include_top=False,
                                       input_shape=(SIZE, SIZE, 3))
  rng = np.random.default_rng(0)
  for layer in resnet.layers:  # non-trivial statistics, so a mapping slip shows
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                         rng.normal(0, 0.1, c), rng.uniform(0.5, 2.0, c)])
  for layer in resnet.layers:  # the paper's loop
    layer.trainable = isinstance(layer, keras.layers.BatchNormalization)
  model = keras.Sequential([
      resnet, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(256, activation="relu"),
      keras.layers.Dropout(0.0), keras.layers.BatchNormalization(),
      keras.layers.Dense(1, activation="sigmoid")])
  model.compile(optimizer="adam", loss="binary_crossentropy")
  h5 = tmp_path_factory.mktemp("keras") / "resnet.h5"
  with h5py.File(h5, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, resnet)
  head = [[np.asarray(w) for w in layer.get_weights()] for layer in model.layers[2:]]
  before = {w.path: np.asarray(w) for w in model.weights}
  # Examples of very different brightness and texture: i.i.d. noise images give near-identical
  # deep features, whose batch variance is then all rounding (float32 and float64 Keras
  # differed by 15% in loss on such a batch), so nothing could be compared.
  yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
  images = np.stack([(40 + 50 * k) * (1 + np.sin((k + 1) * 6 * xx + k * yy))[..., None]
                     * np.array([1.0, 0.8, 0.6]) for k in range(BATCH)])
  images = np.clip(images + rng.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
  targets = np.array([[1], [0], [1], [1]], np.float32)
  loss = float(model.train_on_batch(images.astype(np.float32) / 255.0, targets))
  after = {w.path: np.asarray(w) for w in model.weights}
  opt = model.optimizer  # after one step its first moment is (1 - beta1) x the gradient
  grads = {w.path: np.asarray(opt._momentums[opt._get_variable_index(w)]) / 0.1
           for w in model.trainable_weights}
  return dict(model=model, resnet=resnet, h5=h5, head=head, before=before, after=after,
              grads=grads, loss=loss, images=images, targets=targets)


def _ichflax_step(keras_step, tmp_path):
  """ichflax's paper-code model on the same weights, one train step: (gradients, model, loss)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from ichflax import config, models, weights
  from ichflax.training import loop as train
  from ichflax.training import optim, steps

  out = weights.convert(keras_step["h5"], tmp_path / "backbone")
  cfg = config.preset("paper-code", weights=str(out), image_size=SIZE, dropout=0.0,
                      bn_variance="biased", **{"augment.enabled": False})
  model = train.build_model(cfg, jnp.float32)
  dense1, _, bn, dense2 = keras_step["head"]
  head = model.head
  head.hidden.kernel[...], head.hidden.bias[...] = dense1
  head.bn.scale[...], head.bn.bias[...], head.bn.mean[...], head.bn.var[...] = bn
  head.out.kernel[...], head.out.bias[...] = dense2
  compiled, state, frozen = steps.make_steps(
      model, models.trainable_filter(cfg.trainable), optim.make(cfg.adam, cfg.lr),
      train.step_spec(cfg, model.variant, jnp.float32))
  batch = {"image": keras_step["images"], "targets": keras_step["targets"],
           "mask": np.ones(BATCH, bool)}
  # The step donates its state: hand it copies, so the model's own arrays stay readable.
  state = jax.tree.map(jnp.copy, state)
  state, sums = compiled.train(state, frozen, batch, jax.random.key(0), 0,
                               steps.StepSums.zeros())
  got = sums.read()
  loss = got["loss"] / got["n"]
  moments = nnx.clone(model)  # our gradients, read through the same paths as the weights
  nnx.update(moments, jax.tree.map(lambda m: m / 0.1, state.opt_state[0].mu))
  nnx.update(model, state.trainable, state.batch_stats)
  return moments, model, float(loss)


def _pairs(keras_step, model):
  """(keras weight path, our array) for every backbone and head variable."""
  from ichflax.weights.convert import TENSOR_NAMES, layer_table
  names = TENSOR_NAMES["keras"]
  out = []
  resnet = keras_step["resnet"]
  for layer in layer_table():
    ours = model.backbone
    for key in layer.path:
      ours = ours[key] if isinstance(key, int) else getattr(ours, key)
    for w in resnet.get_layer(layer.keras).weights:
      out.append((w.path, np.asarray(getattr(ours, names[layer.kind][w.name])[...])))
  dense1, bn, dense2 = (keras_step["model"].layers[i] for i in (2, 4, 5))
  head = model.head
  for layer, module, attrs in ((dense1, head.hidden, ("kernel", "bias")),
                               (bn, head.bn, ("scale", "bias", "mean", "var")),
                               (dense2, head.out, ("kernel", "bias"))):
    for w, attr in zip(layer.weights, attrs):
      out.append((w.path, np.asarray(getattr(module, attr)[...])))
  return out


@pytest.mark.slow  # two ResNet50 train steps compiled (Keras's and ours): ~80 s on 2 cores
def test_one_step_matches_keras(keras_step, tmp_path):
  moments, model, loss = _ichflax_step(keras_step, tmp_path)
  np.testing.assert_allclose(loss, keras_step["loss"], rtol=1e-4)
  pairs = _pairs(keras_step, model)
  grads = dict(_pairs(keras_step, moments))
  assert len(pairs) == len(keras_step["after"])  # every Keras variable is compared
  kinds = {"frozen": 0, "trained": 0, "statistic": 0}
  for path, ours in pairs:
    k_before, k_after = keras_step["before"][path], keras_step["after"][path]
    if "moving" in path:
      kinds["statistic"] += 1
      np.testing.assert_allclose(ours, k_after, rtol=1e-4, atol=1e-6, err_msg=path)
      assert not np.allclose(k_after, k_before), path  # the step did move it
    elif path in keras_step["grads"]:
      kinds["trained"] += 1
      g, scale = keras_step["grads"][path], np.abs(keras_step["grads"][path]).max()
      assert np.linalg.norm(grads[path] - g) <= 0.05 * np.linalg.norm(g), path
      # Adam's first step is ~lr x sign(g): where g is within rounding of 0 its sign, and so
      # the update, is noise in both frameworks; well above it the updates must agree.
      clear = np.abs(g) > 0.1 * scale
      np.testing.assert_allclose((ours - k_before)[clear], (k_after - k_before)[clear],
                                 atol=1e-3 * LR, err_msg=path)
    else:
      kinds["frozen"] += 1
      np.testing.assert_array_equal(k_after, k_before, err_msg=path)
      np.testing.assert_array_equal(ours, k_before, err_msg=path)  # untouched, bit for bit
  assert kinds["frozen"] > 100 and kinds["trained"] > 100 and kinds["statistic"] > 100


def test_keras_adam_matches_keras():
  """optim.keras_adam against keras.optimizers.Adam on gradients from 1e-9 to 1, five steps."""
  import jax.numpy as jnp
  import keras

  from ichflax.training import optim

  g = np.array([1e-9, -1e-7, 3e-6, -1e-4, 1e-2, -1.0], np.float32)
  var = keras.Variable(np.zeros_like(g))
  ref = keras.optimizers.Adam(learning_rate=LR)
  tx = optim.keras_adam(LR)
  params = jnp.zeros_like(g)
  state = tx.init(params)
  for step in range(5):
    grad = g * (1 + step)
    ref.apply_gradients([(keras.ops.convert_to_tensor(grad), var)])
    updates, state = tx.update(jnp.asarray(grad), state, params)
    params = params + updates
    np.testing.assert_allclose(np.asarray(params), np.asarray(var), rtol=1e-5, atol=1e-10)


def test_keras_2_moving_variance_is_unbiased():
  """Keras 2: normalise with the biased batch variance, move towards n / (n - 1) times it."""
  import jax.numpy as jnp
  from flax import nnx

  from ichflax.models import BatchNorm

  x = np.random.default_rng(1).normal(2.0, 3.0, (2, 3, 2, 4)).astype(np.float32)
  n = 2 * 3 * 2
  for unbiased in (False, True):
    bn = BatchNorm(4, momentum=0.9, epsilon=1e-3, use_running_average=False,
                   unbiased_variance=unbiased, rngs=nnx.Rngs(0))
    bn.var[...] = jnp.full(4, 0.5)
    y = np.asarray(bn(jnp.asarray(x)))
    biased = x.reshape(-1, 4).var(axis=0)
    batch_term = biased * n / (n - 1) if unbiased else biased
    np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 * 0.5 + 0.1 * batch_term,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.1 * x.reshape(-1, 4).mean(axis=0),
                               rtol=1e-5, atol=1e-6)
    # The forward pass divides by the biased variance either way.
    want = (x - x.reshape(-1, 4).mean(axis=0)) / np.sqrt(biased + 1e-3)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
  bn.eval()
  frozen = np.asarray(bn.var[...])
  bn(jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(bn.var[...]), frozen)  # eval mode moves nothing


def test_cosine_schedule_decays_to_zero_at_the_last_step_and_constant_stays():
  import jax.numpy as jnp

  from ichflax.training import optim
  lr = optim.schedule("cosine", 1e-3, 100)
  assert float(lr(0)) == pytest.approx(1e-3) and float(lr(50)) == pytest.approx(5e-4)
  assert float(lr(100)) == pytest.approx(0.0, abs=1e-12)
  assert optim.schedule("constant", 1e-3, 100) == 1e-3
  assert optim.rate_at(lr, 50) == pytest.approx(5e-4) and optim.rate_at(1e-3, 50) == 1e-3
  with pytest.raises(ValueError, match="constant or cosine"):
    optim.schedule("linear", 1e-3, 100)
  params = {"w": jnp.ones(3)}
  for kind in ("optax", "keras"):  # both Adams follow the schedule: the step shrinks with it
    tx = optim.make(kind, lr)
    state = tx.init(params)
    sizes = []
    for _ in range(100):
      updates, state = tx.update({"w": jnp.ones(3)}, state, params)
      sizes.append(float(jnp.abs(updates["w"]).max()))
    assert sizes[0] == pytest.approx(1e-3, rel=1e-2) and sizes[-1] < 1e-6
