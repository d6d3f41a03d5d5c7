"""Serving: one Predictor, for the CLI (`ichflax.predict`) and the Gradio app (`demo/`).

A checkpoint's model spec carries the task, label names and preprocessing (windows, stored
size, image size, backbone variant), so a slice here goes through exactly the path it went through
in training: `ichflax.data.inputs` -> `preprocess.model_input`. Research and education use only;
not a medical device.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from flax import nnx

from ichflax import tasks
from ichflax.data import context, image, inputs
from ichflax.models import inference, sequence
from ichflax.serving import gradcam
from ichflax.spec import ModelSpec
from ichflax.trust import calibration, scope, verdict
from ichflax.trust.domain import DomainModel
from ichflax.trust.verdict import OK, OUT_OF_DOMAIN, OUT_OF_SCOPE, decide, shows


@dataclasses.dataclass
class Prediction:
  """One slice's status, probabilities per RSNA label ("any": hemorrhage), Grad-CAM and box.

  `status` is ok, out_of_scope (not a head CT slice: no probabilities at all) or out_of_domain
  (unlike the training data: probabilities computed but withheld unless a caller reveals them);
  `reason` says why when not ok.
  """

  slice: inputs.Slice
  probabilities: dict[str, float]
  label: str
  cam_class: str | None = None
  cam: np.ndarray | None = None  # float32 (H, W) in [0, 1], at the input's resolution
  box: gradcam.Box | None = None
  status: str = OK
  reason: str | None = None
  domain_score: float | None = None  # out-of-domain score over the threshold (1 = threshold)
  note: str | None = None  # how the input was read when its file did not say (`scope.note`)
  thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
  # 2.5D models: how many distinct slices of its series the input was read with (None: the
  # models read one slice). Sequence stage: whether `probabilities` are its refined numbers,
  # and the slice model's own (`slice_probabilities`) before it.
  context: int | None = None
  series_model: bool | None = None
  slice_probabilities: dict[str, float] | None = None

  @property
  def hemorrhage_probability(self) -> float | None:
    return self.probabilities.get("any")

  @property
  def name(self) -> str:
    return self.slice.name

  def shows(self, reveal: bool = False) -> bool:
    return shows(self.status, reveal)

  def to_json(self, reveal: bool = False) -> dict:
    """The schema of docs/serving.md: status, reason when not ok, probabilities when shown."""
    out = {"file": self.slice.name, "status": self.status}
    if self.reason:
      out["reason"] = self.reason
    if self.note:
      out["note"] = self.note
    if self.domain_score is not None:
      out["domain_score"] = round(self.domain_score, 3)
    if not self.shows(reveal):
      return out
    if self.status != OK:
      out["revealed"] = True  # shown on request although the input is unlike the training data
    out.update(verdict.numbers(self.probabilities, self.thresholds), label=self.label)
    if self.context is not None:
      out["context"] = self.context
    if self.series_model is not None:
      out["series_model"] = self.series_model
      if self.series_model:
        out["slice_probabilities"] = verdict.numbers(self.slice_probabilities)["probabilities"]
    if self.cam is not None:
      out.update(cam_class=self.cam_class, box=self.box and self.box.as_list(),
                 box_kind=gradcam.BOX_KIND, height=self.slice.shape[0], width=self.slice.shape[1])
    return out


class Judged(Protocol):
  """What a series summary reads from each slice: a Prediction, or the demo's kept view."""

  name: str
  probabilities: dict[str, float]
  status: str

  def shows(self, reveal: bool = False) -> bool: ...


def labels_of(specs: Sequence[ModelSpec]) -> tuple[str, ...]:
  """Every RSNA label some of these models predict, in the tasks.LABELS order (known before the
  weights load)."""
  have = {name for spec in specs for name in spec.outputs}
  return tuple(name for name in tasks.LABELS if name in have)


