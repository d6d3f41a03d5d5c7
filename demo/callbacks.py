"""What the page does: read uploads, predict, render windows and Grad-CAM, page through a series.

Every event returns a message for the page instead of raising: a bad upload gets a sentence that
says what was wrong and what to do, and the server keeps serving. Nothing here logs or returns a
DICOM tag beyond the geometry that orders a series.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from demo import held, summary, uploads
from ichflax import tasks
from ichflax.data import image, inputs, sources
from ichflax.data.items import Item, Problem
from ichflax.serving import gradcam
from ichflax.serving import predictor as predictor_lib
from ichflax.trust import verdict

log = logging.getLogger("ichflax.demo")
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
TRUTH_FILE = "truth.json"  # example file -> its true subtypes, written by demo.make_examples
WINDOW_NAMES = ("brain", "subdural", "bone")
TABLE_HEADERS = summary.TABLE_HEADERS
# A series' rendered slices are kept per browser session this long, then dropped.
SERIES_TTL_S = 900
SERIES_EXPIRED = (f"The slices of this series are no longer kept (they are dropped "
                  f"{SERIES_TTL_S // 60} minutes after the upload, or sooner when the server "
                  "needs the memory for newer uploads): upload the series again to browse it.")
NO_WEIGHTS = (
    "**No model weights are loaded**, so the page shows the windows but no probabilities. "
    "The demo weights live in `checkpoints/` of the repository; or train your own with "
    "`python -m ichflax.train --task multilabel --workdir runs/demo` and start the app with "
    "`python app.py --checkpoint runs/demo` (or set `ICHFLAX_CHECKPOINT=runs/demo`).")
# Slices decoded at a time when no model is loaded (with one, the predictor's batch size).
BATCH = 8
# (fraction done, what is being done): gr.Progress, so a long series shows how far it got.
Notify = Callable[[float, str], object]


@dataclasses.dataclass
class SliceView:
  """One analysed slice, kept compactly in the session so the slider can re-render it."""

  name: str
  picture: np.ndarray | None  # uint8 as uploaded (PNG/JPG only; HU are shown through windows)
  hu: np.ndarray | None  # int16 HU (DICOM and NIfTI)
  cam: np.ndarray | None  # uint8 Grad-CAM, 255 = peak
  box: gradcam.Box | None
  probabilities: dict[str, float]
  label: str
  position_z: float | None
  series: int = 0  # which uploaded series (by SeriesInstanceUID) it belongs to
  status: str = verdict.OK
  reason: str | None = None
  note: str | None = None  # how the file was read when it did not say (scope.note)
  thresholds: dict[str, float] = dataclasses.field(default_factory=dict)  # operating points
  # A sequence stage's answer: `probabilities` are its refined numbers, these the slice model's.
  series_model: bool | None = None
  slice_probabilities: dict[str, float] | None = None

  released: bool = False  # dropped by the memory budget (`demo.held`): upload again to browse

  @property
  def nbytes(self) -> int:
    """What holding this view costs (its pixels)."""
    return sum(a.nbytes for a in (self.picture, self.hu, self.cam) if a is not None)

  def release(self) -> None:
    """Drops the pixels (the memory budget needs them); the view then says to upload again."""
    self.picture = self.hu = self.cam = None
    self.released = True

  @property
  def display(self) -> np.ndarray:
    """uint8 at input resolution: the picture, or the brain window of HU (made when shown)."""
    return self.picture if self.hu is None else image.window(self.hu, *image.WINDOWS["brain"])

  @classmethod
  def of(cls, s: inputs.Slice, p: predictor_lib.Prediction | None, series: int = 0) -> SliceView:
    cam = None if p is None or p.cam is None else np.rint(p.cam * 255).astype(np.uint8)
    return cls(s.label, s.picture, None if s.hu is None else np.rint(s.hu).astype(np.int16), cam,
               p and p.box, p.probabilities if p else {}, p.label if p else "",
               s.geometry.position_z if s.geometry else None, series,
               p.status if p else verdict.OK, p and p.reason, p and p.note,
               p.thresholds if p else {}, p and p.series_model, p and p.slice_probabilities)

  def shows(self, reveal: bool = False) -> bool:
    return verdict.shows(self.status, reveal)


@dataclasses.dataclass
class Result:
  """Everything one event shows; `ui` maps the fields onto components in this order."""

  message: str
  hemorrhage: dict | None = None
  subtypes: dict | None = None
  overlay: np.ndarray | None = None
  windows: tuple = (None, None, None)
  table: list | None = None
  slider: dict | None = None  # {"maximum": n - 1, "value": i} for a series, None for one slice
  views: list | None = None
  plot: object = None  # pandas DataFrame for gr.LinePlot: the shown slice's series


def render(view: SliceView, reveal: bool = False) -> dict:
  """The per-slice panels: labels, the Grad-CAM overlay with its box, and the three windows.

  A slice that may not show probabilities (out of scope, or out of domain unless revealed) gets
  its windows only: no labels, no Grad-CAM.
  """
  if view.hu is not None:
    windows = tuple(image.window(view.hu, *image.WINDOWS[w]) for w in WINDOW_NAMES)
  else:  # a PNG/JPG carries no HU: show it as uploaded in the first panel
    windows = (view.display, None, None)
  if not view.shows(reveal):
    return {"hemorrhage": None, "subtypes": None, "overlay": None, "windows": windows}
  probs, points = view.probabilities, view.thresholds
  hemorrhage = None
  if "any" in probs:  # two bars that split at the operating point, as the headline does
    p, t = probs["any"], points.get("any", verdict.THRESHOLD)
    e = verdict.evidence(p, t)
    hemorrhage = {f"hemorrhage: P {p:.2f} {'≥' if p >= t else '<'} threshold {t:.2f}": e,
                  "no hemorrhage": 1 - e}
  subtypes = {f"{k}: P {v:.2f} {'≥' if v >= points.get(k, verdict.THRESHOLD) else '<'} "
              f"{points.get(k, verdict.THRESHOLD):.2f}":
              verdict.evidence(v, points.get(k, verdict.THRESHOLD))
              for k, v in probs.items() if k in tasks.SUBTYPES} or None
  overlay = None
  if view.cam is not None:
    overlay = gradcam.overlay(view.display, view.cam / 255.0, view.box)
  return {"hemorrhage": hemorrhage, "subtypes": subtypes, "overlay": overlay, "windows": windows}


class Demo:
  """The app's callbacks around one Predictor (or none, when no weights were found)."""

  def __init__(self, predictor: predictor_lib.Predictor | None, upload_root: str | Path,
               budget: held.Budget | None = None):
    self.predictor = predictor
    self.uploads = uploads.Ledger(upload_root)
    self.held = budget or held.Budget()  # the slider's views of every visitor, in one budget

  def analyze(self, files: Sequence[str] | None, notify: Notify | None = None,
              reveal: bool = False) -> Result:
    """Upload event: read (and release, so delete) the files, then analyse them.

    `reveal`: also show the probabilities of slices unlike the training data, marked.
    """
    if not files:
      return Result("Upload a CT slice (DICOM, PNG or JPG), several slices of a series, a "
                    "multi-frame DICOM or NIfTI volume, or a zip.")
    try:
      items, problems = uploads.read_uploads(files, self.uploads)
      return self._analyze(items, problems, notify, reveal)
    except Exception as e:  # noqa: BLE001
      return _unexpected(e)
    finally:  # the analysis' decoded slices and batches are freed: give their pages back
      held.return_memory()

  def example(self, name: str, reveal: bool = False) -> Result:
    """Example click: a phantom file from demo/examples (never deleted)."""
    path = (EXAMPLES_DIR / Path(name or "").name)
    if not name or not path.is_file():
      return Result(f"Example {name!r} is missing; regenerate with `python -m demo.make_examples`.")
    try:
      result = self._analyze([Item(path.name, path.read_bytes())], [], reveal=reveal)
    except Exception as e:  # noqa: BLE001
      return _unexpected(e)
    return dataclasses.replace(result, message=_truth(path.name) + result.message)

  def show(self, index, views: list[SliceView] | None, reveal: bool = False) -> dict:
    """Slider or reveal event: re-render one slice, its series' plot and every verdict."""
    if not views or any(v.released for v in views):
      return {"message": SERIES_EXPIRED, "hemorrhage": None, "subtypes": None, "overlay": None,
              "windows": (None, None, None), "table": None, "plot": None}
    focus = int(np.clip(int(index or 0), 0, len(views) - 1))
    return {**render(views[focus], reveal), "message": self._message(views, focus, reveal),
            "table": summary.table(views, reveal) if len(views) > 1 else None,
            "plot": self._plot(views, focus, reveal)}

  def _message(self, views: list[SliceView], focus: int, reveal: bool) -> str:
    if not self.predictor:
      return f"Showing **{views[focus].name}** ({len(views)} slice{'s' * (len(views) > 1)})."
    return summary.message(views, focus, self.predictor.thresholds_for(views),
                           self.predictor.trained_on(), reveal)

  def _plot(self, views: list[SliceView], focus: int, reveal: bool):
    return self.predictor and summary.plot(views, focus, self.predictor.thresholds_for(views),
                                           reveal)

  def _analyze(self, items: list[Item], problems: list[Problem],
               notify: Notify | None = None, reveal: bool = False) -> Result:
    """Reads the items into series and analyses them one batch at a time.

    Only a batch of decoded slices is in memory at once; what stays per slice is its compact
    view (int16 HU and a uint8 map) for the slider.
    """
    start = time.perf_counter()
    windows, size = ((self.predictor.windows, self.predictor.stored_size) if self.predictor
                     else (image.THREE_WINDOWS, 256))
    reading = sources.read(items, windows=windows, stored_size=size,
                           max_slices=uploads.MAX_SLICES)
    problems = problems + reading.problems
    views, model_s, done, total = [], 0.0, 0, reading.slices
    for group in reading.series:  # one verdict per series, never across them
      number = len({v.series for v in views})  # series numbered as they give slices
      # A model that reads neighbours or whole series gets each series in one call.
      step = ((len(group.entries) or 1) if self.predictor.reads_series else
              self.predictor.batch_size) if self.predictor else BATCH
      for slices, bad in group.batches(step):
        if notify is not None:  # not `if notify`: gr.Progress has a length, 0 at first
          notify(done / total, f"slices {done + 1}-{done + len(slices) + len(bad)} of {total}")
        problems += bad
        preds = [None] * len(slices)
        if self.predictor and slices:
          model_start = time.perf_counter()
          preds = self.predictor.predict(slices)
          model_s += time.perf_counter() - model_start
        views += [SliceView.of(s, p, number) for s, p in zip(slices, preds)]
        done += len(slices) + len(bad)
    skipped = _skipped(problems)
    if not views:
      return Result("**Nothing could be analysed.**" + skipped)
    focus = _most_suspicious(views, reveal)
    shown = self.show(focus, views, reveal)
    self.held.hold(views)  # after showing: the newest upload is never the one released
    total_s = time.perf_counter() - start
    message = shown["message"] + _latency(len(views), model_s, total_s, self.predictor)
    if not self.predictor:
      message = NO_WEIGHTS + "\n\n" + message
    several = len(views) > 1
    return Result(message + skipped, shown["hemorrhage"], shown["subtypes"], shown["overlay"],
                  shown["windows"], shown["table"],
                  {"maximum": len(views) - 1, "value": focus} if several else None, views,
                  shown["plot"])


