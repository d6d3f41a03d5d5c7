"""The paper's two experiments end to end on a tiny phantom (32 px, one short epoch each)."""

import json
from pathlib import Path

from ichflax import reproduce
from ichflax.data import builders


def test_reproduce_writes_one_side_by_side_report(tmp_path, capsys):
  data = builders.prepare(None, size=32, num=80, out=tmp_path / "data", workers=1)
  code = reproduce.main(["--data", data, "--workdir", str(tmp_path / "rep"), "--recipe", "full",
                         "--image-size", "32", "--epochs", "1", "--batch-size", "8",
                         "--limit", "24", "--no-progress"])
  assert code == 0
  md = (tmp_path / "rep" / "reproduce.md").read_text()
  assert md.strip() in capsys.readouterr().out  # printed as well as written
  assert "## ichflax binary report" in md and "## ichflax subtype report" in md
  # Both of the paper's readings of its tables, for each experiment.
  assert "| sensitivity |" in md and "0.920 | 0.957 |" in md
  assert "| epidural |" in md and "0.530 | 0.562 |" in md
  assert md.count("synthetic phantom") >= 2
  both = json.loads((tmp_path / "rep" / "reproduce.json").read_text())
  assert set(both) == {"binary", "subtype"}
  assert both["subtype"]["config"]["dropout"] is None  # the paper's preset: 0.3
  assert (Path(both["binary"]["config"]["workdir"]) / "report" / "accuracy.png").exists()
  assert both["binary"]["paper"]["table_derived"]["sensitivity"] == 1913 / 2000


def test_reproduce_uses_the_paper_presets():
  cfg = reproduce.parse_args(["--data", "phantom"])
  assert (cfg.image_size, cfg.recipe, cfg.protocol, cfg.lr) == (224, "paper", "paper", 1e-3)
  assert cfg.workdir == "runs/reproduce"
