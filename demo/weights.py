"""Which weights the demo serves, and what the page says about them.

The project ships one multilabel checkpoint under `checkpoints/`; a binary + subtype pair, or any
checkpoint given by `--checkpoint` / `ICHFLAX_CHECKPOINT` (a directory, or a Hugging Face Hub
repository `hf://OWNER/REPO[@REVISION]`, the usual way on a Space), works too; which one is
chosen is `ichflax.checkpoint.discover`'s rule, shared with `ichflax.predict`. The page must say
what data the weights saw (the phantom is not patients) and must still start when there are none.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ichflax import checkpoint
from ichflax.checkpoint import hub
from ichflax.checkpoint.discover import DEFAULT_DIR, Checkpoint
from ichflax.serving import predictor as predictor_lib

log = logging.getLogger("ichflax.demo")
CARD_NAMES = ("MODEL_CARD.md", "README.md")


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
