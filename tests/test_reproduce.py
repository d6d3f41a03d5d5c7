"""The paper's two experiments end to end on a tiny phantom (32 px, one short epoch each)."""

import json
from pathlib import Path

import _synth_data
import numpy as np
import pytest

from ichflax.data import builders, phantom
from ichflax.models import preprocess
from ichflax.serving.predictor import Predictor
from ichflax.spec import ModelSpec
from ichflax.training import reproduce


def test_reproduce_writes_one_side_by_side_report(tmp_path, capsys):
  data = _synth_data.build(tmp_path / "data", num=80, size=32)
  code = reproduce.main(["--data", data, "--workdir", str(tmp_path / "rep"), "--trainable", "all",
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
  assert "Preset: **paper**" in md and "tested: the **best** checkpoint" in md
  both = json.loads((tmp_path / "rep" / "reproduce.json").read_text())
  assert set(both) == {"binary", "subtype"}
  assert both["subtype"]["config"]["dropout"] == 0.3  # the paper's text, per task
  assert (Path(both["binary"]["config"]["workdir"]) / "report" / "accuracy.png").exists()
  assert both["binary"]["paper"]["table_derived"]["sensitivity"] == 1913 / 2000


def test_reproduce_uses_the_paper_presets():
  cfgs, workdir = reproduce.parse_args(["--data", "phantom"])
  cfg = cfgs["binary"]
  assert (cfg.image_size, cfg.trainable, cfg.draw, cfg.lr) == (224, "bn-head", "balanced", 1e-3)
  assert workdir == "runs/reproduce-paper" and cfgs["subtype"].batch_size == 8
  code, _ = reproduce.parse_args(["--data", "phantom", "--preset", "paper-code"])
  assert (code["binary"].epochs, code["subtype"].epochs) == (15, 90)


@pytest.mark.slow  # two tiny trainings and one Predictor compile: ~1 min on 2 cores
def test_paper_code_on_the_seed_png_layout(tmp_path, capsys):
  """The notebook's reading end to end on the phantom written as the seed's 128 px PNG set;
  its checkpoint's Predictor makes exactly the input the training eval step made."""
  src = phantom.write_rsna(tmp_path / "seed", 90, seed=5, size=64, workers=1,
                           png_size=phantom.PNG_SIZE)
  code = reproduce.main(["--data", str(src), "--preset", "paper-code", "--workdir",
                         str(tmp_path / "rep"), "--trainable", "all", "--image-size", "32",
                         "--epochs", "1", "--batch-size", "8", "--limit", "24",
                         "--no-progress"])
  assert code == 0
  md = (tmp_path / "rep" / "reproduce.md").read_text()
  assert "Preset: **paper-code**" in md and "tested: the **final** model" in md
  assert "(preset `paper-code`)" in md and "binary/report/accuracy.png" in md
  assert "0.920 | 0.957 |" in md  # the paper's Table 2, both readings
  both = json.loads((tmp_path / "rep" / "reproduce.json").read_text())
  spec = ModelSpec.from_json(both["binary"]["spec"])
  assert (spec.input_mode, spec.stored_size, spec.resize, spec.normalization) == (
      "grey", 128, "nearest", "rescale")
  assert both["binary"]["tested"] == "final"
  ckpt = tmp_path / "rep" / "binary"
  predictor = Predictor.from_checkpoint(ckpt)
  dataset = builders.dataset_info(builders.prepare(str(src), size=128, windows=1,
                                                   draw="paper-code"))["dataset_dir"]
  record = builders.open_split(dataset, "test")[0]
  png = src / phantom.PNG_IMAGES_DIR / f"{record['image_id']}.png"
  served = predictor.load(png).model_image
  np.testing.assert_array_equal(served, record["image"])  # the stored image, bit for bit
  eval_input = preprocess.model_input(record["image"][None], 32, spec.variant,
                                      resize=spec.resize, normalization=spec.normalization)
  served_input = preprocess.model_input(served[None], spec.image_size, spec.variant,
                                        resize=spec.resize, normalization=spec.normalization)
  np.testing.assert_array_equal(served_input, eval_input)
  prob = predictor.predict([png], gradcam_on=False)[0].probabilities["any"]
  assert 0.0 <= prob <= 1.0
