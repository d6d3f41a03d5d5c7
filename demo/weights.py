"""Which weights the demo serves, and what the page says about them.

The lead ships one multilabel checkpoint under `checkpoints/`; a binary + subtype pair, or any
checkpoint given by `--checkpoint` / `ICHFLAX_CHECKPOINT` (a directory, or a Hugging Face Hub
repository `hf://OWNER/REPO[@REVISION]`, the usual way on a Space), works too. The page must say
what data the weights saw (the phantom is not patients) and must still start when there are none.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ichflax import checkpoint
from ichflax.checkpoint import hub
from ichflax.serving import predictor as predictor_lib

log = logging.getLogger("ichflax.demo")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "checkpoints"
ENV = "ICHFLAX_CHECKPOINT"  # one path or hf:// URI, or several joined by os.pathsep
Checkpoint = Path | str  # a directory, or an hf:// URI (a Path would fold its "//")
CARD_NAMES = ("MODEL_CARD.md", "README.md")


def discover(root: Path = DEFAULT_DIR) -> list[Path]:
  """Checkpoints under `root`: one multilabel one if present, else binary + subtype, else any."""
  found: dict[str, Path] = {}
  candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
  for path in filter(_looks_like_checkpoint, candidates):
    try:
      found.setdefault(checkpoint.read_spec(path).task, path)
    except (checkpoint.CheckpointError, OSError, ValueError, KeyError):
      continue
  if "multilabel" in found:
    return [found["multilabel"]]
  if "binary" in found and "subtype" in found:
    return [found["binary"], found["subtype"]]
  return list(found.values())[:1]


def _looks_like_checkpoint(path: Path) -> bool:
  """A step dir, a CheckpointManager dir (numbered steps) or a training workdir."""
  return ((path / checkpoint.SPEC).is_dir() or (path / checkpoint.CHECKPOINTS).is_dir()
          or any(p.name.isdigit() for p in path.iterdir() if p.is_dir()))


def requested(cli: list[str] | None) -> list[Checkpoint]:
  """Checkpoints from the command line, else the environment variable, else `discover()`."""
  if cli:
    return [_checkpoint(p) for p in cli]
  if os.environ.get(ENV):
    # os.pathsep is ":" on POSIX, which hf:// also holds: split only where a new item starts.
    return [_checkpoint(p) for p in re.split(f"{os.pathsep}(?!//)", os.environ[ENV]) if p]
  return discover()


def _checkpoint(text: str) -> Checkpoint:
  return text if hub.is_hub(text) else Path(text)


def load(paths: list[Checkpoint]) -> tuple[predictor_lib.Predictor | None, str]:
  """(Predictor or None, Markdown for the page): never raises, so the app always starts.

  Hub checkpoints are downloaded (once, into the Hub cache) and checked here, so the page can
  say what went wrong and how to fix it.
  """
  if not paths:
    return None, (f"No checkpoint found in `{DEFAULT_DIR.name}/`: the app runs without a model "
                  "(windows only).")
  try:
    paths = [checkpoint.resolve(p) if hub.is_hub(p) else p for p in paths]
    predictor = predictor_lib.Predictor.from_checkpoint(*paths)
  except Exception as e:  # noqa: BLE001  (the app must start without weights)
    log.error("could not load %s: %s", ", ".join(map(str, paths)), e)
    return None, (f"Could not load weights from `{', '.join(map(str, paths))}`: {e}. The app "
                  "runs without a model (windows only).")
  return predictor, card(predictor, paths)


def card(predictor: predictor_lib.Predictor, paths: list[Path]) -> str:
  """Model card summary: what each checkpoint predicts, its data, its test metrics, the card."""
  lines = ["**Loaded weights.** " + " ".join(
      f"{line}." for line in predictor.summary().splitlines())]
  for path, spec in zip(paths, predictor.specs):
    measured = checkpoint.read_progress(path)
    split = "test" if measured.test else "validation"
    shown = _figures(measured.test or measured.validation)
    if shown:
      data = spec.data_named()
      lines.append(f"{split.capitalize()} metrics of the {spec.task} model, on its own {split} "
                   f"split ({data}): {shown}.")
  text = _card_text(paths)
  if text:
    lines.append(text)
  return "\n\n".join(lines)


def _figures(measured: dict | None) -> str:
  """'accuracy 0.910, auc 0.968': the scalar figures of one split's metrics."""
  shown = [f"{k} {v:.3f}" for k, v in (measured or {}).items()
           if isinstance(v, float) and k != "n"]
  return ", ".join(shown[:6])


def _card_text(paths: list[Path]) -> str:
  """The first paragraph of a model card beside the checkpoint (in it or its parent folder)."""
  # Only beside the loaded checkpoint: another model's card must never describe these weights.
  for folder in [p for path in paths for p in (path, path.parent)]:
    for name in CARD_NAMES:
      card_path = folder / name
      if card_path.is_file():
        paragraphs = [p.strip() for p in card_path.read_text().split("\n\n")
                      if p.strip() and not p.lstrip().startswith(("#", "---"))]
        if paragraphs:
          return f"*Model card ({card_path.name}):* {paragraphs[0]}"
  return ""
