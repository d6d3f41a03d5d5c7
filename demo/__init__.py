"""The Gradio demo: layout (ui), callbacks, safe uploads, weights; `app.py` serves it."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pydicom

from demo import callbacks, ui, weights


def create_app(checkpoints: list[Path], upload_root: str | Path) -> tuple[gr.Blocks, callbacks.Demo]:
  """The app for these checkpoints (none: windows only); compiles the model in the background."""
  predictor, card = weights.load(checkpoints)
  demo = callbacks.Demo(predictor, upload_root)
  if predictor is not None:  # the first visitor should not wait for XLA to compile
    threading.Thread(target=predictor.predict, args=([np.zeros((64, 64), np.float32)],),
                     daemon=True, name="warm-up").start()
  return ui.build(demo, card), demo


def quiet_pydicom() -> None:
  """pydicom's validation warnings quote tag values (a patient's name, a date): never log them.

  Process-wide, so the server's entry point (app.py) calls it.
  """
  pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
  logging.getLogger("pydicom").setLevel(logging.CRITICAL)
  warnings.filterwarnings("ignore", module="pydicom")
