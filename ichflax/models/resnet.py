"""ResNet50 in flax.nnx, NHWC, in the two layouts whose ImageNet weights we convert.

"keras" is ResNet50 v1 as `keras.applications.ResNet50` (the paper's backbone); "torchvision" is
v1.5 as `torchvision.models.resnet50`. Padding is explicit everywhere because Flax 'SAME' on a
stride-2 convolution pads differently from both references, which would silently shift every
feature map by a pixel and break weight parity.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ichflax.models import conv
from ichflax.models.batchnorm import BatchNorm

# Blocks per stage and bottleneck widths of ResNet50 (output width = 4 x width).
STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
FEATURES = STAGE_WIDTHS[-1] * EXPANSION
# Every BatchNorm attribute name starts with this, so filters can select them by path.
BN_PREFIX = "bn"


@dataclasses.dataclass(frozen=True)
class Variant:
  """What differs between the two reference ResNet50s."""

  conv_bias: bool
  bn_epsilon: float
  bn_momentum: float  # nnx convention: running = momentum * running + (1 - momentum) * batch
  stride_in_3x3: bool  # v1.5 strides in the 3x3 conv, v1 in the first 1x1
  pool_pad_value: float  # Keras ZeroPadding2D before the max pool, torch pads with -inf


VARIANTS = {
    "keras": Variant(conv_bias=True, bn_epsilon=1.001e-5, bn_momentum=0.99,
                     stride_in_3x3=False, pool_pad_value=0.0),
    # torch momentum 0.1 weights the new batch, i.e. nnx momentum 0.9.
    "torchvision": Variant(conv_bias=False, bn_epsilon=1e-5, bn_momentum=0.9,
                           stride_in_3x3=True, pool_pad_value=-jnp.inf),
}


def get_variant(name: str) -> Variant:
  if name not in VARIANTS:
    raise ValueError(f"unknown ResNet50 variant {name!r}: choose one of {', '.join(VARIANTS)}")
  return VARIANTS[name]


def _pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((p, p), (p, p))


class _ConvFactory:
  """Builds the convs and BatchNorms of one variant with shared dtype settings."""

  def __init__(self, spec: Variant, dtype, rngs: nnx.Rngs):
    self.spec, self.dtype, self.rngs = spec, dtype, rngs

  def conv(self, cin: int, cout: int, k: int, stride: int = 1) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding=_pad(k // 2),
                    use_bias=self.spec.conv_bias, dtype=self.dtype, param_dtype=jnp.float32,
                    conv_general_dilated=conv.conv_general_dilated, rngs=self.rngs)

  def bn(self, features: int) -> BatchNorm:
    return BatchNorm(features, momentum=self.spec.bn_momentum, epsilon=self.spec.bn_epsilon,
                         dtype=self.dtype, param_dtype=jnp.float32, rngs=self.rngs)


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 -> 1x1 residual block; the first block of a stage projects the shortcut."""

  def __init__(self, cin: int, width: int, stride: int, make: _ConvFactory,
               zero_init_residual: bool = False):
    s1, s3 = (1, stride) if make.spec.stride_in_3x3 else (stride, 1)
    cout = width * EXPANSION
    self.conv1, self.bn1 = make.conv(cin, width, 1, s1), make.bn(width)
    self.conv2, self.bn2 = make.conv(width, width, 3, s3), make.bn(width)
    self.conv3, self.bn3 = make.conv(width, cout, 1), make.bn(cout)
    if zero_init_residual:
      self.bn3.scale[...] = jnp.zeros_like(self.bn3.scale[...])
    project = stride != 1 or cin != cout
    self.conv_proj = make.conv(cin, cout, 1, stride) if project else None
    self.bn_proj = make.bn(cout) if project else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.conv_proj is None else self.bn_proj(self.conv_proj(x))
    return nnx.relu(y + shortcut)


class ResNet50(nnx.Module):
  """ResNet50 backbone without its classifier: (N, H, W, 3) -> (N, H/32, W/32, 2048).

  `zero_init_residual` starts every block's last BatchNorm scale at 0, so each residual block
  begins as its shortcut (torchvision's option of that name; Goyal et al. 2017). From random
  weights this makes the 50-layer net train like a shallow one at first: on the phantom a
  binary run that stayed at the majority class for 300 steps learns within ~150 steps
  (docs/training.md). Converted ImageNet weights overwrite it.
  """

  arch = "resnet50"
  features = FEATURES

  def __init__(self, variant: str = "keras", *, rngs: nnx.Rngs, dtype=jnp.float32,
               zero_init_residual: bool = False):
    spec = get_variant(variant)
    self.variant = variant
    self.dtype = dtype
    make = _ConvFactory(spec, dtype, rngs)
    self.conv1 = make.conv(3, 64, 7, 2)
    self.bn1 = make.bn(64)
    self.pool_pad_value = spec.pool_pad_value
    cin = 64
    for stage, (blocks, width) in enumerate(zip(STAGE_BLOCKS, STAGE_WIDTHS)):
      layer = []
      for block in range(blocks):
        stride = 2 if block == 0 and stage > 0 else 1
        layer.append(Bottleneck(cin, width, stride, make, zero_init_residual))
        cin = width * EXPANSION
      setattr(self, f"layer{stage + 1}", nnx.List(layer))

  @property
  def stages(self) -> tuple[nnx.List, ...]:
    return (self.layer1, self.layer2, self.layer3, self.layer4)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn1(self.conv1(x.astype(self.dtype))))
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=self.pool_pad_value)
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    for layer in self.stages:
      for block in layer:
        x = block(x)
    return x
