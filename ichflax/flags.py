"""One vocabulary across the commands: a renamed flag or value keeps working and says its new name.

Sizes: `--matrix` (the side of a generated CT slice, a scanner's matrix), `--stored-size` (what
a dataset keeps), `--image-size` (what the model sees). Channels: `--input-mode windows|grey`.
Counts of generated slices: `--slices`. How a folder is drawn into splits: `--draw
balanced|paper-code|by-patient`. What trains: `--trainable bn-head|all`. Folders written: a
command's product `--out`, a secondary report `--report`, a training run's `--workdir`.

Old names (`--recipe paper|full`, `--protocol paper|full`, `seed`, `--size`, `--num`, ...) are
read with a one-line notice on the command line and silently from stored configs, checkpoints
and datasets (`upgrade`), so everything written before the renames still loads.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

# Renamed fields of configs, model specs and dataset info: old key -> new key.
OLD_FIELDS = {"recipe": "trainable", "protocol": "draw"}
# Renamed values, per (new) field: the same old word meant another thing in each.
OLD_VALUES: dict[str, dict[str, str]] = {
    "trainable": {"paper": "bn-head", "full": "all", "seed": "bn-head"},
    "draw": {"paper": "balanced", "full": "by-patient", "seed": "balanced"},
    "preset": {"seed": "paper"},
}


def current(field: str, value: Any) -> Any:
  """A field's value under its current name (`current("draw", "full")` -> "by-patient")."""
  table = OLD_VALUES.get(field)
  return table.get(value, value) if table else value


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
  """A stored record (config, spec, dataset info) with old keys and values renamed."""
  renamed = {OLD_FIELDS.get(k, k): v for k, v in record.items() if OLD_FIELDS.get(k) not in record}
  return {k: current(k, v) for k, v in renamed.items()}


class _Renamed(argparse.Action):
  """Stores the value; an old spelling of the flag or of the value also prints a notice."""

  def __init__(self, *args, old_values: dict[str, str], **kwargs):
    super().__init__(*args, **kwargs)
    self.old_values = old_values

  def __call__(self, parser, namespace, values, option_string=None):
    new, value = self.option_strings[0], self.old_values.get(values, values)
    if value != values:
      print(f"note: {option_string} {values} is now {new} {value}", file=sys.stderr)
    elif option_string != new:
      print(f"note: {option_string} is now {new}", file=sys.stderr)
    setattr(namespace, self.dest, value)


def renamed(parser: argparse.ArgumentParser, new: str, *old: str,
            old_values: dict[str, str] | None = None, **kwargs) -> argparse.Action:
  """`parser.add_argument(new, **kwargs)` that also accepts the `old` spellings, and the
  `old_values` of its choices (--help lists only the new ones)."""
  old_values = old_values or {}
  if old_values:
    choices = tuple(kwargs.pop("choices"))
    kwargs.update(choices=(*choices, *old_values), metavar="{" + ",".join(choices) + "}")
  return parser.add_argument(new, *old, action=_Renamed, old_values=old_values, **kwargs)


def renamed_values(parser: argparse.ArgumentParser, old: str, new: str, values: dict[str, str],
                   dest: str) -> argparse.Action:
  """An old flag whose values map onto a new flag's (`--windows 1` -> `--input-mode grey`):
  still accepted, with a notice naming the new spelling; hidden from --help."""

  class _OldValues(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
      print(f"note: {old} {value} is now {new} {values[value]}", file=sys.stderr)
      setattr(namespace, dest, values[value])

  return parser.add_argument(old, choices=tuple(values), action=_OldValues, dest=f"_{dest}_old",
                             help=argparse.SUPPRESS)
