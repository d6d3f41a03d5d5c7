"""The Gradio demo: layout (ui), callbacks, safe uploads, weights; `app.py` serves it."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import numpy as np
from starlette.middleware import Middleware

from demo import callbacks, ui, uploads, weights


def create_app(checkpoints: list[Path], upload_root: str | Path,
               analyses: int = ui.ANALYSES) -> tuple[gr.Blocks, callbacks.Demo]:
  """The app for these checkpoints (none: windows only); compiles the model in the background.

  Serve it with `launch_kwargs(demo)`, so uploads of the same file at once are counted.
  """
  predictor, card = weights.load(checkpoints)
  demo = callbacks.Demo(predictor, upload_root)
  if predictor is not None:  # the first visitor should not wait for XLA to compile
    threading.Thread(target=predictor.predict, args=([np.zeros((64, 64), np.float32)],),
                     daemon=True, name="warm-up").start()
  return ui.build(demo, card, analyses), demo


def launch_kwargs(demo: callbacks.Demo) -> dict:
  """`launch()` arguments every server of the app needs: the upload counter, the size limit."""
  return {"app_kwargs": {"middleware": [Middleware(uploads.CountUploads, ledger=demo.uploads)]},
          "max_file_size": f"{uploads.MAX_UPLOAD_MB}mb", "css": ui.CSS}

