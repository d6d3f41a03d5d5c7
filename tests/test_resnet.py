"""ResNet50 structure per variant, and the input preprocessing each variant expects.

Numerical equality with the real Keras / torchvision networks is proven in test_weights.py;
here: shapes, what differs between the variants, dtype policy, train/eval behaviour.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ichflax.models import ResNet50, preprocess

os.environ.setdefault("KERAS_BACKEND", "jax")  # before the preprocessing test imports keras
_forward = nnx.jit(lambda model, x: model(x))


@pytest.fixture(scope="module")
def models():
  return {v: ResNet50(v, rngs=nnx.Rngs(0)) for v in ("keras", "torchvision")}


@pytest.mark.parametrize("variant", ["keras", "torchvision"])
def test_feature_map_shape(models, variant):
  model = nnx.clone(models[variant])
  model.eval()
  assert model.variant == variant
  y = _forward(model, jnp.ones((2, 64, 64, 3)))
  assert y.shape == (2, 2, 2, 2048) and y.dtype == jnp.float32


def test_variants_differ_as_the_references_do(models):
  keras, torch = models["keras"], models["torchvision"]
  block_k, block_t = keras.layer2[0], torch.layer2[0]
  # v1 strides in the first 1x1 conv, v1.5 in the 3x3 conv.
  assert block_k.conv1.strides == 2 and block_k.conv2.strides == 1
  assert block_t.conv1.strides == 1 and block_t.conv2.strides == 2
  assert keras.conv1.bias is not None and torch.conv1.bias is None
  assert (keras.bn1.epsilon, keras.bn1.momentum) == (1.001e-5, 0.99)
  assert (torch.bn1.epsilon, torch.bn1.momentum) == (1e-5, 0.9)
  torch_params = sum(p.size for p in jax.tree.leaves(nnx.state(torch, nnx.Param)))
  keras_params = sum(p.size for p in jax.tree.leaves(nnx.state(keras, nnx.Param)))
  conv_biases = sum(m.out_features for _, m in nnx.iter_graph(keras) if isinstance(m, nnx.Conv))
  print(f"\nResNet50 parameters: keras {keras_params:,}, torchvision {torch_params:,}")
  assert keras_params == torch_params + conv_biases


def test_bf16_compute_keeps_float32_params():
  model = ResNet50("torchvision", rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  model.eval()
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model))} == {np.dtype("float32")}
  assert _forward(model, jnp.ones((1, 32, 32, 3))).dtype == jnp.bfloat16


def test_eval_uses_running_statistics_train_updates_them(models):
  model = nnx.clone(models["keras"])
  a, b, c = jax.random.normal(jax.random.key(1), (3, 1, 64, 64, 3))
  mean_before = np.asarray(model.bn1.mean[...])
  _forward(model, jnp.concatenate([a, b]))  # train mode: batch statistics, averages move
  assert not np.allclose(model.bn1.mean[...], mean_before)
  model.eval()
  # With running statistics an example's features do not depend on the rest of the batch.
  np.testing.assert_allclose(_forward(model, jnp.concatenate([a, b]))[0],
                             _forward(model, jnp.concatenate([a, c]))[0], rtol=1e-5, atol=1e-5)


def test_zero_init_residual_starts_blocks_as_their_shortcut():
  model = ResNet50("keras", rngs=nnx.Rngs(0), zero_init_residual=True)
  blocks = [b for layer in model.stages for b in layer]
  assert all(not np.any(b.bn3.scale[...]) for b in blocks)
  assert np.all(np.asarray(model.bn1.scale[...]) == 1.0)  # only the blocks' last BatchNorm
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 256))
  block = model.layer1[1]  # an identity block: its output is relu(x) until training moves it
  np.testing.assert_allclose(nnx.jit(lambda b, v: b(v))(block, x), jax.nn.relu(x), atol=1e-6)
  default = ResNet50("keras", rngs=nnx.Rngs(0))
  assert np.all(np.asarray(default.layer1[1].bn3.scale[...]) == 1.0)


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="'keras', 'torchvision'|keras, torchvision"):
    ResNet50("resnet50v2", rngs=nnx.Rngs(0))


def test_normalize_matches_the_references():
  from keras.applications import resnet50
  from torchvision.models import ResNet50_Weights
  x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(preprocess.normalize(x, "keras"),
                             resnet50.preprocess_input(x.copy()), atol=1e-4)
  tv = ResNet50_Weights.IMAGENET1K_V1.transforms()
  want = (x / 255.0 - np.asarray(tv.mean)) / np.asarray(tv.std)
  np.testing.assert_allclose(preprocess.normalize(x, "torchvision"), want, atol=1e-5)


def test_model_input_tiles_resizes_and_normalizes():
  grey = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1), dtype=np.uint8)
  x = preprocess.model_input(grey, 32, "torchvision", dtype=jnp.bfloat16)
  assert x.shape == (2, 32, 32, 3) and x.dtype == jnp.bfloat16
  grey_again = np.asarray(x, np.float32) * preprocess.TORCH_STD + preprocess.TORCH_MEAN
  np.testing.assert_allclose(grey_again, grey_again[..., :1].repeat(3, -1), atol=0.02)
  same = preprocess.model_input(grey, 48, "keras")
  np.testing.assert_allclose(same, preprocess.normalize(np.repeat(grey, 3, -1), "keras"))
  jitted = jax.jit(preprocess.model_input, static_argnums=(1, 2))
  np.testing.assert_allclose(jitted(grey, 32, "keras"), preprocess.model_input(grey, 32, "keras"),
                             atol=1e-4)


def test_model_input_refuses_bad_shapes():
  with pytest.raises(ValueError, match="batch, height, width, 1 or 3"):
    preprocess.model_input(np.zeros((48, 48), np.uint8), 32, "keras")
  with pytest.raises(ValueError, match="batch, height, width, 1 or 3"):
    preprocess.model_input(np.zeros((1, 48, 48, 4), np.uint8), 32, "keras")
  with pytest.raises(ValueError, match="unknown ResNet50 variant"):
    preprocess.model_input(np.zeros((1, 48, 48, 3), np.uint8), 32, "caffe")
