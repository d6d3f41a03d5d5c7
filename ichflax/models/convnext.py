"""ConvNeXt-Tiny in flax.nnx, NHWC, laid out as `torchvision.models.convnext_tiny`.

The modern all-convolutional backbone (Liu et al. 2022): 4.5 GFLOP a 224 px image, 768 features
at 1/32 like ResNet50's last map, so Grad-CAM works unchanged. Same blocks, LayerNorms, layer
scale and stochastic depth as torchvision, so `ConvNeXtTiny()(x)` equals `model.features(x)`
transposed to NHWC. Its normalisation layers are LayerNorms, named "ln...": the paper's recipe
("every layer frozen but the normalisation layers") trains their scale and bias, which is all
they have (no running statistics to adapt to CT, unlike BatchNorm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ichflax.models import conv

DEPTHS = (3, 3, 9, 3)
WIDTHS = (96, 192, 384, 768)
FEATURES = WIDTHS[-1]
LN_EPSILON = 1e-6
LAYER_SCALE = 1e-6  # each block's residual branch starts nearly off
STOCHASTIC_DEPTH = 0.1  # the last block's drop rate, rising linearly from 0 at the first


class _Make:
  """Layers with the backbone's dtype (parameters stay float32)."""

  def __init__(self, dtype, rngs: nnx.Rngs):
    self.dtype, self.rngs = dtype, rngs

  def conv(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding=(((k - stride) // 2,) * 2,) * 2,
                    feature_group_count=groups, dtype=self.dtype, param_dtype=jnp.float32,
                    conv_general_dilated=conv.conv_general_dilated, rngs=self.rngs)

  def ln(self, features: int) -> nnx.LayerNorm:
    return nnx.LayerNorm(features, epsilon=LN_EPSILON, dtype=self.dtype,
                         param_dtype=jnp.float32, rngs=self.rngs)

  def linear(self, cin: int, cout: int) -> nnx.Linear:
    return nnx.Linear(cin, cout, dtype=self.dtype, param_dtype=jnp.float32, rngs=self.rngs)


class Block(nnx.Module):
  """Depthwise 7x7 -> LayerNorm -> Linear 4x -> GELU -> Linear -> layer scale (+ shortcut)."""

  def __init__(self, dim: int, drop: float, make: _Make):
    self.depthwise = make.conv(dim, dim, 7, groups=dim)
    self.ln = make.ln(dim)
    self.fc1 = make.linear(dim, 4 * dim)
    self.fc2 = make.linear(4 * dim, dim)
    self.layer_scale = nnx.Param(jnp.full((dim,), LAYER_SCALE, jnp.float32))
    # torchvision's StochasticDepth("row"): the whole branch dropped per sample, survivors scaled.
    self.drop = nnx.Dropout(drop, broadcast_dims=(1, 2, 3), rngs=make.rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.fc2(nnx.gelu(self.fc1(self.ln(self.depthwise(x))), approximate=False))
    return x + self.drop(y * self.layer_scale[...].astype(y.dtype))


class Downsample(nnx.Module):
  """LayerNorm, then a 2x2 stride-2 convolution to the next stage's width."""

  def __init__(self, cin: int, cout: int, make: _Make):
    self.ln = make.ln(cin)
    self.conv = make.conv(cin, cout, 2, 2)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(self.ln(x))


class ConvNeXtTiny(nnx.Module):
  """ConvNeXt-Tiny without its classifier: (N, H, W, 3) -> (N, H/32, W/32, 768)."""

  arch = "convnext_tiny"
  variant = "torchvision"  # ImageNet normalisation and weight layout
  features = FEATURES

  def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.dtype = dtype
    make = _Make(dtype, rngs)
    self.stem = make.conv(3, WIDTHS[0], 4, 4)
    self.ln_stem = make.ln(WIDTHS[0])
    total, k = sum(DEPTHS), 0
    stages, downsamples = [], []
    for s, (depth, width) in enumerate(zip(DEPTHS, WIDTHS)):
      if s:
        downsamples.append(Downsample(WIDTHS[s - 1], width, make))
      blocks = []
      for _ in range(depth):
        blocks.append(Block(width, STOCHASTIC_DEPTH * k / (total - 1), make))
        k += 1
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.downsamples = nnx.List(downsamples)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.ln_stem(self.stem(x.astype(self.dtype)))
    for s, stage in enumerate(self.stages):
      if s:
        x = self.downsamples[s - 1](x)
      for block in stage:
        x = block(x)
    return x
