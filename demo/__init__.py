"""The Gradio demo: layout (ui), callbacks, safe uploads, weights; `app.py` serves it."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pydicom
from starlette.middleware import Middleware

from demo import callbacks, ui, uploads, weights
from ichflax import predictor as predictor_lib


def create_app(checkpoints: list[Path], upload_root: str | Path,
               analyses: int = ui.ANALYSES) -> tuple[gr.Blocks, callbacks.Demo]:
  """The app for these checkpoints (none: windows only); compiles the model in the background.

  Serve it with `launch_kwargs(demo)`, so uploads of the same file at once are counted.
  """
  predictor, card = weights.load(checkpoints)
  demo = callbacks.Demo(predictor, upload_root)
  if predictor is not None:  # no visitor should wait for XLA to compile
    threading.Thread(target=warm_up, args=(predictor,), daemon=True, name="warm-up").start()
  return ui.build(demo, card, analyses), demo


def warm_up(predictor: predictor_lib.Predictor) -> None:
  """Compiles every batch shape a request can use: one slice first, then each padded series size.

  The Predictor pads batches to powers of two up to `batch_size`, so these few programs serve
  every request; with the persistent compile cache a restart only loads them.
  """
  size = 1
  while size < 2 * predictor.batch_size:  # up to the power of two a full batch is padded to
    predictor.predict([np.zeros((64, 64), np.float32)] * size)
    size *= 2


def launch_kwargs(demo: callbacks.Demo) -> dict:
  """`launch()` arguments every server of the app needs: the upload counter, the size limit."""
  return {"app_kwargs": {"middleware": [Middleware(uploads.CountUploads, ledger=demo.uploads)]},
          "max_file_size": f"{uploads.MAX_UPLOAD_MB}mb", "css": ui.CSS}


def quiet_pydicom() -> None:
  """pydicom's validation warnings quote tag values (a patient's name, a date): never log them.

  Process-wide, so the server's entry point (app.py) calls it.
  """
  pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
  logging.getLogger("pydicom").setLevel(logging.CRITICAL)
  warnings.filterwarnings("ignore", module="pydicom")
