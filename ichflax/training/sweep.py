"""`python -m ichflax.train --sweep GRID`: the paper's tuning, one full run per grid point.

Every point is checked before the first trains, one failed point does not lose the others, and
one table ranks them by the same validation metric that ranks checkpoints.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import jax

from ichflax import config
from ichflax.config import TrainConfig
from ichflax.evaluation import report
from ichflax.jsonable import jsonable
from ichflax.training import loop

log = logging.getLogger("ichflax.train")


def parse_grid(text: str) -> list[dict[str, Any]]:
  """'dropout=0.25,0.3 batch_size=8,16' -> every combination, values typed."""
  axes = []
  for item in text.split():
    name, _, values = item.partition("=")
    if name not in config.SWEEPABLE or not values:
      raise config.ConfigError(f"bad sweep item {item!r}: write NAME=V1,V2 with NAME one of "
                               f"{', '.join(sorted(config.SWEEPABLE))}")
    axes.append([(name, _typed(name, v)) for v in values.split(",")])
  if not axes:
    raise config.ConfigError("empty --sweep: write e.g. 'dropout=0.25,0.3,0.4 batch_size=8,16'")
  return [dict(combo) for combo in itertools.product(*axes)]


def _typed(name: str, value: str) -> Any:
  kind = config.SWEEPABLE[name]
  try:
    return kind(value)
  except ValueError as e:
    raise config.ConfigError(f"sweep value {value!r} for {name} must be {kind.__name__}") from e


def sweep(cfg: TrainConfig, grid: str) -> dict:
  """Runs the grid (the paper's tuning), one workdir per point; one table ranked by validation."""
  points = parse_grid(grid)
  for p in points:  # every point is checked before the first one trains
    config.validate(config.with_values(cfg, p), num_devices=jax.device_count())
  rows = []
  for p in points:
    name = ",".join(f"{k}={v}" for k, v in p.items())
    point = config.with_values(cfg, {**p, "workdir": str(Path(cfg.workdir) / "sweep" / name)})
    try:
      result = loop.run(point)
    except Exception as e:  # noqa: BLE001  (one failed point must not lose the others)
      log.error("sweep point %s failed, skipped: %s", name, e)
      rows.append({"params": p, "workdir": point.workdir, "error": str(e)})
      continue
    val = result["metrics"]["validation"] or {}
    rows.append({"params": p, "workdir": point.workdir, "val_accuracy": val.get("accuracy"),
                 "val_loss": val.get("loss"),
                 "test_accuracy": result["metrics"]["test"]["accuracy"]})
  metric, higher = loop.ranking(cfg.task)
  table = report.sweep_table(rows, f"val_{metric}", higher)
  out = Path(cfg.workdir).absolute() / "sweep"
  out.mkdir(parents=True, exist_ok=True)
  (out / "sweep.md").write_text(f"# Sweep over {grid!r} ({cfg.task}, data: "
                                f"{cfg.data or 'synthetic phantom'})\n\n{table}")
  (out / "sweep.json").write_text(json.dumps(jsonable(rows), indent=1))
  return {"table": table, "rows": rows, "path": str(out / "sweep.md")}
