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

A model trained on smooth phantoms may map a real scan's features close to its training ones
(it never learnt to see what differs), so a second, model-independent Gaussian looks at the
stored model image itself (`image_statistics`: head size in the field of view, bone, tissue
fraction, tissue brightness, contrast and fine texture), with a full covariance shrunk 10%
towards its diagonal (6 numbers: a few thousand slices estimate it well). An input is out of
domain when either score passes its threshold. PNG/JPG pictures are judged on the features alone:
their windowing and resampling were done elsewhere and shift these statistics by themselves.

Each threshold is a stated percentile of the validation split's scores (default the 99th), so
about 1-2% of fresh in-domain slices are flagged by design. The arrays (mean, k components, k + 1
variances: about 1 MB at k = 128; the image statistics' mean and precision) go in the checkpoint
item `domain/`; the thresholds and percentile in the spec.
"""

from __future__ import annotations

import dataclasses

import numpy as np

COMPONENTS = 128
PERCENTILE = 99.0
IMAGE_SHRINK = 0.1
IMAGE_STATISTICS = ("head fraction", "bone fraction", "tissue fraction of the head",
                    "tissue brightness", "tissue contrast", "tissue texture")


def image_statistics(images: np.ndarray) -> np.ndarray:
  """(N, 6) statistics of stored model images (N, S, S, C) uint8, channel 0 the brain window.

  The last channel (the bone window with three windows) separates air from the head; every
  value is a fraction or a level / 255, so they do not depend on the stored size.
  """
  x = np.asarray(images, np.float32)
  b, o = x[..., 0], x[..., -1]
  head = o > 20
  tissue = (b > 5) & (b < 250)
  bone = (b >= 254) & (o > 120)
  # Fine texture: each tissue pixel against the mean of its four neighbours (all tissue).
  around = (b[:, :-2, 1:-1] + b[:, 2:, 1:-1] + b[:, 1:-1, :-2] + b[:, 1:-1, 2:]) / 4
  inner = (tissue[:, 1:-1, 1:-1] & tissue[:, :-2, 1:-1] & tissue[:, 2:, 1:-1]
           & tissue[:, 1:-1, :-2] & tissue[:, 1:-1, 2:])
  rough = np.abs(b[:, 1:-1, 1:-1] - around) * inner
  n_tissue = np.maximum(tissue.sum(axis=(1, 2)), 1)
  mean = (b * tissue).sum(axis=(1, 2)) / n_tissue
  var = (b * b * tissue).sum(axis=(1, 2)) / n_tissue - mean ** 2
  return np.stack([head.mean(axis=(1, 2)), bone.mean(axis=(1, 2)),
                   tissue.sum(axis=(1, 2)) / np.maximum(head.sum(axis=(1, 2)), 1), mean / 255,
                   np.sqrt(np.maximum(var, 0)) / 255,
                   rough.sum(axis=(1, 2)) / np.maximum(inner.sum(axis=(1, 2)), 1) / 255], 1)


@dataclasses.dataclass(frozen=True)
class DomainModel:
  """Low-rank + isotropic Gaussian of training features, and the out-of-domain threshold."""

  mean: np.ndarray  # (D,)
  components: np.ndarray  # (D, k), orthonormal columns
  variances: np.ndarray  # (k,) along the components
  residual_variance: float  # per dimension, off the components
  threshold: float | None = None  # scores above it are out of domain
  percentile: float | None = None  # of the validation scores that set `threshold`
  image_mean: np.ndarray | None = None  # (6,) training mean of `image_statistics`
  image_precision: np.ndarray | None = None  # (6, 6) inverse of their shrunk covariance
  image_threshold: float | None = None

  def score_statistics(self, stats: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distance of `image_statistics` rows, per statistic."""
    c = np.asarray(stats, np.float64) - self.image_mean
    return np.einsum("ni,ij,nj->n", c, self.image_precision, c) / c.shape[1]

  def far(self, features: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features' score / threshold, image statistics' score / threshold): > 1 is too far."""
    return (self.score(features) / self.threshold,
            self.score_statistics(image_statistics(images)) / self.image_threshold)

  def score(self, features: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distance per feature dimension; ~1 for training-like inputs."""
    c = np.asarray(features, np.float64) - self.mean
    # einsum, not `@`: a BLAS call for 8 x 2048 @ 2048 x 128 spins threads that cost 10x the
    # work on a busy CPU (measured: 36 ms vs 3.5 ms per batch of 8 on the shared 2-core box).
    z = np.einsum("nd,dk->nk", c, self.components)
    inside = np.sum(z * z / self.variances, axis=1)
    residual = np.maximum(np.sum(c * c, axis=1) - np.sum(z * z, axis=1), 0.0)
    return (inside + residual / self.residual_variance) / c.shape[1]

  def calibrated(self, validation_features: np.ndarray, validation_stats: np.ndarray,
                 percentile: float = PERCENTILE) -> DomainModel:
    """This model with both thresholds at `percentile` of the validation split's scores."""
    return dataclasses.replace(
        self, threshold=float(np.percentile(self.score(validation_features), percentile)),
        image_threshold=float(np.percentile(self.score_statistics(validation_stats),
                                            percentile)),
        percentile=float(percentile))

  def arrays(self) -> dict[str, np.ndarray]:
    """The checkpoint item's content (the thresholds live in the spec)."""
    f32 = np.float32  # half the bytes on disk; served in float64
    return {"mean": self.mean.astype(f32), "components": self.components.astype(f32),
            "variances": self.variances.astype(f32),
            "residual_variance": np.float32(self.residual_variance),
            "image_mean": self.image_mean, "image_precision": self.image_precision}

  @classmethod
  def from_arrays(cls, arrays: dict, threshold: float | None, percentile: float | None,
                  image_threshold: float | None) -> DomainModel:
    return cls(np.asarray(arrays["mean"], np.float64),
               np.asarray(arrays["components"], np.float64),
               np.asarray(arrays["variances"], np.float64),
               float(arrays["residual_variance"]), threshold, percentile,
               np.asarray(arrays["image_mean"], np.float64),
               np.asarray(arrays["image_precision"], np.float64), image_threshold)


def fit(features: np.ndarray, stats: np.ndarray, components: int = COMPONENTS) -> DomainModel:
  """Probabilistic PCA of (N, D) training features (maximum likelihood), and the Gaussian of
  the training images' statistics (`image_statistics` rows)."""
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
  stats = np.asarray(stats, np.float64)
  cov = np.cov(stats, rowvar=False)
  cov = (1 - IMAGE_SHRINK) * cov + IMAGE_SHRINK * np.diag(np.diag(cov))
  cov += 1e-9 * np.eye(len(cov))  # a statistic constant in training must not divide by 0
  return DomainModel(mean, vt[:k].T, np.maximum(eig[:k], residual), residual,
                     image_mean=stats.mean(axis=0), image_precision=np.linalg.inv(cov))
