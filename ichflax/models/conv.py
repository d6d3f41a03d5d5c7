"""Convolution for nnx.Conv that takes XLA CPU's fast dot where its convolutions are slow.

XLA's ConvOperandSwapper swaps a convolution's operands when the kernel has more spatial taps
than the input has pixels (a 3x3 kernel on ResNet50's 2x2 layer4 maps at 64 px, forward and
input gradient). The CPU backend has no fast kernel for the swapped layout and runs it as a
naive loop: 135 ms for one 302 MFLOP layer4 convolution against 6.5 ms for the 4x4 map at
128 px (docs/benchmarks.md, "Training on a CPU (issue 24)"), six of them in a train step.
On a CPU such a convolution is computed here as a matrix product of its patches instead: the
same sums in another order, in XLA's fast dot, and so is its gradient. So is every 1x1
convolution (ResNet50 has 36 of its 53): as a dot its forward, input gradient and weight
gradient took 2.2 / 6.3 / 11.5 ms against XLA CPU's 8.0 / 14.6 / 66.0 ms for the convolution
(a 32x32x256 -> 64 map, batch 16), whose gradients go through transposed copies of kernel and
activations. Every other convolution (3x3 and 7x7 on larger maps), and every convolution on
another backend, is `lax.conv_general_dilated` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         out_sharding=None):
  """`lax.conv_general_dilated`, as patches @ kernel where XLA CPU would swap the operands."""
  if out_sharding is not None or not _as_patches(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count * batch_group_count):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type,
                                    out_sharding=out_sharding)
  return patches_conv(lhs, rhs, window_strides, padding, precision, preferred_element_type)


def patches_conv(lhs, rhs, window_strides, padding, precision=None, preferred_element_type=None):
  """An NHWC x HWIO convolution (explicit padding, no dilation) as one dot of its patches."""
  kh, kw, cin, cout = rhs.shape
  (sh, sw), (ph, pw) = window_strides, padding
  x = jnp.pad(lhs, ((0, 0), tuple(ph), tuple(pw), (0, 0)))
  oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  # Tap (i, j) of every output pixel; concatenated in HWIO order, so the kernel only reshapes.
  patches = jnp.concatenate(
      [x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw] for i in range(kh)
       for j in range(kw)], axis=-1)
  return lax.dot_general(patches, rhs.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                         precision=precision, preferred_element_type=preferred_element_type)


def _as_patches(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                dimension_numbers, groups: int) -> bool:
  """True for a plain NHWC x HWIO convolution on a CPU that is 1x1 or whose map, in or out, is
  smaller than its kernel: the case XLA swaps (ConvOperandSwapper compares these pixel counts)."""
  if jax.default_backend() != "cpu" or groups != 1:
    return False
  if lhs.ndim != 4 or any(d not in (None, (1, 1)) for d in (lhs_dilation, rhs_dilation)):
    return False
  if isinstance(padding, str) or dimension_numbers != lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, _NHWC):
    return False
  taps = math.prod(rhs.shape[:2])
  out = [(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in
         zip(lhs.shape[1:3], padding, rhs.shape[:2], window_strides)]
  return taps == 1 or min(math.prod(lhs.shape[1:3]), math.prod(out)) < taps
