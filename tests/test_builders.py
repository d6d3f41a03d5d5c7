"""Phantom -> RSNA-format folder -> TFDS (no TensorFlow) -> data source -> loader, bad files."""

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ichflax import tasks
from ichflax.data import __main__ as cli
from ichflax.data import builders, convert, dicom, image, inputs, loader, phantom, rsna, splits

NUM = 72  # > the 64 files that switch conversion to worker processes


@pytest.fixture(scope="module")
def rsna_dir(tmp_path_factory):
  """A phantom RSNA folder with the bad inputs a real download can hold."""
  root = phantom.write_rsna(tmp_path_factory.mktemp("rsna"), NUM, seed=4, size=64, workers=1)
  images = sorted((root / phantom.IMAGES_DIR).glob("*.dcm"))
  truncated, deleted, renamed = images[:3]
  truncated.write_bytes(truncated.read_bytes()[:-300])  # cut inside the pixel data
  deleted.unlink()
  Image.new("L", (8, 8)).save(renamed, format="PNG")  # a PNG named .dcm
  (root / phantom.IMAGES_DIR / "ID_unlabelled.dcm").write_bytes(images[3].read_bytes())
  with open(root / phantom.CSV_NAME, "a") as fh:  # one image with conflicting duplicates
    fh.write(f"{images[4].stem}_any,{1 - _labels(root)[images[4].stem][tasks.ANY]}\n")
  return root, {"truncated": truncated, "deleted": deleted, "renamed": renamed,
                "conflict": images[4]}


def _labels(root):
  out = {}
  with open(root / phantom.CSV_NAME) as fh:
    for image_id, y in list(csv.reader(fh))[1:]:
      key, kind = image_id.rsplit("_", 1)
      out.setdefault(key, np.zeros(6, int))[tasks.LABELS.index(kind)] = int(y)
  return out


