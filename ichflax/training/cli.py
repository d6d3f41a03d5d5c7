"""`python -m ichflax.train`: flags -> a TrainConfig (a preset, then flags over it) -> one run
or a sweep; errors for the user as one line and exit code 2 (3 when the loss diverged)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ichflax import checkpoint, config, tasks
from ichflax.config import TrainConfig
from ichflax.training import loop, sweep
from ichflax.xla import cache as xla_cache

DEFAULT_PRESET = "cpu-demo"


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, str | None]:
  # The preset (and task) first, so that --help shows the values this run would use.
  first = argparse.ArgumentParser(add_help=False)
  first.add_argument("--preset", default=DEFAULT_PRESET)
  first.add_argument("--task")
  known, _ = first.parse_known_args(argv)
  try:  # an unknown preset or task: the full parse below says so
    shown = config.preset(known.preset, **({"task": known.task} if known.task else {}))
    tasks.get_task(shown.task)
  except ValueError:
    shown = None
  p = argparse.ArgumentParser(prog="python -m ichflax.train", description=loop.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default=DEFAULT_PRESET,
                 help=f"starting values, one of {', '.join(config.PRESETS)}; flags override "
                      f"them; each flag's help ends with its value there [{DEFAULT_PRESET}]")
  p.add_argument("--sweep", help="grid, e.g. 'dropout=0.25,0.3,0.4 batch_size=8,16'")
  config.add_flags(p, shown=shown)
  a = p.parse_args(argv)
  values = config.flags_to_values(a)
  try:
    cfg = config.preset(a.preset, **values)
  except ValueError as e:
    p.error(str(e))
  if "workdir" not in values:
    stage = "-sequence" if cfg.sequence_from else ""
    cfg = config.with_values(cfg, {"workdir": f"runs/{cfg.preset}-{cfg.task}{stage}"})
  return cfg, a.sweep


def setup_cli() -> None:
  """CLI set-up: a log line per epoch, quiet orbax, and the persistent compile cache."""
  logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
  logging.getLogger("ichflax").setLevel(logging.INFO)
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's per-save chatter
  xla_cache.enable()


def main(argv: list[str] | None = None) -> int:
  setup_cli()
  try:
    cfg, grid = parse_args(argv)
    if grid:
      print(sweep.sweep(cfg, grid)["table"])
      return 0
    if cfg.sequence_from:
      from ichflax.training import sequence
      result = sequence.run(cfg)
    else:
      result = loop.run(cfg)
  except (config.ConfigError, checkpoint.CheckpointError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except loop.DivergedError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  print(Path(result["report_md"]).read_text())
  return 0
