"""Series context: series order in the data, 2.5D input (--context K), the sequence stage
(--sequence-from), and both served through the CLI and the app, at CI size."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import _synth_data
import numpy as np
import pydicom
import pytest
from flax import nnx
from test_predictor import write_dicom

from demo import callbacks, summary
from ichflax import checkpoint, models, predict
from ichflax.config import AugmentConfig, TrainConfig
from ichflax.data import builders, context, dicom, splits
from ichflax.models import preprocess, sequence
from ichflax.serving.predictor import Predictor
from ichflax.training import cli as train_cli
from ichflax.training import loop


def test_neighbours_follow_series_order_and_repeat_at_the_edges():
  # Stored out of order, two series and one slice of none.
  ids = ["b", "a", "a", "b", "a", ""]
  pos = [10.0, 5.0, -5.0, 0.0, 0.0, np.nan]
  order = context.series_order(ids, pos, [-1] * 6)
  assert [m.tolist() for m in order] == [[3, 0], [2, 4, 1], [5]]
  table = context.neighbours(order, 6, 3)
  assert table[4].tolist() == [2, 4, 1]  # the middle slice of series a: below, itself, above
  assert table[2].tolist() == [2, 2, 4]  # the first repeats itself where the series ends
  assert table[5].tolist() == [5, 5, 5]  # a lone slice reads only itself
  assert context.spacing(np.array([0.0, 5.0, 10.0])) == 5.0


def test_instance_numbers_order_a_series_without_positions():
  order = context.series_order(["s"] * 3, [np.nan] * 3, [3, 1, 2])
  assert order[0].tolist() == [1, 2, 0]


def test_a_draw_without_whole_series_is_refused_for_context(tmp_path):
  meta = {"series_id": ["a", "b", "c", "d"], "position": np.zeros(4), "instance": np.ones(4)}
  with pytest.raises(builders.DataError, match="--draw by-patient"):
    splits._neighbours(meta, 3, tmp_path, "train")
  with pytest.raises(builders.DataError, match="before datasets kept series order"):
    splits._neighbours({"labels": np.zeros((4, 6))}, 3, tmp_path, "train")


def test_widened_stem_reads_identical_slices_as_the_pretrained_model():
  """Ian Pan's expansion: the kernel repeated per slice and scaled by 1/K keeps the features."""
  one = models.build_classifier("binary", "keras", rngs=nnx.Rngs(0))
  three = models.build_classifier("binary", "keras", rngs=nnx.Rngs(0), context=3)
  one.eval()
  three.eval()
  assert three.backbone.conv1.kernel.value.shape == (7, 7, 9, 64)
  x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  a = one(preprocess.model_input(x, 32, "keras"))
  b = three(preprocess.model_input(np.concatenate([x] * 3, -1), 32, "keras", context=3))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3)


def test_grey_slices_become_rgb_slice_by_slice():
  grey = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)  # 3 grey slices
  rgb = np.asarray(preprocess.to_rgb(grey, context=3))
  np.testing.assert_array_equal(rgb[..., 3:6], np.repeat(grey[..., 1:2], 3, -1))


def test_position_is_taken_along_the_slice_normal(tmp_path):
  """A tilted gantry: z alone is not the slice order's coordinate, the normal is."""
  path = write_dicom(tmp_path / "tilted.dcm", np.zeros((32, 32), np.float32), z=10.0)
  ds = pydicom.dcmread(path)
  c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
  ds.ImageOrientationPatient = [1, 0, 0, 0, c, -s]
  ds.ImagePositionPatient = [0.0, 30.0, 10.0]
  ds.save_as(path)
  _, geometry = dicom.read_slice(path)
  normal = np.cross([1, 0, 0], [0, c, -s])
  assert geometry.position == pytest.approx(float(np.dot([0.0, 30.0, 10.0], normal)))
  assert geometry.position_z == 10.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A K = 3 multilabel run and a sequence stage trained on it, both at CI size."""
  root = tmp_path_factory.mktemp("series_context")
  dataset = _synth_data.build(root / "data", num=90, size=32)
  cfg = TrainConfig(task="multilabel", data=dataset, trainable="all", epochs=1, batch_size=8,
                    image_size=32, context=3, workdir=str(root / "k3"), progress_bar=False,
                    draw="by-patient", augment=AugmentConfig(appearance=1.0),
                    checkpoint_every=0, tensorboard=False)
  slice_run = loop.run(cfg)
  code = train_cli.main(["--sequence-from", str(root / "k3"), "--sequence-steps", "30",
                         "--workdir", str(root / "seq")])
  assert code == 0
  return {"root": root, "dataset": dataset, "k3": Path(slice_run["checkpoint"]),
          "seq": root / "seq", "slice_run": slice_run}


def _series_files(root: Path) -> list[Path]:
  """The DICOMs of the largest series of the test phantom's source folder."""
  by_series: dict[str, list[Path]] = {}
  for f in sorted((root / "data" / "raw").rglob("*.dcm")):
    by_series.setdefault(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID,
                         []).append(f)
  return max(by_series.values(), key=len)


