"""Serving: one Predictor for the CLI and the Gradio app, and `python -m ichflax.predict`.

A checkpoint's model spec carries the task, label names and preprocessing (windows, stored
size, image size, backbone variant), so a slice here goes through exactly the path it went through
in training: DICOM -> HU -> `dicom.slice_to_uint8` -> `preprocess.model_input`. Research and
education use only; not a medical device.

Usage:
  python -m ichflax.predict FILE_OR_DIR... --checkpoint DIR [--gradcam OUT_DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

import jax
import numpy as np
from flax import nnx
from PIL import Image

from ichflax import gradcam, tasks, xla_cache
from ichflax.data import dicom
from ichflax.models import preprocess
from ichflax.spec import ModelSpec

# Larger than any CT slice (512 x 512 typical, 1024 x 1024 rare); refusing bigger images keeps a
# decompression bomb (a small PNG that decodes to gigabytes) from taking the server down.
MAX_PIXELS = dicom.MAX_PIXELS
THRESHOLD = 0.5
NO_HEMORRHAGE = "no hemorrhage"
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
# A DICOM without the 128-byte preamble starts with its first tag: group 0002 or 0008, little
# endian. Anything else with no "DICM" marker is not DICOM, whatever pydicom's force mode reads.
_RAW_DICOM_STARTS = (b"\x02\x00", b"\x08\x00")
# PIL modes read as grey or colour 8-bit images; others (16-bit, float) carry no window.
_GREY_MODES, _COLOUR_MODES = ("L", "1", "LA"), ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")

Source = Union[str, os.PathLike, bytes, np.ndarray]


class InputError(ValueError):
  """An input that is not one readable CT slice; the message names it and says what to do."""


# Everything a bad input can raise: batch callers report these per item and carry on.
READ_ERRORS = (InputError, dicom.DicomError)


@dataclasses.dataclass
class Slice:
  """One input slice, ready for every model sharing the same preprocessing."""

  name: str
  model_image: np.ndarray  # uint8 (stored_size, stored_size, C): what training stored
  display: np.ndarray  # uint8 (H, W) or (H, W, 3) at input resolution (brain window for DICOM)
  hu: np.ndarray | None = None  # float32 (H, W), DICOM and HU arrays only
  geometry: dicom.SliceGeometry | None = None  # DICOM only: orders a series, no patient tags

  @property
  def shape(self) -> tuple[int, int]:
    return self.display.shape[:2]


@dataclasses.dataclass
class Prediction:
  """Probabilities per RSNA label ("any" = hemorrhage of any type), Grad-CAM and its box."""

  slice: Slice
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


def _read_image(data: bytes, name: str) -> np.ndarray:
  """uint8 (H, W) or (H, W, 3) from PNG/JPEG bytes, refusing oversized or damaged images."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      w, h = img.size
      if w * h > MAX_PIXELS:
        raise InputError(f"{name}: image is {w}x{h} pixels, over the {MAX_PIXELS:,}-pixel limit "
                         "(4096x4096); a CT slice is usually 512x512: downscale it or upload "
                         "the DICOM")
      if img.mode in _GREY_MODES:
        return np.asarray(img.convert("L"))
      if img.mode in _COLOUR_MODES:
        return np.asarray(img.convert("RGB"))
      raise InputError(f"{name}: {img.mode} image (16-bit or float) has no display window; "
                       "upload an 8-bit PNG/JPG or the original DICOM")
  except InputError:
    raise
  except Image.DecompressionBombError:
    raise InputError(f"{name}: image dimensions are far too large (a decompression bomb?); "
                     "upload a CT slice of at most 4096x4096 pixels") from None
  except Exception as e:  # PIL raises many types for damaged files
    raise InputError(f"{name}: damaged or truncated image ({e}); export the slice again") from None


