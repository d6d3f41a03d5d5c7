"""Which checkpoint to serve when none is named: the app and `ichflax.predict` agree on it.

`--checkpoint` wins, then `ICHFLAX_CHECKPOINT` (one path or hf:// URI, or several joined by
os.pathsep), then what the repository's `checkpoints/` folder holds: one multilabel checkpoint if
present, else a binary + subtype pair, else any one.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from ichflax.checkpoint import hub, layout
from ichflax.checkpoint.load import read_spec

# The source checkout (where an editable install leaves it): the shipped checkpoints/ and the
# demo page's demo/ sit beside ichflax/ there.
CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = CHECKOUT / "checkpoints"
ENV = "ICHFLAX_CHECKPOINT"
Checkpoint = Path | str  # a directory, or an hf:// URI (a Path would fold its "//")


def checkout_package(name: str) -> None:
  """Makes the checkout's top-level package `name` importable (the demo page: kept out of
  site-packages, its name too generic; an editable install leaves the checkout in place), or
  exits saying how to get one."""
  if not (CHECKOUT / name / "__init__.py").is_file():
    raise SystemExit(f"error: no {name}/ beside {CHECKOUT / 'ichflax'}: install ichflax from a "
                     "source checkout with `pip install -e CHECKOUT`, or run `python app.py` "
                     "there")
  if str(CHECKOUT) not in sys.path:
    sys.path.append(str(CHECKOUT))


def discover(root: Path | None = None) -> list[Path]:
  """Checkpoints under `root` (default `DEFAULT_DIR`): one multilabel one if present, else
  binary + subtype, else any."""
  root = DEFAULT_DIR if root is None else root
  found: dict[str, Path] = {}
  candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
  for path in filter(_looks_like_checkpoint, candidates):
    try:
      found.setdefault(read_spec(path).task, path)
    except (layout.CheckpointError, OSError, ValueError, KeyError):
      continue
  if "multilabel" in found:
    return [found["multilabel"]]
  if "binary" in found and "subtype" in found:
    return [found["binary"], found["subtype"]]
  return list(found.values())[:1]


def _looks_like_checkpoint(path: Path) -> bool:
  """A step dir, a CheckpointManager dir (numbered steps) or a training workdir."""
  return ((path / layout.SPEC).is_dir() or (path / layout.CHECKPOINTS).is_dir()
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
