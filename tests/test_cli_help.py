"""Every command's --help documents every flag, and train's shows the chosen preset's values."""

from __future__ import annotations

import argparse
import importlib

import pytest

from ichflax import config

COMMANDS = ["ichflax.training.cli", "ichflax.serving.cli", "ichflax.trust.evaluate",
            "ichflax.trust.calibrate", "ichflax.data.__main__", "ichflax.weights.__main__",
            "ichflax.checkpoint.cli", "ichflax.training.reproduce", "app"]


class _CapturedError(Exception):
  def __init__(self, parser):
    super().__init__()
    self.parser = parser


def _parsers(module: str, monkeypatch) -> list[argparse.ArgumentParser]:
  """The parser a command's main() builds (and its subcommands'), caught as it parses."""
  def capture(self, *args, **kwargs):
    raise _CapturedError(self)
  monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
  with pytest.raises(_CapturedError) as caught:
    importlib.import_module(module).main([])
  found, todo = [], [caught.value.parser]
  while todo:
    parser = todo.pop()
    found.append(parser)
    for action in parser._actions:
      if isinstance(action, argparse._SubParsersAction):
        todo.extend(action.choices.values())
  return found


@pytest.mark.parametrize("module", COMMANDS)
def test_every_flag_has_help(module, monkeypatch):
  missing = [f"{parser.prog} {action.option_strings or action.dest}"
             for parser in _parsers(module, monkeypatch) for action in parser._actions
             if not action.help and not isinstance(action, argparse._SubParsersAction)]
  assert not missing, f"flags without help text: {missing}"


def test_train_help_shows_the_presets_values(capsys):
  from ichflax.training import cli
  for argv, want in [([], "[cpu-demo: 0.9]"), (["--preset", "rsna"], "[rsna: its default]")]:
    with pytest.raises(SystemExit):
      cli.parse_args([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"model's, Keras 0.99) {want}" in text  # --bn-momentum as the run would use it
  assert config.preset("rsna").bn_momentum is None  # the model's own 0.99


def test_old_flag_spellings_still_work_and_say_the_new_one(tmp_path, capsys):
  from ichflax.data.__main__ import main as data_main
  out = tmp_path / "phantom"
  assert data_main(["phantom", "--out", str(out), "--num", "2", "--size", "32",
                    "--workers", "1"]) == 0
  assert "note: --num is now --slices" in capsys.readouterr().err
  assert len(list(out.rglob("*.dcm"))) == 2
  assert data_main(["phantom", "--out", str(tmp_path / "again"), "--slices", "2", "--size",
                    "32", "--workers", "1"]) == 0
  assert "is now" not in capsys.readouterr().err


def test_old_windows_flag_maps_onto_input_mode(monkeypatch, capsys):
  """`data build --windows 1` (the old spelling) is `--input-mode grey`, with a notice."""
  parser, = [p for p in _parsers("ichflax.data.__main__", monkeypatch) if p.prog.endswith("build")]
  monkeypatch.undo()  # parse for real again
  assert parser.parse_args(["--phantom", "4", "--out", "x", "--windows", "1"]).input_mode == "grey"
  assert "note: --windows 1 is now --input-mode grey" in capsys.readouterr().err
  assert parser.parse_args(["--phantom", "4", "--out", "x"]).input_mode == "windows"
  assert "--windows" not in parser.format_help()
