"""Every command's --help documents every flag, and train's shows the chosen preset's values."""

from __future__ import annotations

import argparse
import importlib

import pytest

from ichflax import config

COMMANDS = ["ichflax.training.cli", "ichflax.serving.cli", "ichflax.trust.evaluate",
            "ichflax.trust.calibrate", "ichflax.data.__main__", "ichflax.weights.__main__",
            "ichflax.checkpoint.cli", "ichflax.training.reproduce", "ichflax.app"]


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
  err = capsys.readouterr().err
  assert "note: --num is now --slices" in err and "note: --size is now --matrix" in err
  assert len(list(out.rglob("*.dcm"))) == 2
  assert data_main(["phantom", "--out", str(tmp_path / "again"), "--slices", "2", "--matrix",
                    "32", "--workers", "1"]) == 0
  assert "is now" not in capsys.readouterr().err


def test_old_windows_flag_maps_onto_input_mode(monkeypatch, capsys):
  """`data build --windows 1` (the old spelling) is `--input-mode grey`, with a notice."""
  parser = _subparser("ichflax.data.__main__", "build", monkeypatch)
  assert parser.parse_args(["--phantom", "4", "--out", "x", "--windows", "1"]).input_mode == "grey"
  assert "note: --windows 1 is now --input-mode grey" in capsys.readouterr().err
  assert parser.parse_args(["--phantom", "4", "--out", "x"]).input_mode == "windows"
  assert "--windows" not in parser.format_help()


def _subparser(module: str, name: str, monkeypatch) -> argparse.ArgumentParser:
  parser, = [p for p in _parsers(module, monkeypatch) if p.prog.endswith(name)]
  monkeypatch.undo()  # parse for real again
  return parser


@pytest.mark.parametrize("argv,values,notice", [
    (["--recipe", "full"], ("all", "by-patient"), "--recipe full is now --trainable all"),
    (["--recipe", "paper"], ("bn-head", "by-patient"), "--recipe paper is now --trainable bn-head"),
    (["--recipe", "seed"], ("bn-head", "by-patient"), "--recipe seed is now --trainable bn-head"),
    (["--recipe", "all"], ("all", "by-patient"), "--recipe is now --trainable"),
    (["--trainable", "full"], ("all", "by-patient"), "--trainable full is now --trainable all"),
    (["--protocol", "full"], ("all", "by-patient"), "--protocol full is now --draw by-patient"),
    (["--protocol", "paper"], ("all", "balanced"), "--protocol paper is now --draw balanced"),
    (["--protocol", "paper-code"], ("all", "paper-code"), "--protocol is now --draw"),
    (["--trainable", "bn-head", "--draw", "balanced"], ("bn-head", "balanced"), None),
])
def test_train_reads_the_old_recipe_and_protocol(argv, values, notice, capsys):
  """`--recipe paper|full` and `--protocol paper|full` (each word another new one) still run."""
  from ichflax.training import cli
  cfg, _ = cli.parse_args(argv)
  assert (cfg.trainable, cfg.draw) == values
  err = capsys.readouterr().err
  assert (f"note: {notice}\n" == err) if notice else not err


def test_new_names_are_what_help_shows(capsys):
  """--help lists the new values only; old flags show as aliases of the new ones."""
  from ichflax.training import cli
  with pytest.raises(SystemExit):
    cli.parse_args(["--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert "--trainable {bn-head,all}, --recipe {bn-head,all} what trains" in text
  assert "--draw {balanced,paper-code,by-patient}, --protocol" in text
  assert "{paper" not in text and "full}" not in text


@pytest.mark.parametrize("argv,draw,notice", [
    (["--protocol", "full"], "by-patient", "--protocol full is now --draw by-patient"),
    (["--protocol", "paper"], "balanced", "--protocol paper is now --draw balanced"),
    (["--protocol", "seed"], "balanced", "--protocol seed is now --draw balanced"),
    (["--draw", "full"], "by-patient", "--draw full is now --draw by-patient"),
    (["--draw", "paper-code"], "paper-code", None),
    ([], "balanced", None),
])
def test_data_build_reads_the_old_protocol(argv, draw, notice, monkeypatch, capsys):
  parser = _subparser("ichflax.data.__main__", "build", monkeypatch)
  assert parser.parse_args(["--phantom", "4", "--out", "x", *argv]).draw == draw
  err = capsys.readouterr().err
  assert (f"note: {notice}\n" == err) if notice else not err
  assert "--draw {balanced,paper-code,by-patient}" in parser.format_help()


def test_preview_size_is_now_matrix(monkeypatch, capsys):
  parser = _subparser("ichflax.data.__main__", "preview", monkeypatch)
  assert parser.parse_args(["--size", "64"]).matrix == 64
  assert capsys.readouterr().err == "note: --size is now --matrix\n"
  assert parser.parse_args(["--matrix", "64"]).matrix == 64 and not capsys.readouterr().err
