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
domain when either score passes its threshold.

PNG/JPG pictures were windowed and resampled by someone else, which shifts those six numbers by
themselves, so a picture's second score is the distance to its nearest training slices
(`Neighbours`: the distribution has a mode per level of the head) in the window-free shape
statistics of `scope.picture_shape` (head fraction, air along the edge, largest part, skull
ring, fill of the outline, tissue inside the skull), taken on the brain window of the same
training slices: a phantom-trained backbone maps many unlike pictures close to its training
features, and this check does not depend on it.

Each threshold is a stated percentile of the validation split's scores (default the 99th), so
about 1-2% of fresh in-domain slices are flagged by design. The arrays (mean, k components, k + 1
variances: about 1 MB at k = 128; the image statistics' mean and precision; up to 2,000 picture
shape rows, ~100 KB) go in the checkpoint item `domain/`; the thresholds and percentile in the
spec. A checkpoint calibrated before the picture statistics existed judges pictures on their
features alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ichflax.trust import scope

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


def picture_statistics(images: np.ndarray) -> np.ndarray:
  """(N, 6) `scope.PictureShape.statistics` of model images' first channel (the brain window,
  or the grey of an uploaded picture)."""
  return np.array([scope.picture_shape(im[..., 0]).statistics() for im in images], np.float64)


