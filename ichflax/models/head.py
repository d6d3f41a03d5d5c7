"""The paper's classification head on the backbone's feature map.

GlobalAveragePooling -> Dense(256, ReLU) -> Dropout(p) -> BatchNorm -> Dense(k), as in the paper
paper (Keras). The head computes in float32 whatever the backbone's dtype: it is tiny, and the
logits feed a loss that must not lose precision under bf16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# Keras BatchNormalization defaults, the layer the paper's head used.
HEAD_BN_MOMENTUM = 0.99
HEAD_BN_EPSILON = 1e-3


class Head(nnx.Module):
  """(N, h, w, C) features -> (N, num_outputs) logits."""

  def __init__(self, in_features: int, num_outputs: int, dropout: float, *, rngs: nnx.Rngs,
               width: int = 256):
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if num_outputs < 1:
      raise ValueError(f"num_outputs must be at least 1, got {num_outputs}")
    self.hidden = nnx.Linear(in_features, width, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.bn = nnx.BatchNorm(width, momentum=HEAD_BN_MOMENTUM, epsilon=HEAD_BN_EPSILON, rngs=rngs)
    self.out = nnx.Linear(width, num_outputs, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    x = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    x = self.bn(self.dropout(nnx.relu(self.hidden(x))))
    return self.out(x)
