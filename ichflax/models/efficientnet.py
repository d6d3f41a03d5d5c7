"""EfficientNet-B0 in flax.nnx, NHWC, laid out as `torchvision.models.efficientnet_b0`.

The cheap backbone of the RSNA 2019 open solutions: 0.39 GFLOP a 224 px image against ResNet50's
4.1, 1,280 features. Same blocks, padding, BatchNorm settings and stochastic depth as torchvision
(whose ImageNet weights `ichflax.weights` converts), so `EfficientNetB0()(x)` equals torchvision's
`model.features(x)` transposed to NHWC. Every normalisation layer is a BatchNorm whose attribute
name starts with "bn", so the paper's recipe (train BatchNorm and the head) selects them by path.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ichflax.models import conv
from ichflax.models.batchnorm import BatchNorm


@dataclasses.dataclass(frozen=True)
class Stage:
  """One row of the EfficientNet paper's Table 1 (MBConv blocks that share a shape)."""

  expand: int
  kernel: int
  stride: int
  cin: int
  cout: int
  blocks: int


STAGES = (Stage(1, 3, 1, 32, 16, 1), Stage(6, 3, 2, 16, 24, 2), Stage(6, 5, 2, 24, 40, 2),
          Stage(6, 3, 2, 40, 80, 3), Stage(6, 5, 1, 80, 112, 3), Stage(6, 5, 2, 112, 192, 4),
          Stage(6, 3, 1, 192, 320, 1))
STEM = 32
FEATURES = 1280
# torchvision's defaults for B0: BatchNorm2d(eps=1e-5, momentum=0.1), i.e. nnx momentum 0.9.
BN_EPSILON, BN_MOMENTUM = 1e-5, 0.9
STOCHASTIC_DEPTH = 0.2  # the last block's drop rate; block k of n drops 0.2 * k / n


class _Make:
  """Convs and BatchNorms with the backbone's dtype and padding (k // 2 on every side)."""

  def __init__(self, dtype, rngs: nnx.Rngs):
    self.dtype, self.rngs = dtype, rngs

  def conv(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
           bias: bool = False) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding=((k // 2, k // 2),) * 2,
                    feature_group_count=groups, use_bias=bias, dtype=self.dtype,
                    param_dtype=jnp.float32, conv_general_dilated=conv.conv_general_dilated,
                    rngs=self.rngs)

  def bn(self, features: int) -> BatchNorm:
    return BatchNorm(features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype,
                     param_dtype=jnp.float32, rngs=self.rngs)


class MBConv(nnx.Module):
  """Expand 1x1 -> depthwise kxk -> squeeze-and-excitation -> project 1x1 (+ shortcut)."""

  def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int,
               drop: float, make: _Make):
    wide = cin * expand
    self.expand = make.conv(cin, wide) if expand != 1 else None
    self.bn_expand = make.bn(wide) if expand != 1 else None
    self.depthwise = make.conv(wide, wide, kernel, stride, groups=wide)
    self.bn_depthwise = make.bn(wide)
    squeeze = max(1, cin // 4)
    self.se_reduce = make.conv(wide, squeeze, bias=True)
    self.se_expand = make.conv(squeeze, wide, bias=True)
    self.project = make.conv(wide, cout)
    self.bn_project = make.bn(cout)
    self.residual = stride == 1 and cin == cout
    # torchvision's StochasticDepth("row"): the whole branch dropped per sample, survivors scaled.
    self.drop = nnx.Dropout(drop, broadcast_dims=(1, 2, 3), rngs=make.rngs) if self.residual \
        else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x if self.expand is None else nnx.silu(self.bn_expand(self.expand(x)))
    y = nnx.silu(self.bn_depthwise(self.depthwise(y)))
    scale = jnp.mean(y, axis=(1, 2), keepdims=True)
    y = y * nnx.sigmoid(self.se_expand(nnx.silu(self.se_reduce(scale))))
    y = self.bn_project(self.project(y))
    return x + self.drop(y) if self.residual else y


class EfficientNetB0(nnx.Module):
  """EfficientNet-B0 without its classifier: (N, H, W, 3) -> (N, H/32, W/32, 1280)."""

  arch = "efficientnet_b0"
  variant = "torchvision"  # ImageNet normalisation and weight layout
  features = FEATURES

  def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.dtype = dtype
    make = _Make(dtype, rngs)
    self.stem = make.conv(3, STEM, 3, 2)
    self.bn_stem = make.bn(STEM)
    total, k = sum(s.blocks for s in STAGES), 0
    stages = []
    for s in STAGES:
      blocks = []
      for b in range(s.blocks):
        blocks.append(MBConv(s.cin if b == 0 else s.cout, s.cout, s.expand, s.kernel,
                             s.stride if b == 0 else 1, STOCHASTIC_DEPTH * k / total, make))
        k += 1
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.top_conv = make.conv(STAGES[-1].cout, FEATURES)
    self.bn_top = make.bn(FEATURES)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.silu(self.bn_stem(self.stem(x.astype(self.dtype))))
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return nnx.silu(self.bn_top(self.top_conv(x)))