def load_slice(source: Source, name: str | None = None, *,
               windows: Sequence[dicom.Window] = dicom.THREE_WINDOWS,
               stored_size: int = 256) -> Slice:
  """One slice from a path, file bytes, or an array (float: HU; uint8: an image).

  DICOM goes through the data layer (HU, then the training windows); a PNG/JPG is taken as
  already windowed. Raises one of READ_ERRORS naming the input and what to do.
  """
  if isinstance(source, np.ndarray):
    return _from_array(source, name or "array", windows, stored_size)
  if isinstance(source, (bytes, bytearray)):
    data, name = bytes(source), name or "<uploaded file>"
  else:
    name = name or os.fspath(source)
    try:
      data = Path(source).read_bytes()
    except OSError as e:
      raise InputError(f"{name}: cannot read ({e.strerror or e})") from None
  if not data:
    raise InputError(f"{name}: empty file (0 bytes); upload a DICOM, PNG or JPG CT slice")
  if any(data.startswith(magic) for magic in _IMAGE_MAGIC):
    return _from_image(_read_image(data, name), name, windows, stored_size)
  if data[128:132] != b"DICM" and data[:2] not in _RAW_DICOM_STARTS:
    raise InputError(f"{name}: not a DICOM, PNG or JPG file (no DICOM header); upload a CT slice "
                     "as exported by the scanner or PACS (.dcm), or as a PNG/JPG image")
  buf = io.BytesIO(data)
  buf.name = name  # DicomError messages name the file, not a temp path
  hu, geometry = dicom.read_slice(buf)
  return dataclasses.replace(_from_hu(hu, name, windows, stored_size), geometry=geometry)


def _from_array(array: np.ndarray, name: str, windows, stored_size: int) -> Slice:
  if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
    return _from_image(array, name, windows, stored_size)
  if np.issubdtype(array.dtype, np.floating) and array.ndim == 2:
    return _from_hu(array.astype(np.float32), name, windows, stored_size)
  raise InputError(f"{name}: array of {array.dtype} {array.shape}: give float HU (H, W) or "
                   "a uint8 image (H, W) / (H, W, 3)")


def _from_hu(hu: np.ndarray, name: str, windows, stored_size: int) -> Slice:
  return Slice(name, dicom.slice_to_uint8(hu, windows, stored_size),
               dicom.window(hu, *dicom.WINDOWS["brain"]), hu=hu)


def _from_image(image: np.ndarray, name: str, windows, stored_size: int) -> Slice:
  """An 8-bit picture is taken as already windowed: grey as every window, RGB as stored."""
  if min(image.shape[:2]) < 2:
    raise InputError(f"{name}: image is {image.shape[1]}x{image.shape[0]} pixels; too small")
  pil = Image.fromarray(dicom.pad_to_square(image, 0))  # black, as HU are padded with air
  pil = pil.convert("L" if len(windows) == 1 else "RGB")
  pil = pil.resize((stored_size, stored_size), dicom.RESAMPLE)
  return Slice(name, np.asarray(pil).reshape(stored_size, stored_size, -1), image)


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
    from ichflax import checkpoint  # noqa: PLC0415  (orbax only when loading)
    return cls([checkpoint.load_inference(p) for p in paths], **kwargs)

  @property
  def labels(self) -> tuple[str, ...]:
    """Every RSNA label some loaded model predicts, in the tasks.LABELS order."""
    have = {name for spec in self.specs for name in spec.outputs}
    return tuple(name for name in tasks.LABELS if name in have)

  def summary(self) -> str:
    """One line per checkpoint: what it predicts and what data its weights were trained on."""
    return "\n".join(spec.describe() for spec in self.specs)

  def load(self, source: Source, name: str | None = None) -> Slice:
    """One slice prepared as this predictor's checkpoints expect (see `load_slice`)."""
    return load_slice(source, name, windows=self.windows, stored_size=self.stored_size)

  def predict(self, items: Iterable[Source | Slice], *, gradcam_on: bool = True,
              cam_class: str | None = None) -> list[Prediction]:
    """Predictions for each item (paths, bytes, arrays or loaded Slices), batched.

    `cam_class`: the label whose evidence Grad-CAM shows; by default `any` (hemorrhage) when a
    model predicts it, otherwise each slice's most likely subtype. Bad inputs raise; use
    `load` per item first to report and skip them.
    """
    slices = [s if isinstance(s, Slice) else self.load(s) for s in items]
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
    return preprocess.model_input(images, size, variant)

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


# --- series and the command line -------------------------------------------------------------


def order_series(slices: Sequence[Slice]) -> list[list[Slice]]:
  """Groups DICOM slices by series and orders each by ImagePositionPatient (z), then number."""
  groups: dict[str, list[Slice]] = {}
  for s in slices:
    key = s.geometry.series_instance_uid if s.geometry else f"file:{s.name}"
    groups.setdefault(key, []).append(s)

  def position(s: Slice):
    g = s.geometry
    return (g is None or g.position_z is None, g and g.position_z or 0.0,
            g and g.instance_number or 0, s.name)

  return [sorted(group, key=position) for group in groups.values()]


