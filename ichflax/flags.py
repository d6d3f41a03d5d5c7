"""One vocabulary across the commands: a renamed flag keeps working and says its new name.

Sizes are `--stored-size` (what a dataset keeps) and `--image-size` (what the model sees),
channels `--input-mode windows|grey`, counts of generated slices `--slices`, output folders
`--out`.
"""

from __future__ import annotations

import argparse
import sys


class _Renamed(argparse.Action):
  """Stores the value; an old spelling also prints a one-line notice."""

  def __call__(self, parser, namespace, values, option_string=None):
    if option_string != self.option_strings[0]:
      print(f"note: {option_string} is now {self.option_strings[0]}", file=sys.stderr)
    setattr(namespace, self.dest, values)


def renamed(parser: argparse.ArgumentParser, new: str, *old: str, **kwargs) -> argparse.Action:
  """`parser.add_argument(new, **kwargs)` that also accepts the `old` spellings."""
  return parser.add_argument(new, *old, action=_Renamed, **kwargs)


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
