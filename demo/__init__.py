"""The Gradio demo: layout (ui), callbacks, safe uploads, weights; `app.py` serves it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
from starlette.middleware import Middleware

from demo import callbacks, ui, uploads, weights
from ichflax.serving import predictor as predictor_lib

log = logging.getLogger("ichflax.demo")


def create_app(checkpoints: list[weights.Checkpoint], upload_root: str | Path,
               analyses: int = ui.ANALYSES, *,
               wait_for_warm_up: bool = False) -> tuple[gr.Blocks, callbacks.Demo]:
  """The app for these checkpoints (none: windows only); compiles the model while it builds.

  `wait_for_warm_up`: return only once every program a request can need is compiled, so no
  visitor ever waits for XLA (what `app.py` does: the page opens a little later instead).
  Serve it with `launch_kwargs(demo)`, so uploads of the same file at once are counted.
  """
  predictor, card = weights.load(checkpoints)
  demo = callbacks.Demo(predictor, upload_root)
  warming = threading.Thread(target=warm_up, args=(predictor,), daemon=True, name="warm-up")
  if predictor is not None:
    warming.start()
  app = ui.build(demo, card, analyses)  # builds while the warm-up compiles
  if predictor is not None and wait_for_warm_up:
    warming.join()
  return app, demo


def warm_up(predictor: predictor_lib.Predictor) -> None:
  """Compiles every batch shape a request can use: one slice first, then each padded series size.

  The Predictor pads batches to powers of two up to `batch_size`, so these few programs serve
  every request; with the persistent compile cache a restart only loads them.
  """
  start, sizes = time.perf_counter(), []
  while not sizes or sizes[-1] < predictor.batch_size:  # up to the padded full batch
    sizes.append(2 ** len(sizes))
    predictor.predict([np.zeros((64, 64), np.float32)] * sizes[-1])
  log.info("warm-up done: batches of %s ready in %.1f s", sizes, time.perf_counter() - start)


def launch_kwargs(demo: callbacks.Demo) -> dict:
  """`launch()` arguments every server of the app needs: the upload counter, the size limit."""
  return {"app_kwargs": {"middleware": [Middleware(uploads.CountUploads, ledger=demo.uploads)]},
          "max_file_size": f"{uploads.MAX_UPLOAD_MB}mb", "css": ui.CSS}