def test_context_is_recorded_and_the_report_has_series_columns(runs):
  spec = checkpoint.read_spec(runs["k3"])
  assert spec.context == 3
  test = runs["slice_run"]["metrics"]["test"]
  assert test["series"]["n"] >= 2 and "any" in test["series"]["auc"]
  assert "Per-series ROC AUC" in Path(runs["slice_run"]["report_md"]).read_text()
  report = json.loads((runs["seq"] / "report" / "report.json").read_text())
  assert set(report["test"]) == {"slice model", "with sequence stage"}
  md = (runs["seq"] / "report" / "report.md").read_text()
  assert "per-series AUC (any)" in md and "with sequence stage" in md
  served = runs["seq"] / "checkpoint"
  assert checkpoint.read_series(served) is not None  # the stage beside the slice model
  assert checkpoint.read_spec(served).context == 3
  assert "## Sequence stage" in (served / "README.md").read_text()  # its card says so


def test_predict_reads_a_series_with_both_stages_and_a_lone_slice_alone(runs, tmp_path,
                                                                        capsys):
  files = _series_files(runs["root"])
  series_dir = tmp_path / "series"
  series_dir.mkdir()
  for f in files:
    shutil.copy(f, series_dir / f.name)
  assert predict.main([str(series_dir), "--checkpoint", str(runs["seq"]), "--batch-size", "2",
                       "--show-out-of-domain"]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  slices = [r for r in rows if r["type"] == "slice"]
  assert len(slices) == len(files) >= 3
  assert all(r["series_model"] is True and "slice_probabilities" in r for r in slices)
  # Sorted along the series, the middle slices read three distinct slices, the ends two.
  assert sorted(r["context"] for r in slices) == [2, 2] + [3] * (len(files) - 2)
  table = tmp_path / "slices.csv"
  assert predict.main([str(series_dir), "--checkpoint", str(runs["seq"]), "--show-out-of-domain",
                       "--format", "csv", "-o", str(table)]) == 0
  with table.open() as f:
    csv_slices = [row for row in csv.DictReader(f) if row["type"] == "slice"]
  assert [(r["context"], r["series_model"]) for r in csv_slices] == [
      (str(r["context"]), "True") for r in slices]
  stage = checkpoint.read_series(runs["seq"])[1]
  series = next(r for r in rows if r["type"] == "series")
  assert series["thresholds"]["any"] == pytest.approx(stage.operating_points()["any"], abs=1e-4)

  assert predict.main([str(files[0]), "--checkpoint", str(runs["seq"]),
                       "--show-out-of-domain"]) == 0
  alone = next(json.loads(line) for line in capsys.readouterr().out.splitlines()
               if json.loads(line)["type"] == "slice")
  assert alone["context"] == 1 and alone["series_model"] is False
  assert "read alone" in alone["note"]


def test_the_app_plots_the_series_before_and_after_the_sequence_stage(runs, tmp_path):
  """The page's callbacks on a zipped series (tests/test_app.py serves them over Gradio)."""
  files = _series_files(runs["root"])
  upload = tmp_path / "series.zip"
  with zipfile.ZipFile(upload, "w") as z:
    for f in files:
      z.write(f, f.name)
  page = callbacks.Demo(Predictor.from_checkpoint(runs["seq"]), tmp_path / "uploads")
  result = page.analyze([str(upload)], reveal=True)
  assert set(result.plot["output"]) >= {summary.BEFORE_SERIES, "hemorrhage (any)"}


def test_the_sequence_stage_starts_as_the_slice_model():
  """Its slice output is a residual at zero: untrained, it answers as the slice model."""
  spec = sequence.SeriesSpec(features=8, outputs=("any",), activation="sigmoid", window=4,
                             stride=2)
  refiner = sequence.Refiner(sequence.SeriesModel(spec, rngs=nnx.Rngs(0)), spec)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(9, 1)).astype(np.float32)
  refined, _ = refiner(rng.normal(size=(9, 8)).astype(np.float32), logits, 5.0)
  np.testing.assert_allclose(refined, logits, atol=1e-6)
  assert sequence.windows(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (5, 9)]