def _truth(name: str) -> str:
  """The example's true labels, shown above the answer, so a visitor can judge the model."""
  truth_file = EXAMPLES_DIR / TRUTH_FILE
  if not truth_file.is_file():
    return ""
  labels = json.loads(truth_file.read_text()).get(name)
  if labels is None:
    return ""
  said = ", ".join(labels) if labels else "no hemorrhage"
  return f"**Truth (this synthetic example's own labels):** {said}.\n\n"


def _most_suspicious(views: list[SliceView], reveal: bool) -> int:
  """The slice with the highest P(hemorrhage) among those that may show it (else the first)."""
  scores = [v.probabilities.get("any", max(v.probabilities.values(), default=0.0))
            if v.shows(reveal) else -1.0 for v in views]
  return int(np.argmax(scores))


def _latency(n: int, model_s: float, total_s: float, predictor) -> str:
  model = (f"model + Grad-CAM {1000 * model_s:.0f} ms for {n} slice{'s' * (n > 1)}; "
           if predictor else "")
  return f"\n\nLatency: {model}total {1000 * total_s:.0f} ms (CPU)."


def _skipped(problems: list[str]) -> str:
  if not problems:
    return ""
  return "\n\n**Skipped:**\n" + "\n".join(f"- {p}" for p in problems)


def _unexpected(e: Exception) -> Result:
  """A bug, not a bad file: log where it happened (no message: it could quote file content)."""
  log.error("unexpected %s in the demo:\n%s", type(e).__name__,
            "".join(traceback.format_tb(e.__traceback__)))
  return Result(f"**Something went wrong on our side** ({type(e).__name__}); the upload was "
                "discarded and the app keeps running. Try another file, or report the issue.")
