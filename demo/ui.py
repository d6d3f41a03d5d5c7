"""The page: upload, notice and model card, probabilities, Grad-CAM, windows, series slider.

Two small component tweaks keep the privacy promise: slices go back to the browser as data:
URLs, never as files in Gradio's cache, and uploads reach the callback as their own paths so the
callback can delete them at once.
"""

from __future__ import annotations

import base64
import io

import gradio as gr
import numpy as np
from gradio.data_classes import ImageData, ListFiles
from PIL import Image

from demo import callbacks, summary, uploads
from ichflax.data import image

TITLE = "ichflax — intracranial hemorrhage on head CT"
NOTICE = (
    "**Research and education use only — not a medical device.** Do not use it to diagnose or "
    "treat anyone. Uploads are read in memory and deleted after each request; DICOM patient "
    "tags (name, ID, dates, institution …) are never shown, logged or kept.")
EXAMPLES = (  # (file in demo/examples, label)
    ("subdural.dcm", "Subdural (DICOM)"),
    ("epidural.dcm", "Epidural (DICOM)"),
    ("intraparenchymal.dcm", "Intraparenchymal (DICOM)"),
    ("subarachnoid.dcm", "Subarachnoid (DICOM)"),
    ("intraventricular.dcm", "Intraventricular (DICOM)"),
    ("normal.dcm", "No hemorrhage (DICOM)"),
    ("series.zip", "A series of 8 slices (zip)"),
    ("subdural.png", "Subdural (PNG, 3 windows)"),
    ("subdural_grey.png", "Subdural (PNG, grey brain window)"),
)
CSS = """
#notice {border-left: 6px solid #d97706; background: #fffbeb; padding: 6px 14px;
         border-radius: 6px; color: #1f2937}
#notice p {margin: 4px 0}
#card {font-size: 0.9em}
#message {min-height: 3em}
#overlay img, .window img {width: 100%; height: 100%; object-fit: contain}
"""
# Uploads and example clicks share one queue of model runs; see docs/serving.md for why two.
ANALYSES = 2


def inline_image(**kwargs) -> gr.Image:
  """gr.Image that sends its picture inline (data: URL), so no slice lands in Gradio's cache."""
  image = gr.Image(**kwargs)
  image.postprocess = _inline_png  # per instance: a subclass would make gradio write a .pyi
  return image


def _inline_png(value: np.ndarray | None) -> ImageData | None:
  if value is None:
    return None
  buf = io.BytesIO()
  Image.fromarray(np.asarray(value, np.uint8)).save(buf, "PNG")
  return ImageData(url="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
                   orig_name="slice.png", mime_type="image/png")


def upload_files(**kwargs) -> gr.File:
  """gr.File handing the callback the uploads' own paths, which the callback deletes.

  gradio 6.31's gr.File makes (and never removes) an empty temp file per upload when it hands
  the callback a path; returning the path it already has avoids that leftover.
  """
  files = gr.File(**kwargs)
  files.preprocess = _upload_paths
  return files


def _upload_paths(payload) -> list[str] | None:
  if payload is None:
    return None
  return [f.path for f in (payload.root if isinstance(payload, ListFiles) else [payload])]


# The bars are `verdict.evidence`: each probability against its operating point.
BARS = "bar: probability against its operating threshold, past half = over it"


def _subtype_heading(predictor) -> str:
  """Softmax subtypes sum to one given a bleed; multilabel ones are separate yes/no answers."""
  tasks = {spec.task for spec in predictor.specs} if predictor else set()
  if "subtype" in tasks:
    return f"Subtype (probabilities given a hemorrhage); {BARS}"
  return f"Subtypes (each an independent probability); {BARS}"


