"""The demo server: `ichflax-demo` (after `pip install -e .`) or `python app.py` in the
checkout, with [--port N] [--share] [--checkpoint DIR].

Research and education use only; not a medical device. Weights: `--checkpoint DIR` or
`hf://OWNER/REPO[@REVISION]` (repeat for a binary + a subtype checkpoint), else
`ICHFLAX_CHECKPOINT`, else what the checkout's `checkpoints/` holds; with none the page still
opens and says how to get them. The server answers once the model is compiled (or loaded from
XLA's cache). On Hugging Face Spaces (SPACE_ID set) the server binds 0.0.0.0 as Spaces needs,
and keeps the Hub and XLA caches on the Space's persistent storage when it has some; locally
127.0.0.1:7860.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import tempfile

SPACE_STORAGE = "/data"  # where a Space's persistent storage is mounted, when it has some


def parse(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                      help="port to serve on (default: $GRADIO_SERVER_PORT, else 7860)")
  parser.add_argument("--host", default=None,
                      help="bind address (default 127.0.0.1; 0.0.0.0 on Hugging Face Spaces)")
  parser.add_argument("--share", action="store_true", help="also make a public gradio.live link")
  parser.add_argument("--checkpoint", action="append", metavar="DIR",
                      help="checkpoint directory or hf://OWNER/REPO[@REVISION] to serve (repeat "
                           "for binary + subtype)")
  parser.add_argument("--analyses", type=int, default=None,
                      help="analyses at once, the rest wait in the queue (default 2, measured "
                           "on a 2-vCPU box in docs/serving.md)")
  return parser.parse_args(argv)


def private_upload_dir() -> str:
  """Gradio's upload folder: the user's GRADIO_TEMP_DIR, else a fresh one removed at exit."""
  if not os.environ.get("GRADIO_TEMP_DIR"):
    path = tempfile.mkdtemp(prefix="ichflax-uploads-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["GRADIO_TEMP_DIR"] = path  # before gradio is imported: it reads this once
  return os.environ["GRADIO_TEMP_DIR"]


def space_storage(root: str = SPACE_STORAGE) -> None:
  """On a Space with persistent storage, keep downloaded weights and compiled programs there.

  Without it both caches live in the container and are rebuilt after every restart. Explicit
  HF_HOME / ICHFLAX_JAX_CACHE settings win; must run before huggingface_hub is imported.
  """
  if os.environ.get("SPACE_ID") and os.path.isdir(root) and os.access(root, os.W_OK):
    os.environ.setdefault("HF_HOME", os.path.join(root, ".huggingface"))
    os.environ.setdefault("ICHFLAX_JAX_CACHE", os.path.join(root, "ichflax", "jax"))


def main(argv: list[str] | None = None) -> None:
  args = parse(argv)
  logging.basicConfig(level=logging.WARNING,
                      format="%(asctime)s %(name)s %(levelname)s %(message)s")
  logging.getLogger("ichflax").setLevel(logging.INFO)
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
  upload_root = private_upload_dir()
  space_storage()
  import demo
  from demo import ui
  from ichflax.checkpoint import discover
  from ichflax.data import dicom
  from ichflax.xla import cache as xla_cache
  xla_cache.enable()
  dicom.quiet_pydicom()
  app, callbacks = demo.create_app(discover.requested(args.checkpoint), upload_root,
                                   args.analyses or ui.ANALYSES, wait_for_warm_up=True)
  host = args.host or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
  app.queue(default_concurrency_limit=1)  # the slider's cheap re-render has a queue of its own
  app.launch(server_name=host, server_port=args.port, share=args.share, show_error=False,
             **demo.launch_kwargs(callbacks))