class _Thresholded:
  """A score of a few statistics and the threshold above which an input is too far."""

  threshold: float | None

  def score(self, stats: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def far(self, stats: np.ndarray) -> np.ndarray:
    """(N,) score over the threshold: > 1 is too far."""
    return self.score(stats) / self.threshold

  def calibrated(self, stats: np.ndarray, percentile: float):
    """The same model with its threshold at `percentile` of the validation rows' scores."""
    return dataclasses.replace(self, threshold=float(np.percentile(self.score(stats), percentile)))


@dataclasses.dataclass(frozen=True)
class Gaussian(_Thresholded):
  """A full-covariance Gaussian of a few statistics, shrunk towards its diagonal."""

  mean: np.ndarray  # (S,)
  precision: np.ndarray  # (S, S) inverse of the shrunk covariance
  threshold: float | None = None

  @classmethod
  def fit(cls, stats: np.ndarray) -> Gaussian:
    stats = np.asarray(stats, np.float64)
    cov = np.cov(stats, rowvar=False)
    cov = (1 - IMAGE_SHRINK) * cov + IMAGE_SHRINK * np.diag(np.diag(cov))
    cov += 1e-9 * np.eye(len(cov))  # a statistic constant in training must not divide by 0
    return cls(stats.mean(axis=0), np.linalg.inv(cov))

  def score(self, stats: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distance per statistic."""
    c = np.asarray(stats, np.float64) - self.mean
    return np.einsum("ni,ij,nj->n", c, self.precision, c) / c.shape[1]


@dataclasses.dataclass(frozen=True)
class Neighbours(_Thresholded):
  """Distance to the training rows' nearest neighbours, for statistics whose training
  distribution has several modes (a picture's shape differs at the vertex, mid-brain and skull
  base: one Gaussian would be as wide as all three and pass what lies between them)."""

  points: np.ndarray  # (M, S) training rows over `scale`
  scale: np.ndarray  # (S,) each statistic's training spread
  threshold: float | None = None

  K = 5
  MAX_POINTS = 2000  # a stride of the training rows: ~100 KB in the checkpoint

  @classmethod
  def fit(cls, stats: np.ndarray) -> Neighbours:
    stats = np.asarray(stats, np.float64)
    # A robust spread (the interquartile range): the tails (vertex, skull base) must not widen
    # the typical slice's neighbourhood; floored so a near-constant statistic cannot dominate.
    q1, q3 = np.percentile(stats, [25, 75], axis=0)
    scale = np.maximum((q3 - q1) / 1.349, 0.02)
    step = max(1, int(np.ceil(len(stats) / cls.MAX_POINTS)))
    return cls(stats[::step] / scale, scale)

  def score(self, stats: np.ndarray) -> np.ndarray:
    """(N,) distance to the K-th nearest training row, in training spreads."""
    x = np.asarray(stats, np.float64) / self.scale
    d = np.sqrt(((x[:, None, :] - self.points[None]) ** 2).sum(-1))
    k = min(self.K, len(self.points)) - 1
    return np.partition(d, k, axis=1)[:, k]


@dataclasses.dataclass(frozen=True)
class DomainModel:
  """Low-rank + isotropic Gaussian of training features, the Gaussian of the training images'
  statistics (`image`), the nearest training picture shapes (`picture`), and the thresholds."""

  mean: np.ndarray  # (D,)
  components: np.ndarray  # (D, k), orthonormal columns
  variances: np.ndarray  # (k,) along the components
  residual_variance: float  # per dimension, off the components
  threshold: float | None = None  # scores above it are out of domain
  percentile: float | None = None  # of the validation scores that set every threshold
  image: Gaussian | None = None  # of `image_statistics`: DICOM / HU inputs
  picture: Neighbours | None = None  # of `picture_statistics`: PNG/JPG pictures

  def far(self, features: np.ndarray, images: np.ndarray, pictures: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """(features' score / threshold, the image's score / its threshold): > 1 is too far.

    `pictures`: (N,) bool, which inputs are 8-bit pictures (judged on their shape statistics,
    or, without them, on their features alone: second score 0).
    """
    second = np.zeros(len(images))
    hu = ~np.asarray(pictures, bool)
    if hu.any():
      second[hu] = self.image.far(image_statistics(images[hu]))
    if self.picture is not None and (~hu).any():
      second[~hu] = self.picture.far(picture_statistics(images[~hu]))
    return self.score(features) / self.threshold, second

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
                 validation_pictures: np.ndarray, percentile: float = PERCENTILE
                 ) -> DomainModel:
    """This model with every threshold at `percentile` of the validation split's scores."""
    return dataclasses.replace(
        self, threshold=float(np.percentile(self.score(validation_features), percentile)),
        image=self.image.calibrated(validation_stats, percentile),
        picture=self.picture.calibrated(validation_pictures, percentile),
        percentile=float(percentile))

  def arrays(self) -> dict[str, np.ndarray]:
    """The checkpoint item's content (the thresholds live in the spec)."""
    f32 = np.float32  # half the bytes on disk; served in float64
    return {"mean": self.mean.astype(f32), "components": self.components.astype(f32),
            "variances": self.variances.astype(f32),
            "residual_variance": np.float32(self.residual_variance),
            "image_mean": self.image.mean, "image_precision": self.image.precision,
            "picture_points": self.picture.points, "picture_scale": self.picture.scale}

  @classmethod
  def from_arrays(cls, arrays: dict, threshold: float | None, percentile: float | None,
                  image_threshold: float | None, picture_threshold: float | None = None
                  ) -> DomainModel:
    f64 = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    picture = None
    if picture_threshold is not None and "picture_points" in f64:
      picture = Neighbours(f64["picture_points"], f64["picture_scale"], picture_threshold)
    return cls(f64["mean"], f64["components"], f64["variances"],
               float(f64["residual_variance"]), threshold, percentile,
               Gaussian(f64["image_mean"], f64["image_precision"], image_threshold), picture)


def fit(features: np.ndarray, stats: np.ndarray, pictures: np.ndarray,
        components: int = COMPONENTS) -> DomainModel:
  """Probabilistic PCA of (N, D) training features (maximum likelihood), the Gaussian of the
  training images' statistics (`image_statistics` rows) and their shapes' neighbours
  (`picture_statistics` rows)."""
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
  return DomainModel(mean, vt[:k].T, np.maximum(eig[:k], residual), residual,
                     image=Gaussian.fit(stats), picture=Neighbours.fit(pictures))