class Predictor:
  """Probabilities and Grad-CAM for CT slices from one or more checkpoints.

  One multilabel checkpoint (any + five subtypes) is the usual case; a binary and a subtype
  checkpoint together work too (`any` from the first, subtypes from the second). Slices are
  batched, padded to a power of two so a few compiled shapes serve every batch size.
  """

  def __init__(self, models: Sequence[tuple[nnx.Module, ModelSpec]], *, batch_size: int = 8,
               threshold: float | None = None,
               domains: Sequence[DomainModel | None] | None = None, check_scope: bool = True,
               series_models: Sequence[tuple[nnx.Module, sequence.SeriesSpec] | None] = ()):
    if not models:
      raise ValueError("give at least one (model, spec) pair")
    self.models = list(models)
    self.specs = [spec for _, spec in models]
    first = self.specs[0]
    for spec in self.specs[1:]:
      if (spec.stored_size, spec.windows) != (first.stored_size, first.windows):
        raise ValueError("the checkpoints were trained on different preprocessing (stored size "
                         "or windows); use checkpoints made from the same dataset")
    labels = [name for spec in self.specs for name in spec.outputs]
    if len(set(labels)) != len(labels):
      raise ValueError(f"the checkpoints overlap in their labels ({', '.join(labels)}): load one "
                       "multilabel checkpoint, or one binary plus one subtype checkpoint")
    self.windows = first.windows
    self.stored_size = first.stored_size
    self.batch_size = batch_size
    # The operating point per label: the checkpoints' own (fitted on validation), else 0.5;
    # `threshold` overrides them all at serving.
    self.thresholds = {k: v for spec in self.specs for k, v in spec.operating_points().items()}
    if threshold is not None:
      if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
      self.thresholds = dict.fromkeys(self.thresholds, float(threshold))
    self.domains = list(domains) if domains is not None else [None] * len(self.models)
    self.check_scope = check_scope
    self._runs = [inference.compile_model(model, spec) for model, spec in models]
    # Each checkpoint's sequence stage, compiled, or None; its operating points apply to the
    # numbers it refines.
    self._refiners = [s and sequence.Refiner(*s) for s in series_models] or [None] * len(models)
    self.series_thresholds = dict(self.thresholds)
    for r in self._refiners:
      if r is not None:
        self.series_thresholds.update(r.spec.operating_points() if threshold is None else {})

  @classmethod
  def from_checkpoint(cls, *paths: str | os.PathLike, **kwargs) -> Predictor:
    """Loads each checkpoint (a step dir, a CheckpointManager dir or a training workdir)."""
    from ichflax import checkpoint  # Orbax only when loading
    models = [checkpoint.load_inference(p) for p in paths]
    domains = []
    for p, (_, spec) in zip(paths, models):
      arrays = checkpoint.read_domain(p) if spec.domain_threshold is not None else None
      domains.append(arrays and DomainModel.from_arrays(
          arrays, spec.domain_threshold, spec.domain_percentile, spec.domain_image_threshold,
          spec.domain_picture_threshold))
    series = [checkpoint.read_series(p) for p in paths]
    return cls(models, domains=domains, series_models=series, **kwargs)

  @property
  def domain_checked(self) -> bool:
    """Whether every loaded checkpoint carries its training-domain statistics."""
    return all(d is not None for d in self.domains)

  @property
  def labels(self) -> tuple[str, ...]:
    """Every RSNA label some loaded model predicts, in the tasks.LABELS order."""
    return labels_of(self.specs)

  def summary(self) -> str:
    """One line per checkpoint: what it predicts and what data its weights were trained on."""
    return "\n".join(spec.describe() for spec in self.specs)

  def load(self, source: inputs.Source, name: str | None = None) -> inputs.Slice:
    """One slice prepared as this predictor's checkpoints expect (see `inputs.load_slice`)."""
    return inputs.load_slice(source, name, windows=self.windows, stored_size=self.stored_size)

  def predict(self, items: Iterable[inputs.Source | inputs.Slice], *, gradcam_on: bool = True,
              cam_class: str | None = None) -> list[Prediction]:
    """Predictions for each item (paths, bytes, arrays or loaded Slices), batched.

    `cam_class`: the label whose evidence Grad-CAM shows; by default `any` (hemorrhage) when a
    model predicts it, otherwise each slice's most likely subtype. Bad inputs raise; use
    `load` per item first to report and skip them.
    """
    slices = [s if isinstance(s, inputs.Slice) else self.load(s) for s in items]
    refusals = [scope.check(s) if self.check_scope else None for s in slices]
    judged = [i for i, r in enumerate(refusals) if r is None]
    cam = _CamTarget(*self._cam_target(cam_class), cam_class) if gradcam_on else None
    # Series order over the judged slices: 2.5D inputs read their neighbours from it, the
    # sequence stage reads whole series along it.
    series = [np.asarray(judged, np.int64)[m] for m in context.series_order(
        *_series_keys([slices[i] for i in judged]))]
    table = context.neighbours(series, len(slices), self._context)
    computed: dict[int, _Outputs] = {}
    for start in range(0, len(judged), self.batch_size):
      chunk = judged[start:start + self.batch_size]
      computed.update(zip(chunk, self._run_batch(slices, chunk, table, cam)))
    refined = self._refine(slices, series, computed)
    return [self._prediction(s, refusals[i], computed.get(i), cam, table[i], refined.get(i))
            for i, s in enumerate(slices)]

  @property
  def _context(self) -> int:
    return max(spec.context for spec in self.specs)

  @property
  def reads_series(self) -> bool:
    """Whether a slice's answer depends on the rest of its series (2.5D or a sequence stage):
    then callers pass a series whole to one `predict` call."""
    return self._context > 1 or any(self._refiners)

  def thresholds_for(self, predictions: Sequence[Prediction]) -> dict[str, float]:
    """The operating points a summary of these predictions uses: the sequence stage's where
    its numbers are shown."""
    return self.series_thresholds if any(p.series_model for p in predictions) else self.thresholds

  def _run_batch(self, slices: list[inputs.Slice], chunk: list[int], table: np.ndarray,
                 cam: _CamTarget | None) -> list[_Outputs]:
    """Every model on one batch: calibrated probabilities, domain scores, the Grad-CAM map."""
    n = len(chunk)
    images = _pad_batch(np.stack([slices[i].model_image for i in chunk]))
    probs: list[dict[str, float]] = [{} for _ in chunk]
    raw: list[tuple[np.ndarray, np.ndarray]] = []
    far = np.zeros((n, 2))  # (features, image statistics) score / threshold, worst over models
    maps: list[np.ndarray | None] = [None] * n
    for r, run in enumerate(self._runs):
      spec, domain = self.specs[r], self.domains[r]
      x = images if spec.context == 1 else _pad_batch(np.stack([context.stack(
          [slices[j].model_image for j in _centred(table[i], spec.context)]) for i in chunk]))
      if cam is not None and r == cam.run:
        logits, pooled, grid = run.with_cam(x, np.full(len(x), cam.index, np.int32))
        maps = list(np.asarray(grid)[:n])
      else:
        logits, pooled = run.plain(x)
      logits, pooled = np.asarray(logits)[:n], np.asarray(pooled)[:n]
      raw.append((logits, pooled))
      values = calibration.probabilities(logits, tasks.get_task(spec.task).activation,
                                         spec.temperatures)
      for p, row in zip(probs, values):
        p.update({k: float(v) for k, v in zip(run.labels, row)})
      if domain is not None:
        # A picture was windowed and resampled by someone else: judged on its shape, not on
        # the HU image statistics (docs/serving.md).
        pictures = np.array([slices[i].hu is None for i in chunk])
        far = np.maximum(far, np.stack(domain.far(pooled, images[:n], pictures), 1))
    return [_Outputs({k: p[k] for k in tasks.LABELS if k in p}, tuple(f.tolist()), m,
                     tuple((z[j], f[j]) for z, f in raw))
            for j, (p, f, m) in enumerate(zip(probs, far, maps))]

  def _refine(self, slices: list[inputs.Slice], series: list[np.ndarray],
              computed: dict[int, _Outputs]) -> dict[int, dict[str, float]]:
    """Each checkpoint's sequence stage over every series of two or more judged slices:
    slice index -> its refined, calibrated probabilities."""
    out: dict[int, dict[str, float]] = {}
    for r, refiner in enumerate(self._refiners):
      if refiner is None:
        continue
      for members in (m for m in series if len(m) > 1):
        logits = np.stack([computed[i].raw[r][0] for i in members])
        pooled = np.stack([computed[i].raw[r][1] for i in members])
        positions = [_position(slices[i].geometry) for i in members]
        refined, _ = refiner(pooled, logits, context.spacing(np.array(positions, np.float64)))
        probs = calibration.probabilities(refined, refiner.spec.activation,
                                          refiner.spec.temperatures)
        for i, row in zip(members.tolist(), probs):
          out.setdefault(i, {}).update(zip(refiner.spec.outputs, map(float, row)))
    return out

  def _prediction(self, s: inputs.Slice, refusal: str | None, out: _Outputs | None,
                  cam: _CamTarget | None, neighbours: np.ndarray,
                  refined: dict[str, float] | None) -> Prediction:
    """One slice's Prediction, built once from its refusal or its models' outputs."""
    if refusal is not None:
      return Prediction(s, {}, "", status=OUT_OF_SCOPE, reason=refusal,
                        thresholds=self.thresholds)
    note = scope.note(s)
    p, status, reason, score = out.probabilities, OK, None, None
    seen = len(set(neighbours.tolist())) if self._context > 1 else None
    if seen == 1:
      note = "; ".join(filter(None, [note, (
          f"read alone: the model reads {self._context} neighbouring slices of a series and "
          "none came with this one, so it was repeated in their place (as at a series' end)")]))
    thresholds, slice_p = self.thresholds, None
    if refined:
      slice_p, p, thresholds = p, {**p, **refined}, self.series_thresholds
    if self.domain_checked:
      score = max(out.far)
      if score > 1.0:
        status, reason = OUT_OF_DOMAIN, self._unlike(*out.far, picture=s.hu is None)
    full = box = shown = None
    if out.cam is not None:
      full = image.unpad(gradcam.upsample(out.cam, (max(s.shape),) * 2), s.shape)
      box = gradcam.attention_box(full)
      shown = cam.name or ("any" if cam.index >= 0 else
                           max(self._runs[cam.run].labels, key=lambda k: p[k]))
    return Prediction(s, p, decide(p, thresholds), cam_class=shown, cam=full, box=box,
                      status=status, reason=reason, domain_score=score, thresholds=thresholds,
                      note=note, context=seen,
                      series_model=bool(refined) if any(self._refiners) else None,
                      slice_probabilities=slice_p)

  def trained_on(self) -> str:
    """What the loaded weights learnt from, in words (for out-of-domain explanations)."""
    return "; ".join(sorted({spec.data or "unrecorded data" for spec in self.specs}))

  def _unlike(self, features: float, image: float, picture: bool) -> str:
    percentile = self.domains[0].percentile
    what = ("its backbone features lie" if features >= image else
            "its shape (head size in the field, air along the edge, one main part, the skull "
            "ring, the outline's fill, tissue inside the skull) lies" if picture else
            "its image statistics (head size in the field of view, bone, tissue brightness, "
            "contrast and texture) lie")
    return (f"this input is unlike the model's training data ({self.trained_on()}): {what} "
            f"{max(features, image):.1f}x as far from the training slices as the "
            f"{percentile:g}th percentile of the validation slices, so the model's "
            "probabilities would be guesses")

  def _cam_target(self, cam_class: str | None) -> tuple[int, int]:
    """(index of the model to differentiate, its output index or -1 for the top class)."""
    wanted = cam_class or "any"
    for i, run in enumerate(self._runs):
      if wanted in run.labels:
        return i, run.labels.index(wanted)
    if cam_class is not None:
      raise ValueError(f"no loaded model predicts {cam_class!r}; choose one of "
                       f"{', '.join(self.labels)}")
    return 0, -1


