"""The backbones a classifier can stand on, chosen by name (`--backbone`, `ModelSpec.backbone`).

Each takes (N, H, W, 3) (3K for K slices: `widen_stem`) and gives its last feature map
(N, H/32, W/32, C) with `features` = C, names every normalisation layer's attribute with a
prefix in NORM_PREFIXES (so the paper's recipe selects them by path), and records its `arch`
and weight `variant` (the ImageNet normalisation of its inputs). ResNet50 comes in two
variants; the others in torchvision's.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ichflax.models.convnext import ConvNeXtTiny
from ichflax.models.efficientnet import EfficientNetB0
from ichflax.models.resnet import VARIANTS, ResNet50
from ichflax.spec import BACKBONES

NORM_PREFIXES = ("bn", "ln")  # BatchNorm ("bn...") and LayerNorm ("ln...") attribute names
DEFAULT = "resnet50"
STEMS = {"resnet50": "conv1", "efficientnet_b0": "stem", "convnext_tiny": "stem"}  # first conv


def check(arch: str, variant: str) -> None:
  """Raises for an unknown backbone or a weight variant it does not come in."""
  if arch not in BACKBONES:
    raise ValueError(f"unknown backbone {arch!r}: choose one of {', '.join(BACKBONES)}")
  allowed = tuple(VARIANTS) if arch == "resnet50" else ("torchvision",)
  if variant not in allowed:
    raise ValueError(f"backbone {arch} comes in the {' / '.join(allowed)} variant, not "
                     f"{variant!r}")


def build(arch: str, variant: str, *, rngs: nnx.Rngs, dtype=jnp.float32,
          zero_init_residual: bool = False) -> nnx.Module:
  """A randomly initialised backbone (`zero_init_residual`: ResNet50 only, see ResNet50)."""
  check(arch, variant)
  if arch == "resnet50":
    return ResNet50(variant, rngs=rngs, dtype=dtype, zero_init_residual=zero_init_residual)
  return {"efficientnet_b0": EfficientNetB0, "convnext_tiny": ConvNeXtTiny}[arch](
      rngs=rngs, dtype=dtype)


def widen_stem(backbone: nnx.Module, context: int) -> nnx.Module:
  """The backbone reading `context` slices (3 channels each, slice-major) instead of one.

  The stem's RGB kernel is repeated for every slice and scaled by 1 / context (Ian Pan's 2.5D
  RSNA models: 3/9 for 3 slices x 3 windows), so on a series of identical slices the widened
  network computes exactly what the pretrained one did: ImageNet features survive the change.
  """
  if context == 1:
    return backbone
  conv = getattr(backbone, STEMS[backbone.arch])
  kernel = conv.kernel.value
  if kernel.shape[2] != 3:
    raise ValueError(f"the stem already reads {kernel.shape[2]} channels, not 3")
  conv.kernel.value = jnp.tile(kernel, (1, 1, context, 1)) / context
  conv.in_features = 3 * context
  return backbone
