"""Serving: one Predictor, for the CLI (`ichflax.predict`) and the Gradio app (`demo/`).

A checkpoint's model spec carries the task, label names and preprocessing (windows, stored
size, image size, backbone variant), so a slice here goes through exactly the path it went through
in training: `ichflax.data.inputs` -> `preprocess.model_input`. Research and education use only;
not a medical device.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence

import jax
import numpy as np
from flax import nnx

from ichflax import gradcam, tasks
from ichflax.data import inputs
from ichflax.models import preprocess
from ichflax.spec import ModelSpec

THRESHOLD = 0.5
NO_HEMORRHAGE = "no hemorrhage"


@dataclasses.dataclass
class Prediction:
  """Probabilities per RSNA label ("any" = hemorrhage of any type), Grad-CAM and its box."""

  slice: inputs.Slice
  probabilities: dict[str, float]
  label: str
  cam_class: str | None = None
  cam: np.ndarray | None = None  # float32 (H, W) in [0, 1], at the input's resolution
  box: gradcam.Box | None = None

  @property
  def hemorrhage_probability(self) -> float | None:
    return self.probabilities.get("any")

  def to_json(self) -> dict:
    out = {"file": self.slice.name, "probabilities": self.probabilities,
           "hemorrhage_probability": self.hemorrhage_probability, "label": self.label}
    if self.cam is not None:
      out.update(cam_class=self.cam_class, box=self.box and self.box.as_list(),
                 box_kind=gradcam.BOX_KIND, height=self.slice.shape[0], width=self.slice.shape[1])
    return out


def decide(probabilities: dict[str, float], threshold: float = THRESHOLD) -> str:
  """One label for people: no hemorrhage, or the most likely subtype (or just hemorrhage)."""
  subtypes = {k: v for k, v in probabilities.items() if k in tasks.SUBTYPES}
  if probabilities.get("any", 1.0) < threshold:
    return NO_HEMORRHAGE
  return max(subtypes, key=subtypes.get) if subtypes else "hemorrhage"


def _unsquare(square: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """The inverse of `dicom.pad_to_square`: the centred (H, W) region of a square map."""
  h, w = shape
  side = square.shape[0]
  top, left = (side - h) // 2, (side - w) // 2
  return square[top:top + h, left:left + w]


class Predictor:
  """Probabilities and Grad-CAM for CT slices from one or more checkpoints.

  One multilabel checkpoint (any + five subtypes) is the usual case; a binary and a subtype
  checkpoint together work too (`any` from the first, subtypes from the second). Slices are
  batched, padded to a power of two so a few compiled shapes serve every batch size.
  """

  def __init__(self, models: Sequence[tuple[nnx.Module, ModelSpec]], *, batch_size: int = 8,
               threshold: float = THRESHOLD):
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
    self.threshold = threshold
    self._runs = [_compile(model, spec) for model, spec in models]

  @classmethod
  def from_checkpoint(cls, *paths: str | os.PathLike, **kwargs) -> Predictor:
    """Loads each checkpoint (a step dir, a CheckpointManager dir or a training workdir)."""
    from ichflax import checkpoint  # Orbax only when loading
    return cls([checkpoint.load_inference(p) for p in paths], **kwargs)

  @property
  def labels(self) -> tuple[str, ...]:
    """Every RSNA label some loaded model predicts, in the tasks.LABELS order."""
    have = {name for spec in self.specs for name in spec.outputs}
    return tuple(name for name in tasks.LABELS if name in have)

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
    cam_run, cam_index = self._cam_target(cam_class) if gradcam_on else (None, -1)
    probs: list[dict[str, float]] = [{} for _ in slices]
    cams = [None] * len(slices)
    for start in range(0, len(slices), self.batch_size):
      chunk = slices[start:start + self.batch_size]
      images = _pad_batch(np.stack([s.model_image for s in chunk]))
      for i, run in enumerate(self._runs):
        if i == cam_run:
          p, cam = run.with_cam(images, np.full(len(images), cam_index, np.int32))
          cams[start:start + len(chunk)] = list(np.asarray(cam[:len(chunk)]))
        else:
          p = run.plain(images)
        for row, values in zip(probs[start:start + len(chunk)], np.asarray(p)):
          row.update({k: float(v) for k, v in zip(run.labels, values)})
    out = []
    for s, p, cam in zip(slices, probs, cams):
      pred = Prediction(s, {k: p[k] for k in tasks.LABELS if k in p}, decide(p, self.threshold))
      if cam is not None:
        full = _unsquare(gradcam.upsample(cam, (max(s.shape),) * 2), s.shape)
        pred.cam, pred.box = full, gradcam.attention_box(full)
        pred.cam_class = cam_class or (
            "any" if cam_index >= 0 else max(
                (k for k in self._runs[cam_run].labels), key=lambda k: p[k]))
      out.append(pred)
    return out

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


@dataclasses.dataclass
class _Run:
  labels: tuple[str, ...]
  plain: Callable
  with_cam: Callable


def _compile(model: nnx.Module, spec: ModelSpec) -> _Run:
  """Jitted probabilities, and probabilities + Grad-CAM, for one model (state captured once)."""
  graphdef, state = nnx.split(model)
  task = tasks.get_task(spec.task)
  size, variant = spec.image_size, spec.variant

  def inputs(images):
    return preprocess.model_input(images, size, variant, resize=spec.resize,
                                  normalization=spec.normalization)

  @jax.jit
  def plain(state, images):
    m = nnx.merge(graphdef, state)
    return task.probabilities(m(inputs(images)))

  @jax.jit
  def with_cam(state, images, class_index):
    m = nnx.merge(graphdef, state)
    logits, cam = gradcam.logits_and_cam(m, inputs(images), class_index)
    return task.probabilities(logits), cam

  return _Run(spec.outputs, lambda images: plain(state, images),
              lambda images, index: with_cam(state, images, index))


def _pad_batch(images: np.ndarray) -> np.ndarray:
  """Pads the batch axis to the next power of two, so only log2(batch) shapes compile."""
  n = len(images)
  target = 1 << (n - 1).bit_length()
  if target == n:
    return images
  return np.concatenate([images, np.zeros((target - n,) + images.shape[1:], images.dtype)])


