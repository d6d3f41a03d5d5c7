"""BatchNorm with Keras 2's moving-variance rule as an option.

Keras 2 (the paper's framework) normalises a training batch with its biased variance but moves
the running variance towards the *unbiased* estimate, n / (n - 1) x the biased one, n being the
values per channel in the batch (N x H x W). flax and Keras 3 use the biased one for both. The
difference is small per step but it is the variance every eval-mode prediction divides by.
"""

from __future__ import annotations

import jax
from flax import nnx


class BatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm`; `unbiased_variance = True` updates the running variance as Keras 2 did."""

  def __init__(self, *args, unbiased_variance: bool = False, **kwargs):
    super().__init__(*args, **kwargs)
    self.unbiased_variance = unbiased_variance

  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    old = self.var[...]
    y = super().__call__(x, use_running_average, mask=mask)
    frozen = self.use_running_average if use_running_average is None else use_running_average
    if self.unbiased_variance and not frozen:
      # flax stored m * old + (1 - m) * var; rescale its batch term by n / (n - 1).
      n = x.size // x.shape[-1]  # values per channel (features last, no mask in ichflax)
      m = self.momentum
      self.var[...] = jax.lax.stop_gradient(m * old + (self.var[...] - m * old) * n / (n - 1))
    return y