@dataclasses.dataclass(frozen=True)
class _CamTarget:
  """Which model Grad-CAM differentiates, which of its outputs (-1: each slice's top class),
  and the label a caller asked for (None: the default)."""

  run: int
  index: int
  name: str | None


@dataclasses.dataclass(frozen=True)
class _Outputs:
  """What the models computed for one judged slice."""

  probabilities: dict[str, float]  # calibrated, in the tasks.LABELS order
  far: tuple[float, float]  # (features, image statistics) score / threshold
  cam: np.ndarray | None  # Grad-CAM on the feature-map grid, when asked for
  raw: tuple[tuple[np.ndarray, np.ndarray], ...]  # per model: (logits, pooled features)


def _series_keys(slices: Sequence[inputs.Slice]) -> tuple[list[str], list[float], list[int]]:
  """(series id, position, instance number) per slice for `context.series_order`; a slice with
  no geometry (a picture) is a series of its own."""
  g = [s.geometry for s in slices]
  return ([x.series_instance_uid if x else "" for x in g], [_position(x) for x in g],
          [x.instance_number if x and x.instance_number is not None else -1 for x in g])


def _position(g) -> float:
  return g.position if g is not None and g.position is not None else float("nan")


def _centred(row: np.ndarray, k: int) -> np.ndarray:
  """The k middle entries of a neighbour row (a model reading fewer slices than the widest)."""
  mid = len(row) // 2
  return row[mid - k // 2: mid + k // 2 + 1]


def _pad_batch(images: np.ndarray) -> np.ndarray:
  """Pads the batch axis to the next power of two, so only log2(batch) shapes compile."""
  n = len(images)
  target = 1 << (n - 1).bit_length()
  if target == n:
    return images
  return np.concatenate([images, np.zeros((target - n,) + images.shape[1:], images.dtype)])


