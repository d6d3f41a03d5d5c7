"""Training-domain check: how unlike the training slices are an input's backbone features?

Why: a model trained on the smooth synthetic phantom answers "hemorrhage 100%" on real scans it
has never seen. The pooled backbone features (2048 numbers per slice, the head's input) of the
training split are fitted with a Gaussian whose covariance is low-rank plus isotropic
(probabilistic PCA, Tipping & Bishop 1999): the top `k` principal directions keep their own
variances, the remaining 2048 - k share one (their mean). That is a shrunk covariance in the
Ledoit-Wolf spirit: it stays invertible with a few thousand slices (a full 2048 x 2048 sample
covariance is singular or nearly so), and an input that moves off the training subspace (a new
texture, noise spectrum or anatomy) is caught by the residual term that a plain PCA distance
would ignore. The score is the squared Mahalanobis distance under that covariance divided by the
feature count (about 1 for training-like slices). One pooled model, not one per class: the
multilabel classes overlap, and being "unlike every training slice" is what the check asks.

The threshold is a stated percentile of the validation split's scores (default the 99th), so
about 1% of fresh in-domain slices are flagged by design. The arrays (mean, k components, k + 1
variances: about 1 MB at k = 128) go in the checkpoint item `domain/`; the threshold and
percentile in the spec.
"""

from __future__ import annotations

import dataclasses

import numpy as np

COMPONENTS = 128
PERCENTILE = 99.0


@dataclasses.dataclass(frozen=True)
class DomainModel:
  """Low-rank + isotropic Gaussian of training features, and the out-of-domain threshold."""

  mean: np.ndarray  # float32 (D,)
  components: np.ndarray  # float32 (D, k), orthonormal columns
  variances: np.ndarray  # float32 (k,) along the components
  residual_variance: float  # per dimension, off the components
  threshold: float | None = None  # scores above it are out of domain
  percentile: float | None = None  # of the validation scores that set `threshold`

  def score(self, features: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distance per feature dimension; ~1 for training-like inputs."""
    c = np.asarray(features, np.float64) - self.mean
    z = c @ self.components
    inside = np.sum(z * z / self.variances, axis=1)
    residual = np.maximum(np.sum(c * c, axis=1) - np.sum(z * z, axis=1), 0.0)
    return (inside + residual / self.residual_variance) / c.shape[1]

  def calibrated(self, validation_features: np.ndarray,
                 percentile: float = PERCENTILE) -> DomainModel:
    """This model with its threshold at `percentile` of the validation split's scores."""
    scores = self.score(validation_features)
    return dataclasses.replace(self, threshold=float(np.percentile(scores, percentile)),
                               percentile=float(percentile))

  def arrays(self) -> dict[str, np.ndarray]:
    """The checkpoint item's content (the threshold lives in the spec)."""
    return {"mean": self.mean, "components": self.components, "variances": self.variances,
            "residual_variance": np.float32(self.residual_variance)}

  @classmethod
  def from_arrays(cls, arrays: dict, threshold: float | None,
                  percentile: float | None) -> DomainModel:
    return cls(np.asarray(arrays["mean"], np.float32),
               np.asarray(arrays["components"], np.float32),
               np.asarray(arrays["variances"], np.float32),
               float(arrays["residual_variance"]), threshold, percentile)


def fit(features: np.ndarray, components: int = COMPONENTS) -> DomainModel:
  """The probabilistic-PCA fit of (N, D) training features (maximum likelihood)."""
  x = np.asarray(features, np.float64)
  n, d = x.shape
  if n < 3:
    raise ValueError(f"fitting the training domain needs at least 3 training slices, got {n}")
  mean = x.mean(axis=0)
  _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
  eig = singular ** 2 / (n - 1)
  k = int(min(components, n - 2, d - 1))
  floor = 1e-6 * max(float(eig[0]), 1e-12)  # dead features (ReLU zeros) must not divide by 0
  residual = max(float(eig[k:].sum()) / (d - k), floor)
  return DomainModel(mean.astype(np.float32), vt[:k].T.astype(np.float32),
                     np.maximum(eig[:k], residual).astype(np.float32), residual)
