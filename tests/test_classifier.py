"""Seed head + classifier, and the trainable-parameter filters of the two recipes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ichflax.models import Classifier, Head, ResNet50, build_classifier, trainable_filter
from ichflax.tasks import get_task

_forward = nnx.jit(lambda model, x: model(x))


@pytest.fixture(scope="module")
def backbone():
  return ResNet50("keras", rngs=nnx.Rngs(0))


def _count(state) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(state))


def test_classifier_is_head_on_backbone(backbone):
  model = build_classifier("binary", "keras", rngs=nnx.Rngs(1), backbone=nnx.clone(backbone))
  model.eval()
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  logits = _forward(model, x)
  assert logits.shape == (2, 1) and logits.dtype == jnp.float32
  features = _forward(model.backbone, x)  # what Grad-CAM differentiates the head against
  np.testing.assert_allclose(model.head(features), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["binary", "subtype", "multilabel"])
def test_head_per_task_uses_the_paper_presets(backbone, task):
  model = build_classifier(task, "keras", rngs=nnx.Rngs(1), backbone=backbone)
  spec = get_task(task)
  assert model.head.dropout.rate == spec.default_dropout
  assert model.head(jnp.ones((3, 2, 2, 2048))).shape == (3, spec.num_outputs)
  assert build_classifier(task, "keras", 0.1, rngs=nnx.Rngs(1),
                          backbone=backbone).head.dropout.rate == 0.1


def test_head_dropout_only_in_train_mode():
  head = Head(2048, 5, 0.5, rngs=nnx.Rngs(0))
  features = jax.random.normal(jax.random.key(0), (4, 2, 2, 2048))
  assert not np.allclose(head(features), head(features))  # fresh dropout masks
  head.eval()
  np.testing.assert_array_equal(head(features), head(features))


def test_head_gives_float32_logits_from_bf16_features():
  head = Head(2048, 6, 0.3, rngs=nnx.Rngs(0))
  head.eval()
  assert head(jnp.ones((1, 2, 2, 2048), jnp.bfloat16)).dtype == jnp.float32


def test_trainable_filter_counts(backbone):
  model = build_classifier("binary", "keras", rngs=nnx.Rngs(1), backbone=backbone)
  paper = _count(nnx.state(model, trainable_filter("bn-head")))
  full = _count(nnx.state(model, trainable_filter("all")))
  # Counted independently: every BatchNorm scale/bias in the backbone + every head parameter.
  bn = sum(m.scale.size + m.bias.size for _, m in nnx.iter_graph(model.backbone)
           if isinstance(m, nnx.BatchNorm))
  head = _count(nnx.state(model.head, nnx.Param))
  summary = (f"paper recipe trains {paper:,} of {full:,} parameters "
             f"({bn:,} backbone BatchNorm + {head:,} head; {100 * paper / full:.2f}%)")
  print("\n" + summary)
  assert paper == bn + head, summary
  assert full == _count(nnx.state(model, nnx.Param)), summary
  assert 0.5e6 < paper < 0.7e6 and 23e6 < full < 25e6, summary


def test_bn_head_step_changes_only_batchnorm_and_head(backbone):
  model = build_classifier("subtype", "keras", rngs=nnx.Rngs(1), backbone=nnx.clone(backbone))
  wrt = trainable_filter("bn-head")
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=wrt)
  task = get_task("subtype")
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  y = jax.nn.one_hot(jnp.arange(4) % 5, 5)

  @nnx.jit
  def step(model, optimizer, x, y):
    loss_fn = lambda m: jnp.mean(task.loss(m(x), y))
    grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
    optimizer.update(model, grads)

  before = nnx.clone(model)
  step(model, optimizer, x, y)
  changed = lambda a, b: not np.array_equal(a, b)
  old, new = nnx.state(before, nnx.Param), nnx.state(model, nnx.Param)
  moved = {path for (path, a), (_, b) in zip(old.flat_state(), new.flat_state())
           if changed(a[...], b[...])}
  assert ("backbone", "layer1", 0, "bn2", "scale") in moved
  assert ("head", "out", "kernel") in moved
  frozen = [p for p in moved if p[0] == "backbone" and not any(str(k).startswith("bn") for k in p)]
  assert frozen == [], f"frozen backbone parameters changed: {frozen[:3]}"


def test_bad_arguments_are_refused(backbone):
  with pytest.raises(ValueError, match="'keras' resnet50 but 'torchvision' resnet50"):
    build_classifier("binary", "torchvision", rngs=nnx.Rngs(0), backbone=backbone)
  with pytest.raises(ValueError, match="dropout must be in"):
    Classifier(backbone, 1, 1.5, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="choose 'bn-head' or 'all'"):
    trainable_filter("bn_only")
  with pytest.raises(ValueError, match="unknown task"):
    build_classifier("segmentation", "keras", rngs=nnx.Rngs(0), backbone=backbone)