def test_an_export_keeps_the_sequence_stage(runs, tmp_path):
  out = checkpoint.export_inference(runs["seq"], tmp_path / "export")
  _, spec = checkpoint.read_series(out)
  assert spec == checkpoint.read_series(runs["seq"])[1]


def test_the_side_by_side_bench_reads_the_stage_reports_and_times_serving(runs, tmp_path,
                                                                         capsys):
  from bench import series_context
  series_dir = tmp_path / "series"
  series_dir.mkdir()
  for f in _series_files(runs["root"]):
    shutil.copy(f, series_dir / f.name)
  out = tmp_path / "side.json"
  # The training dataset stands in for an unseen one: the path is what is tested here.
  assert series_context.main(["--stages", str(runs["seq"]), "--series", str(series_dir),
                              "--held-out", runs["dataset"], "--bootstrap", "20", "--repeats", "1",
                              "--out", str(out)]) == 0
  record = json.loads(out.read_text())
  assert set(record["rows"]) == set(record["held_out"]) == {"K = 3", "K = 3 + sequence stage"}
  assert all(ms > 0 for ms in record["serve_ms"].values()) and record["machine"]["cpu_count"]
  staged = record["held_out"]["K = 3 + sequence stage"]
  assert staged["n"] == sum(len(builders.read_meta(runs["dataset"], s)["labels"])
                            for s in splits.SPLITS)  # every split, every slice
  assert set(staged["gain"]) == {"vs K = 3"} and record["held_out"]["K = 3"]["gain"] == {}
  table = capsys.readouterr().out
  assert "| K = 3 + sequence stage |" in table and "serve one series, ms" in table


def test_evaluate_measures_what_the_sequence_checkpoint_serves(runs, tmp_path):
  from ichflax.trust import evaluate
  out = tmp_path / "evaluation"
  assert evaluate.main([str(runs["seq"]), "--data", runs["dataset"], "--out", str(out),
                        "--bootstrap", "20"]) == 0
  summary = json.loads((out / "evaluation.json").read_text())
  assert summary["series_model"] is True and "any" in summary["series"]["auc"]
  trained = json.loads((runs["seq"] / "report" / "report.json").read_text())
  assert summary["log_loss"] == pytest.approx(
      trained["test"]["with sequence stage"]["log_loss"], rel=1e-6)


def test_the_bench_compares_each_stage_with_its_own_slice_model_and_the_first():
  from bench import series_context
  rng = np.random.default_rng(0)
  targets = (rng.random((40, 6)) < 0.3).astype(float)
  series = np.repeat(np.arange(8), 5).astype(str)
  names = ("K = 1", "K = 1 + sequence stage", "K = 3", "K = 3 + sequence stage")
  runs = {n: (rng.random((40, 6)), targets, series, "multilabel") for n in names}
  out = series_context.compare(runs, resamples=10)
  assert set(out["K = 3 + sequence stage"]["gain"]) == {"vs K = 1", "vs K = 3"}
  assert set(out["K = 3"]["gain"]) == {"vs K = 1"} and out["K = 1"]["gain"] == {}