def build(demo: callbacks.Demo, model_card: str, analyses: int = ANALYSES) -> gr.Blocks:
  """The Blocks app around the callbacks; `model_card` is Markdown about the loaded weights.

  At most `analyses` model runs (uploads and example clicks together) go at once; the rest wait
  in Gradio's queue, which shows each visitor their place and an estimate.
  """
  with gr.Blocks(title="ichflax", analytics_enabled=False) as app:
    gr.Markdown(f"# {TITLE}")
    gr.Markdown(NOTICE, elem_id="notice")
    gr.Markdown(model_card, elem_id="card")
    # Outputs are made first (render=False) so the examples can sit beside the upload box.
    message = gr.Markdown(label="Result", elem_id="message", render=False)
    hemorrhage = gr.Label(label=f"Hemorrhage (any type); {BARS}", elem_id="hemorrhage",
                          render=False)
    subtypes = gr.Label(label=_subtype_heading(demo.predictor), num_top_classes=5,
                        elem_id="subtypes", render=False)
    overlay = inline_image(
        label="Grad-CAM: where the model looked (green: attention box, not a segmentation)",
        interactive=False, elem_id="overlay", height=440, render=False)
    windows = [inline_image(label=f"{name} window {c:g}/{w:g} HU", interactive=False,
                           elem_id=f"window-{name}", elem_classes="window", height=230,
                           render=False)
               for name in callbacks.WINDOW_NAMES for c, w in [image.WINDOWS[name]]]
    slider = gr.Slider(1, 2, value=1, step=1, label="Slice in series (ordered by position)",
                       visible=False, elem_id="slider", render=False)
    table = gr.Dataframe(headers=callbacks.TABLE_HEADERS, visible=False, interactive=False,
                         label="Per-slice results", elem_id="table", render=False)
    plot = gr.LinePlot(x="position", y="probability", color="output", y_lim=[0, 1],
                       x_title="slice position (z, mm; or slice number)",
                       y_title="probability", label="This series along the slice position "
                       "(the dashed line's level is the operating threshold)",
                       visible=False, elem_id="plot", height=260, render=False)
    reveal = gr.Checkbox(False, label=summary.REVEAL_LABEL, elem_id="reveal", render=False)
    views = gr.State(time_to_live=callbacks.SERIES_TTL_S)
    panels = [hemorrhage, subtypes, overlay, *windows]
    results = [message, *panels, table, slider, views, plot]

    def outputs(r: callbacks.Result) -> list:
      series = r.slider is not None
      return [r.message, r.hemorrhage, r.subtypes, r.overlay, *r.windows,
              gr.Dataframe(value=r.table, visible=series),
              gr.Slider(1, max(2, 1 + (r.slider or {}).get("maximum", 1)),
                        value=1 + (r.slider or {}).get("value", 0), visible=series),
              r.views, gr.LinePlot(value=r.plot, visible=r.plot is not None)]

    with gr.Row():
      with gr.Column(scale=2, min_width=320):
        files = upload_files(
            label=f"CT slice(s): DICOM (compressed or multi-frame too), a NIfTI volume "
                  f"(.nii/.nii.gz), PNG/JPG, or a zip of one series — up to "
                  f"{uploads.MAX_SLICES:,} slices, {uploads.MAX_UPLOAD_MB} MB per file",
            file_count="multiple", elem_id="upload", height=150)
        example_name = gr.Textbox(visible=False)
        examples = [(n, label) for n, label in EXAMPLES if (callbacks.EXAMPLES_DIR / n).is_file()]
        picked = gr.Examples([[n] for n, _ in examples], example_name, cache_examples=False,
                             example_labels=[label for _, label in examples],
                             label="Phantom examples (synthetic slices made by ichflax; not "
                                   "patients)")
        reveal.render()
        message.render()
        hemorrhage.render()
        subtypes.render()
      with gr.Column(scale=3):
        overlay.render()
        with gr.Row():
          for w in windows:
            w.render()
        slider.render()
        plot.render()
        table.render()

    def on_upload(paths, show_unlike, bar=gr.Progress()):  # noqa: B008  (Gradio's way)
      # Clears the box: the files are gone.
      return [None, *outputs(demo.analyze(paths, bar, bool(show_unlike)))]

    def on_slide(number, state, show_unlike):
      shown = demo.show(int(number or 1) - 1, state, bool(show_unlike))
      return [shown["message"], shown["hemorrhage"], shown["subtypes"], shown["overlay"],
              *shown["windows"], gr.Dataframe(value=shown["table"]) if shown["table"] else
              gr.skip(), gr.LinePlot(value=shown["plot"], visible=shown["plot"] is not None)]

    lane = {"concurrency_id": "analysis", "concurrency_limit": analyses}
    files.upload(on_upload, [files, reveal], [files, *results], api_name="analyze", **lane)
    picked.load_input_event.then(lambda name, show_unlike: outputs(demo.example(
        name, reveal=bool(show_unlike))), [example_name, reveal], results, api_name="example",
        **lane)
    shown = [message, *panels, table, plot]
    slider.release(on_slide, [slider, views, reveal], shown, api_name="show_slice")
    reveal.change(on_slide, [slider, views, reveal], shown, api_name="reveal")
  return app