def study_summary(predictions: Sequence[Prediction], threshold: float = THRESHOLD) -> dict:
  """Study probability per label = max over its slices; the slice that carries it is named."""
  probs = {k: max(p.probabilities[k] for p in predictions) for k in predictions[0].probabilities}
  key = "any" if "any" in probs else max(probs, key=probs.get)
  top = max(predictions, key=lambda p: p.probabilities[key])
  return {"slices": len(predictions), "probabilities": probs,
          "hemorrhage_probability": probs.get("any"), "label": decide(probs, threshold),
          "most_suspicious_slice": top.slice.name}


def _expand(args: Sequence[str]) -> list[tuple[str | None, Path]]:
  """(folder it came from or None, file) for each file argument and each file in a folder."""
  out = []
  for arg in args:
    p = Path(arg)
    if p.is_dir():
      out.extend((arg, f) for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith("."))
    else:
      out.append((None, p))
  return out


def _emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m ichflax.predict",
      description="Hemorrhage and subtype probabilities, Grad-CAM and its attention box for CT "
                  "slices (DICOM, PNG, JPG) and folders of series.",
      epilog="One JSON line per slice, one error line per unreadable file, and a study summary "
             "per series when a folder is given. Research and education use only.")
  parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
  parser.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                      help="a checkpoint; repeat for a binary + a subtype checkpoint")
  parser.add_argument("--gradcam", metavar="OUT_DIR", type=Path,
                      help="write a Grad-CAM overlay PNG with the attention box per slice")
  parser.add_argument("--cam-class", default=None, help="label whose evidence Grad-CAM shows")
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--threshold", type=float, default=THRESHOLD)
  args = parser.parse_args(argv)
  from ichflax import checkpoint  # noqa: PLC0415
  try:  # the spec says how to read slices; the weights load only if some slice reads
    specs = [checkpoint.read_spec(p) for p in args.checkpoint]
  except (checkpoint.CheckpointError, OSError) as e:
    parser.exit(2, f"error: {e}\n")
  loaded: list[tuple[str | None, Slice]] = []
  for folder, path in _expand(args.inputs):
    try:
      loaded.append((folder, load_slice(path, windows=specs[0].windows,
                                        stored_size=specs[0].stored_size)))
    except READ_ERRORS as e:
      _emit({"file": str(path), "error": str(e)})
  if not loaded:
    return 1
  try:
    predictor = Predictor.from_checkpoint(*args.checkpoint, batch_size=args.batch_size,
                                          threshold=args.threshold)
  except (checkpoint.CheckpointError, ValueError) as e:
    parser.exit(2, f"error: {e}\n")
  if args.cam_class is not None and args.cam_class not in predictor.labels:
    parser.exit(2, f"error: --cam-class {args.cam_class!r} is not a label of these weights: "
                f"choose one of {', '.join(predictor.labels)}\n")
  if args.gradcam:
    args.gradcam.mkdir(parents=True, exist_ok=True)
  # Loose files go in one batch with no summary; each series of a folder gets its summary.
  folders = sorted({f for f, _ in loaded if f is not None})
  groups = [([s for f, s in loaded if f is None], False)] + [
      (series, True) for folder in folders
      for series in order_series([s for f, s in loaded if f == folder])]
  written = 0  # numbered, so slices with the same file name never overwrite each other's map
  for group, summarise in groups:
    if not group:
      continue
    preds = predictor.predict(group, gradcam_on=True, cam_class=args.cam_class)
    for i, pred in enumerate(preds):
      record = pred.to_json()
      if summarise and pred.slice.geometry is not None:
        record.update(slice_index=i, position_z=pred.slice.geometry.position_z)
      if args.gradcam:
        written += 1
        out = args.gradcam / f"{written:04d}_{Path(pred.slice.name).stem}_gradcam.png"
        Image.fromarray(gradcam.overlay(pred.slice.display, pred.cam, pred.box)).save(out)
        record["gradcam"] = str(out)
      _emit(record)
    if summarise:
      _emit({"study": study_summary(preds, args.threshold)})
  return 0


if __name__ == "__main__":
  xla_cache.enable()
  sys.exit(main())
