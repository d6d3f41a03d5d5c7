"""The paper's classification head on the backbone's feature map.

GlobalAveragePooling -> Dense(256, ReLU) -> Dropout(p) -> BatchNorm -> Dense(k), as in the paper
paper (Keras). The head computes in float32 whatever the backbone's dtype: it is tiny, and the
logits feed a loss that must not lose precision under bf16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ichflax.models.batchnorm import BatchNorm

# Dense kernel initialisers: flax's default, and Keras's (glorot_uniform), which the paper used.
KERNEL_INITS = {"lecun": nnx.initializers.lecun_normal(),
                "glorot": nnx.initializers.glorot_uniform()}
# Keras BatchNormalization defaults, the layer the paper's head used.
HEAD_BN_MOMENTUM = 0.99
HEAD_BN_EPSILON = 1e-3


class Head(nnx.Module):
  """(N, h, w, C) features -> (N, num_outputs) logits."""

  def __init__(self, in_features: int, num_outputs: int, dropout: float, *, rngs: nnx.Rngs,
               width: int = 256, kernel_init: str = "lecun"):
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if num_outputs < 1:
      raise ValueError(f"num_outputs must be at least 1, got {num_outputs}")
    if kernel_init not in KERNEL_INITS:
      raise ValueError(f"unknown head initialiser {kernel_init!r}: choose one of "
                       f"{', '.join(KERNEL_INITS)}")
    init = KERNEL_INITS[kernel_init]  # biases start at zero in flax and Keras alike
    self.hidden = nnx.Linear(in_features, width, kernel_init=init, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.bn = BatchNorm(width, momentum=HEAD_BN_MOMENTUM, epsilon=HEAD_BN_EPSILON, rngs=rngs)
    self.out = nnx.Linear(width, num_outputs, kernel_init=init, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    x = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    x = self.bn(self.dropout(nnx.relu(self.hidden(x))))
    return self.out(x)
