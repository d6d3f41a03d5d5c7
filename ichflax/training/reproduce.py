"""`python -m ichflax.reproduce --data DIR --preset paper|paper-code`: the paper's experiments.

Binary (hemorrhage yes/no) and subtype (five classes), one report beside the paper's tables.
Two readings of the paper: `paper` is its text (224 px, BatchNorm + head trained, Adam; binary
dropout 0.4 batch 16, subtype dropout 0.3 batch 8, the best validation checkpoint tested);
`paper-code` is the authors' notebook (batch 32, 15 / 90 epochs, grey 128 px PNG nearest to
224 and / 255, its ImageDataGenerator and class assignment, the final model tested). Flags
override the presets for quick or CPU runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import jax

from ichflax import checkpoint, config
from ichflax.evaluation import report
from ichflax.jsonable import jsonable
from ichflax.training import cli, loop

EXPERIMENTS = ("binary", "subtype")
READINGS = ("paper", "paper-code")


def run(cfgs: dict[str, config.TrainConfig], workdir: str | Path) -> dict:
  """Both experiments (each in its own workdir), then WORKDIR/reproduce.md and .json."""
  workdir = Path(workdir)
  for cfg in cfgs.values():  # both are checked before the first one trains
    config.validate(cfg, num_devices=jax.device_count())
  results = {task: loop.run(cfg) for task, cfg in cfgs.items()}
  name = next(iter(cfgs.values())).preset
  parts = [f"# ichflax: the paper's two experiments, reproduced (preset `{name}`)", "",
           f"Reading: **{name}** ({READING_NOTES.get(name, 'custom')}). Each section puts our "
           "figures beside the paper's (RSNA stage 1, its protocol), names the data ours were "
           "measured on and which checkpoint was tested. The paper's text and its own confusion "
           "matrices disagree on sensitivity/specificity; both are shown, and ours are computed "
           "from our confusion matrix.", ""]
  for task, result in results.items():
    body = Path(result["report_md"]).read_text().replace("# ichflax", "## ichflax", 1)
    curves = Path(result["report_md"]).parent.relative_to(workdir.absolute())
    parts += [body.replace("\n## ", "\n### "), f"Curves ({task}): ",
              f"![accuracy]({curves}/accuracy.png) ![loss]({curves}/loss.png)", ""]
  workdir.mkdir(parents=True, exist_ok=True)
  md, js = workdir / "reproduce.md", workdir / "reproduce.json"
  md.write_text("\n".join(parts) + f"\n*{report.DISCLAIMER}*\n")
  js.write_text(json.dumps(jsonable(
      {task: json.loads(Path(r["report_json"]).read_text()) for task, r in results.items()}),
      indent=1))
  return {"report_md": str(md), "report_json": str(js), "runs": results}


READING_NOTES = {
    "paper": "the paper's text: batch 16 / 8, three CT windows, caffe normalisation, best "
             "validation checkpoint tested",
    "paper-code": "the authors' notebook: batch 32, 15 / 90 epochs, grey 128 px PNG nearest to "
                  "224 and / 255, Keras ImageDataGenerator, parser class assignment, final "
                  "model tested",
}
# The config fields this command lets a user change; the rest follow the preset.
FLAGS = ("weights", "workdir", "trainable", "epochs", "image_size", "batch_size", "limit",
         "progress_bar", "per_class", "stored_size", "seed")


def parse_args(argv: list[str] | None = None) -> tuple[dict[str, config.TrainConfig], str]:
  """Per experiment its config (the preset's per-task values, then the flags), and the workdir."""
  p = argparse.ArgumentParser(prog="python -m ichflax.reproduce", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", required=True,
                 help="RSNA folder (stage_1_train.csv + DICOMs or the paper's ID_*.png), the "
                      "paper's PNG class folders, a built TFDS dir, or 'phantom'")
  p.add_argument("--preset", choices=READINGS, default="paper",
                 help="paper: the text's settings; paper-code: the authors' notebook's")
  config.add_flags(p, only=FLAGS)
  a = p.parse_args(argv)
  values = {**config.flags_to_values(a), "data": a.data}
  workdir = Path(values.pop("workdir", f"runs/reproduce-{a.preset}"))
  try:
    cfgs = {task: config.preset(a.preset, task=task, workdir=str(workdir / task), **values)
            for task in EXPERIMENTS}
  except ValueError as e:
    p.error(str(e))
  return cfgs, str(workdir)


def main(argv: list[str] | None = None) -> int:
  cli.setup_cli()
  try:
    result = run(*parse_args(argv))
  except (config.ConfigError, checkpoint.CheckpointError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(Path(result["report_md"]).read_text())
  logging.getLogger("ichflax.reproduce").info("report: %s", result["report_md"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
