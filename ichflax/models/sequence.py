"""The sequence stage: a series read as a radiologist reads it, slice after slice.

Why: every top RSNA 2019 system refined its slice model with one over the series (1st place:
BiGRU over frozen embeddings and slice probabilities; 2nd: BiLSTM over embeddings and their
differences to the neighbours, stage-1 LB 0.068 -> 0.062). Here: frozen slice embeddings, the
slice model's logits, the slice's place in its series and the series' spacing, through a
LayerNorm, a 1x1 projection and two bidirectional GRU layers. The slice output is a residual on
the slice model's logits, initialised at zero, so an untrained stage gives the slice model's
answer; the series output reads the max over the series' hidden states.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

SPACING_MM = 5.0  # spacing is fed as spacing / 5 mm (RSNA's usual head CT slice)


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
  """What serving needs to rebuild and use a sequence stage, saved as the `series` item."""

  features: int  # slice embedding width (the backbone's pooled features)
  outputs: tuple[str, ...]  # the RSNA labels it refines (the slice model's outputs)
  activation: str  # of the slice model's task: "sigmoid"
  hidden: int = 64
  window: int = 24  # slices per training crop and per serving window
  stride: int = 12  # serving: windows overlap by window - stride slices, outputs averaged
  neighbour_diffs: bool = False  # 2nd place: each embedding with its difference to prev / next
  dropout: float = 0.3  # on the projected slice features, training only
  # Fitted on the validation split's refined outputs (as the slice model's own).
  temperatures: tuple[float, ...] = ()
  thresholds: tuple[float, ...] = ()
  target_sensitivity: float | None = None

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> SeriesSpec:
    names = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k in names}
    for key in ("outputs", "temperatures", "thresholds"):
      d[key] = tuple(d.get(key, ()))
    return cls(**d)

  def operating_points(self) -> dict[str, float]:
    return dict(zip(self.outputs, self.thresholds or (0.5,) * len(self.outputs)))


class SeriesModel(nnx.Module):
  """(embeddings (B, T, D), slice logits (B, T, k), place (B, T, 2), lengths (B,)) ->
  (refined slice logits (B, T, k), series logits (B, k))."""

  def __init__(self, spec: SeriesSpec, *, rngs: nnx.Rngs):
    k, h = len(spec.outputs), spec.hidden
    width = spec.features * (3 if spec.neighbour_diffs else 1) + k + 2
    self.neighbour_diffs = spec.neighbour_diffs
    self.ln_in = nnx.LayerNorm(width, rngs=rngs)
    self.project = nnx.Linear(width, h, rngs=rngs)
    self.dropout = nnx.Dropout(spec.dropout, rngs=rngs)
    self.grus = nnx.List([_bigru(h if i == 0 else 2 * h, h, rngs) for i in range(2)])
    self.slice_out = nnx.Linear(2 * h, k, kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.series_out = nnx.Linear(2 * h, k, rngs=rngs)

  def __call__(self, embeddings: jax.Array, logits: jax.Array, place: jax.Array,
               lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = embeddings.astype(jnp.float32)
    if self.neighbour_diffs:
      x = jnp.concatenate([x, x - _shift(x, lengths, -1), x - _shift(x, lengths, 1)], -1)
    x = jnp.concatenate([x, logits, place], -1)
    x = self.dropout(nnx.gelu(self.project(self.ln_in(x))))
    for gru in self.grus:
      x = gru(x, seq_lengths=lengths)
    valid = jnp.arange(x.shape[1])[None, :, None] < lengths[:, None, None]
    series = self.series_out(jnp.where(valid, x, -jnp.inf).max(axis=1))
    return logits + self.slice_out(x), series


def _bigru(cin: int, h: int, rngs: nnx.Rngs) -> nnx.Bidirectional:
  return nnx.Bidirectional(nnx.RNN(nnx.GRUCell(cin, h, rngs=rngs)),
                           nnx.RNN(nnx.GRUCell(cin, h, rngs=rngs), reverse=True,
                                   keep_order=True))


def _shift(x: jax.Array, lengths: jax.Array, by: int) -> jax.Array:
  """x moved by one slice along T (edges repeat themselves, padding never leaks in)."""
  t = jnp.arange(x.shape[1])
  src = jnp.clip(t[None, :] + by, 0, lengths[:, None] - 1)
  return jnp.take_along_axis(x, src[..., None], axis=1)


def place(n: int, spacing_mm: float) -> np.ndarray:
  """(n, 2) float32: each slice's place in its series (0 first, 1 last) and the series' spacing
  / 5 mm (0 where unknown)."""
  where = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
  gap = spacing_mm / SPACING_MM if np.isfinite(spacing_mm) else 0.0
  return np.stack([where, np.full(n, gap)], -1).astype(np.float32)


def windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
  """[start, end) windows covering n slices: one when the series fits, else overlapping ones of
  `window` slices every `stride`, the last flush with the series' end."""
  if n <= window:
    return [(0, n)]
  starts = list(range(0, n - window + 1, stride))
  if starts[-1] + window < n:
    starts.append(n - window)
  return [(s, s + window) for s in starts]


class Refiner:
  """A sequence stage compiled for serving and evaluation: one series in, refined outputs out.

  Every window is padded to `spec.window` slices, so one program serves every series length;
  a slice's refined logit is the mean over the windows that hold it, the series logit the max
  over windows (a bleed in any window makes the series positive).
  """

  def __init__(self, model: SeriesModel, spec: SeriesSpec):
    self.spec = spec
    model.eval()
    graphdef, state = nnx.split(model)
    self._state = state
    self._apply = jax.jit(lambda state, *args: nnx.merge(graphdef, state)(*args))

  def __call__(self, embeddings: np.ndarray, logits: np.ndarray,
               spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, D), (n, k) -> refined slice logits (n, k) and series logits (k,), float64."""
    n, w = len(logits), self.spec.window
    spans = windows(n, w, self.spec.stride)
    where = place(n, spacing_mm)
    parts = [np.zeros((len(spans), w, a.shape[1]), np.float32)
             for a in (embeddings, logits, where)]
    for i, (a, b) in enumerate(spans):
      for part, values in zip(parts, (embeddings, logits, where)):
        part[i, :b - a] = values[a:b]
    lengths = np.array([b - a for a, b in spans], np.int32)
    slice_out, series_out = (np.asarray(v, np.float64) for v in self._apply(
        self._state, *parts, lengths))
    total, count = np.zeros((n, logits.shape[1])), np.zeros((n, 1))
    for i, (a, b) in enumerate(spans):
      total[a:b] += slice_out[i, :b - a]
      count[a:b] += 1
    return total / count, series_out.max(axis=0)