@pytest.fixture(scope="module")
def full(rsna_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("tfds")
  cfg = builders.BuildConfig(size=32, draw="by-patient", workers=2)
  return builders.build_rsna(rsna_dir[0], out, cfg), out


def test_round_trip_label_counts_match_the_csv(rsna_dir, full, capsys):
  root, bad = rsna_dir
  dataset_dir, _ = full
  csv_labels = _labels(root)
  good = {k: v for k, v in csv_labels.items() if k not in {p.stem for p in bad.values()}}
  seen, total = set(), np.zeros(6, int)
  for split in rsna.SPLITS:
    source = builders.open_split(dataset_dir, split)
    meta = builders.read_meta(dataset_dir, split)
    assert len(source) == len(meta["image_id"]) > 0
    for batch_start, batch in zip(range(0, len(source), 8), loader.batches(
        source, np.arange(len(source)), 8, shuffle=False)):
      assert batch["image"].dtype == np.uint8 and batch["image"].shape[1:] == (32, 32, 3)
      total += batch["labels"][batch["mask"]].sum(axis=0)
      ids = meta["image_id"][batch_start:batch_start + 8]
      np.testing.assert_array_equal(batch["labels"][batch["mask"]], meta["labels"][
          batch_start:batch_start + len(ids)])
    record = source[0]
    assert record["image_id"] == meta["image_id"][0] and isinstance(record["study_id"], str)
    np.testing.assert_array_equal(record["labels"], csv_labels[record["image_id"]])
    seen |= set(meta["image_id"])
  assert seen == set(good)  # nothing lost, nothing extra
  np.testing.assert_array_equal(total, sum(good.values()))
  assert "tensorflow" not in sys.modules


def test_bad_files_are_skipped_and_reported(rsna_dir, full):
  _, bad = rsna_dir
  dataset_dir, _ = full
  info = builders.dataset_info(dataset_dir)
  assert info["skipped"] == 4
  report = (dataset_dir / builders.REPORT_FILE).read_text()
  assert (f"{bad['truncated']}: its Explicit VR Little Endian pixel data cannot be decoded: the "
          "file is damaged or truncated") in report
  assert f"{bad['deleted']}: file missing" in report
  assert f"{bad['renamed']}: not a DICOM file: it is a PNG image" in report
  assert f"{bad['conflict'].stem}: conflicting duplicate rows for any" in report


def test_full_split_is_by_study_and_info_says_synthetic(full):
  dataset_dir, _ = full
  studies = {s: set(builders.read_meta(dataset_dir, s)["study_id"]) for s in rsna.SPLITS}
  assert all(studies.values()) and "" not in studies["train"]
  assert not studies["train"] & studies["test"] and not studies["train"] & studies["validation"]
  info = builders.dataset_info(dataset_dir)
  assert info["source"] == "phantom" and info["data"].startswith("synthetic phantom")
  assert info["windows"] == [list(w) for w in image.THREE_WINDOWS] and info["size"] == 32
  assert (info["draw"], info["channels"]) == ("by-patient", 3)
  assert dataset_dir.parts[-3] == "ich_phantom"
  assert all(g == tasks.NO_GROUP for s in rsna.SPLITS
             for g in builders.read_meta(dataset_dir, s)["group"])


def test_resume_converts_only_what_is_missing(rsna_dir, full, monkeypatch):
  dataset_dir, out = full
  work = sorted((out / "_work" / "ich_phantom" / "s32_w3").glob("*/*.png"))
  for png in work[:5]:  # as if the build had been interrupted before these
    png.unlink()
  shutil.rmtree(dataset_dir.parent.parent)
  calls = []
  real = dicom.read_slice
  monkeypatch.setattr(dicom, "read_slice", lambda p: calls.append(p) or real(p))
  again = builders.build_rsna(rsna_dir[0], out, builders.BuildConfig(size=32, draw="by-patient",
                                                                      workers=1))
  assert again == dataset_dir
  # The 5 deleted images plus the 2 bad DICOMs that are retried; the rest come from the cache.
  assert len(calls) == 7
  assert builders.dataset_info(again)["splits"] == builders.dataset_info(dataset_dir)["splits"]


def test_paper_protocol_build_is_balanced(rsna_dir, tmp_path):
  dataset_dir = builders.build_rsna(rsna_dir[0], tmp_path,
                                    builders.BuildConfig(size=32, windows=1, per_class=4))
  info = builders.dataset_info(dataset_dir)
  assert info["splits"] == {"train": 12, "validation": 6, "test": 6}
  assert info["windows"] == [list(image.WINDOWS["brain"])] and info["per_class"] == 4
  for split in rsna.SPLITS:
    meta = builders.read_meta(dataset_dir, split)
    assert len(set(np.bincount(meta["group"], minlength=6).tolist())) == 1
  assert builders.open_split(dataset_dir, "test")[0]["image"].shape == (32, 32, 1)


def _png_folders(root: Path, per_class: int) -> dict[Path, np.ndarray]:
  """The paper's layout: a folder per subtype and "No", brain-window phantom PNGs (48 px) in
  each; returns every file with the labels its folder stands for."""
  rng = np.random.default_rng(0)
  files = {}
  for name in [*tasks.SUBTYPES, "No"]:
    (root / name).mkdir(parents=True)
    labels, subtypes = np.zeros(6, np.int32), ()
    if name in tasks.SUBTYPES:
      subtypes = (tasks.LABELS.index(name),)
      labels[[*subtypes, tasks.LABELS.index("any")]] = 1
    for i in range(per_class):
      hu = phantom.make_slice(rng, 48, subtypes).hu
      files[root / name / f"{i}.png"] = labels
      Image.fromarray(image.window(hu, 40, 80)).save(root / name / f"{i}.png")
  return files


def test_png_folders(tmp_path):
  _png_folders(tmp_path / "png", per_class=4)
  (tmp_path / "png" / "subdural" / "notes.txt").write_text("not an image")
  (tmp_path / "png" / "epidural" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
  dataset_dir = builders.prepare(tmp_path / "png", size=32, windows=1, draw="by-patient",
                                 out=tmp_path / "out")
  info = builders.dataset_info(dataset_dir)
  assert info["source"] == "png" and info["windows"] is None and info["skipped"] == 2
  report = (Path(info["dataset_dir"]) / builders.REPORT_FILE).read_text()
  assert "notes.txt: not a PNG/JPG image" in report
  assert "broken.png: damaged or truncated image" in report
  assert sum(info["splits"].values()) == 24
  meta = builders.read_meta(dataset_dir, "train")
  for labels, image_id in zip(meta["labels"], meta["image_id"]):
    folder = int(image_id.split("_")[0])  # image ids are <class folder>_<file stem>
    expected = np.zeros(6, int)
    if folder < 5:
      expected[[folder, tasks.ANY]] = 1
    np.testing.assert_array_equal(labels, expected)
  with pytest.raises(builders.DataError, match="expected one folder per class"):
    builders.build_png(tmp_path / "png" / "subdural", tmp_path / "out")
  # Another folder with the same file names, built into the same cache: its own dataset and
  # its own images, never the first folder's.
  shutil.copytree(tmp_path / "png", tmp_path / "png2")
  for path in (tmp_path / "png2").glob("*/*.png"):
    if path.name != "broken.png":
      Image.new("L", (48, 48), 255).save(path)
  other = builders.prepare(tmp_path / "png2", size=32, windows=1, draw="by-patient",
                           out=tmp_path / "out")
  assert other != dataset_dir and "png2" in builders.dataset_info(other)["data"]
  assert builders.open_split(other, "train")[0]["image"].min() == 255


def test_cli_build_png_stores_each_file_as_serving_reads_it(tmp_path, capsys):
  """`data build --png`: every file of every class folder lands in a split, labelled by its
  folder, holding the model image `inputs.picture_slice` (the serving path) makes of it."""
  files = _png_folders(tmp_path / "png", per_class=3)
  assert cli.main(["build", "--png", str(tmp_path / "png"), "--out", str(tmp_path / "tfds"),
                   "--stored-size", "32", "--draw", "by-patient", "--workers", "1"]) == 0
  dataset_dir = capsys.readouterr().out.rsplit("dataset: ", 1)[1].strip()
  want = {inputs.picture_slice(path, stored_size=32).model_image.tobytes(): labels
          for path, labels in files.items()}
  assert len(want) == len(files) == 18  # no two alike: a stored image names its file
  stored = []
  for split in rsna.SPLITS:
    source, meta = builders.open_split(dataset_dir, split), builders.read_meta(dataset_dir, split)
    for i, labels in enumerate(meta["labels"]):
      record = source[i]
      assert record["image"].shape == (32, 32, 3)
      image = record["image"].tobytes()
      assert image in want, f"{record['image_id']}: none of the PNGs as picture_slice reads them"
      np.testing.assert_array_equal(record["labels"], want[image])
      np.testing.assert_array_equal(labels, record["labels"])
      stored.append(image)
  assert sorted(stored) == sorted(want)


def test_png_stored_dataset_warns_to_rebuild(full, tmp_path, caplog):
  """A dataset built before 1.1.0 stored its slices as PNG (tfds.features.Image): it still
  reads, with a warning to rebuild it; one in today's raw format opens without one."""
  from bench.loader_throughput import png_tfds  # the pre-1.1.0 format, built for real
  dataset_dir, _ = full

  def warned() -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ichflax.data.builders"]
  with caplog.at_level("WARNING", logger="ichflax.data.builders"):
    records = [builders.open_split(dataset_dir, "train")[i] for i in range(3)]
    assert not warned()
    png_tfds(tmp_path, records)
    old = builders.open_split(tmp_path / "tfds", "train")
  [warning] = warned()
  assert "stores its slices as PNG (dataset version 1.0.0)" in warning
  assert "rebuild (`python -m ichflax.data build`" in warning
  for i, record in enumerate(records):
    np.testing.assert_array_equal(old[i]["image"], record["image"])


def test_prepare_phantom_default_is_cached(tmp_path, monkeypatch):
  monkeypatch.setenv(builders.CACHE_ENV, str(tmp_path / "cache"))
  first = builders.prepare(None, size=32, num=60, draw="by-patient", workers=1)
  assert first.startswith(str(tmp_path / "cache"))
  info = builders.dataset_info(first)
  assert info["source"] == "phantom" and info["draw"] == "by-patient"
  assert min(info["splits"].values()) >= 3  # even 60 slices come as enough series to split
  assert info["data"].startswith("anatomy-based synthetic phantom")  # the atlas generator
  assert splits.data_name(info) == "anatomy-based synthetic phantom"  # as specs and cards say
  assert builders.prepare("phantom", size=32, num=60, draw="by-patient") == first  # reused
  assert builders.prepare(first) == first  # a TFDS dir is used as is
  assert builders.prepare(tmp_path / "cache") == first  # a folder above one dataset too


def test_prepare_and_open_errors(tmp_path, full):
  dataset_dir, _ = full
  with pytest.raises(builders.DataError, match="no such folder"):
    builders.prepare(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(builders.DataError, match="neither a built dataset"):
    builders.prepare(tmp_path / "empty")
  rsna_empty = tmp_path / "rsna_empty"
  (rsna_empty / "stage_2_train").mkdir(parents=True)
  rows = [f"ID_a_{k},0" for k in tasks.LABELS]
  (rsna_empty / "stage_2_train.csv").write_text("ID,Label\n" + "\n".join(rows) + "\n")
  with pytest.raises(builders.DataError, match="no .dcm or .png images"):
    builders.prepare(rsna_empty, out=tmp_path / "out")
  with pytest.raises(builders.DataError, match="no split 'dev'"):
    builders.open_split(dataset_dir, "dev")
  with pytest.raises(builders.DataError, match="unknown draw 'random': choose one of balanced, "):
    builders.BuildConfig(draw="random")


def test_cli_phantom_build_info(tmp_path, capsys):
  assert cli.main(["phantom", "--out", str(tmp_path / "raw"), "--slices", "30", "--matrix", "64",
                   "--per-series", "5", "--workers", "1"]) == 0
  assert len(list((tmp_path / "raw" / "stage_2_masks").glob("*.npz"))) == 6  # one per series
  assert cli.main(["build", "--rsna", str(tmp_path / "raw"), "--out", str(tmp_path / "tfds"),
                   "--stored-size", "32", "--draw", "by-patient", "--workers", "1"]) == 0
  assert "dataset: " in capsys.readouterr().out
  assert cli.main(["info", str(tmp_path / "tfds")]) == 0
  assert '"draw": "by-patient"' in capsys.readouterr().out
  assert cli.main(["build", "--rsna", str(tmp_path / "raw"), "--out", str(tmp_path / "t2"),
                   "--per-class", "500"]) == 2
  assert "use --per-class" in capsys.readouterr().err
  assert cli.main(["build", "--phantom", "40", "--out", str(tmp_path / "t3"), "--stored-size", "32",
                   "--draw", "by-patient", "--input-mode", "grey", "--workers", "1"]) == 0
  assert "ich_phantom/n40_sy0_by_patient_s32_w1_seed0" in capsys.readouterr().out
  assert cli.main(["preview", "--out", str(tmp_path / "docs" / "sheet.png"), "--matrix", "64"]) == 0
  assert Image.open(tmp_path / "docs" / "sheet.png").size == (1024, 768)  # 11 tiles of 256, 4 a row


def test_preview_by_default_writes_to_the_temporary_folder(tmp_path, monkeypatch):
  """Not into docs/ of wherever it runs: that would overwrite a tracked image."""
  import tempfile
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
  (tmp_path / "tmp").mkdir()
  (tmp_path / "repo").mkdir()
  monkeypatch.chdir(tmp_path / "repo")
  assert cli.main(["preview", "--matrix", "32"]) == 0
  assert (tmp_path / "tmp" / "ichflax_contact_sheet.png").is_file()
  assert list((tmp_path / "repo").iterdir()) == []


def test_jpeg_share_stores_some_images_as_a_jpeg_export_would(rsna_dir, tmp_path):
  cfg = builders.BuildConfig(size=32, draw="by-patient", workers=1, jpeg_share=0.5)
  qualities = [cfg.jpeg_quality(f"ID_{i:06x}") for i in range(2000)]
  drawn = [q for q in qualities if q is not None]
  assert 0.45 < len(drawn) / len(qualities) < 0.55 and min(drawn) >= 30 and max(drawn) <= 95
  assert len(set(drawn)) > 40 and cfg.jpeg_quality("ID_00002a") == cfg.jpeg_quality("ID_00002a")
  assert builders.BuildConfig().jpeg_quality("ID_00002a") is None
  source = sorted((rsna_dir[0] / phantom.IMAGES_DIR).glob("*.dcm"))[10]
  stored = {}
  for quality in (None, 30):
    job = convert.Job(str(source), str(tmp_path / f"{quality}.png"), "dicom", 64,
                      image.THREE_WINDOWS, quality)
    assert convert.run(job).error is None
    stored[quality] = np.asarray(Image.open(job.target), np.float32)
  diff = np.abs(stored[None] - stored[30])
  assert diff.max() > 0 and diff.mean() < 12  # the same slice, with JPEG's losses


def test_full_split_keeps_a_patients_studies_together(tmp_path):
  """Two studies of one patient (a follow-up scan) land in one split: the split is by patient,
  and the patient's ID is never stored, only its digest."""
  import pydicom
  root = phantom.write_rsna(tmp_path / "rsna", 48, seed=5, size=32, workers=1)
  files = sorted((root / phantom.IMAGES_DIR).glob("*.dcm"))
  studies = sorted({pydicom.dcmread(f).StudyInstanceUID for f in files})
  patient_of = {s: f"PATIENT-{i // 2}" for i, s in enumerate(studies)}  # two studies each
  for f in files:
    ds = pydicom.dcmread(f)
    ds.PatientID = patient_of[ds.StudyInstanceUID]
    ds.save_as(f)
  dataset = builders.build_rsna(root, tmp_path / "tfds", builders.BuildConfig(
      size=32, draw="by-patient", workers=1))
  split_of = {}
  for s in rsna.SPLITS:
    for study in builders.read_meta(dataset, s)["study_id"]:
      split_of.setdefault(patient_of[study], set()).add(s)
  assert len(patient_of) >= 6 and all(len(v) == 1 for v in split_of.values()), split_of
  cached = b"".join(p.read_bytes() for p in (tmp_path / "tfds").rglob("*") if p.is_file())
  assert b"PATIENT-" not in cached  # neither the records nor the image cache keep the ID
