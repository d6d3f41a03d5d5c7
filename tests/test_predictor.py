"""Predictor on PNG / JPG / DICOM, batching, several checkpoints; the serving tests' fixtures.

The checkpoint is real: one short multilabel epoch through `ichflax.train.run` on a small phantom
dataset (64 px model input), shared by every serving test in the session.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import _synth_data
import numpy as np
import pydicom
import pytest
from PIL import Image

from ichflax import tasks
from ichflax.config import AugmentConfig, TrainConfig
from ichflax.data import ct_writer, dicom, image, items, phantom
from ichflax.serving import gradcam
from ichflax.serving import predictor as predictor_lib
from ichflax.training import loop as train
from ichflax.trust import verdict

SUBDURAL = tasks.SUBTYPES.index("subdural")


# pytest gives every module that imports a fixture its own copy, with its own session-scoped
# value; the serving modules import these, so the expensive values are made once here instead.
_SHARED: dict = {}


def shared(name: str, make):
  """One value per test session, whichever serving module asks first."""
  if name not in _SHARED:
    _SHARED[name] = make()
  return _SHARED[name]


def _train_tiny(root: Path) -> Path:
  """A real training checkpoint: multilabel, full recipe, 64 px, one short epoch."""
  dataset = _synth_data.build(root / "data", num=120, size=64)
  cfg = TrainConfig(task="multilabel", data=dataset, trainable="all", epochs=1, batch_size=8,
                    image_size=64, limit=8, workdir=str(root / "run"), progress_bar=False,
                    draw="by-patient", augment=AugmentConfig(enabled=False), checkpoint_every=0)
  return Path(train.run(cfg)["checkpoint"])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
  return shared("checkpoint", lambda: _train_tiny(tmp_path_factory.mktemp("tiny_checkpoint")))


@pytest.fixture(scope="session")
def predictor(tiny_checkpoint) -> predictor_lib.Predictor:
  return shared("predictor", lambda: predictor_lib.Predictor.from_checkpoint(tiny_checkpoint))


def write_dicom(path: Path, hu: np.ndarray, index: int = 0, z: float = 0.0,
                series: str = "ID_series", **tags) -> Path:
  """A CT slice through the data layer's writer, plus any extra (e.g. identifying) tags."""
  geo = items.SliceGeometry(f"ID_test{index:03d}", "ID_study", series, index + 1, z)
  ct_writer.write_ct(path, hu, geo, patient_id="PHANTOM")
  if tags:
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
      setattr(ds, key, value)
    ds.save_as(path)
  return path


def multiframe_dicom(path: Path, hu: np.ndarray) -> Path:
  """A valid two-frame DICOM: the same slice twice."""
  write_dicom(path, hu)
  ds = pydicom.dcmread(path)
  ds.NumberOfFrames = 2
  ds.PixelData = ds.PixelData * 2
  ds.save_as(path)
  return path


def huge_png(path: Path, side: int = 10_000) -> Path:
  """A real side x side PNG: a few hundred kB on disk, 100 MB once decoded."""
  Image.fromarray(np.zeros((side, side), np.uint8)).save(path, optimize=False)
  return path


def png_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, fmt)
  return buf.getvalue()


@pytest.fixture(scope="module")
def bleed():
  return phantom.make_slice(np.random.default_rng(7), 96, (SUBDURAL,))


def check_prediction(p: predictor_lib.Prediction, shape: tuple[int, int], labels) -> None:
  assert tuple(p.probabilities) == labels
  assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
  assert p.cam.shape == shape and p.cam.dtype == np.float32
  assert p.cam.min() >= 0.0 and p.cam.max() <= 1.0
  box = p.box
  if p.cam.max() == 0:  # no positive evidence anywhere: no salient region either
    assert box is None
  else:
    assert 0 <= box.x0 < box.x1 <= shape[1] and 0 <= box.y0 < box.y1 <= shape[0]
  assert p.label == verdict.decide(p.probabilities, p.thresholds)


def test_spec_drives_preprocessing(predictor):
  spec = predictor.specs[0]
  assert spec.task == "multilabel" and predictor.labels == tasks.LABELS
  assert predictor.stored_size == 64 and len(predictor.windows) == 3
  assert "phantom" in predictor.summary()


def test_png_and_jpg_any_size_grey_or_rgb(predictor, bleed, tmp_path):
  grey = image.window(bleed.hu, *image.WINDOWS["brain"])[:, 10:80]  # not square
  rgb = np.asarray(Image.fromarray(image.slice_to_uint8(bleed.hu, image.THREE_WINDOWS, 96))
                   .resize((150, 150)))
  preds = predictor.predict([predictor.load(png_bytes(grey), "grey.png"),
                             predictor.load(png_bytes(rgb, "JPEG"), "rgb.jpg")])
  check_prediction(preds[0], grey.shape, tasks.LABELS)
  check_prediction(preds[1], (150, 150), tasks.LABELS)
  renamed = tmp_path / "really_a_png.dcm"  # content decides, not the file name
  renamed.write_bytes(png_bytes(grey))
  assert predictor.load(renamed).hu is None
  record = json.loads(json.dumps(preds[0].to_json()))
  assert record["file"] == "grey.png" and record["box_kind"] == gradcam.BOX_KIND
  assert record["hemorrhage_probability"] == round(preds[0].probabilities["any"], 4)


def test_dicom_follows_the_training_path(predictor, bleed, tmp_path):
  path = write_dicom(tmp_path / "a.dcm", bleed.hu)
  s = predictor.load(path)
  assert s.geometry.position_z == 0.0
  hu = dicom.read_hu(path)
  np.testing.assert_array_equal(s.model_image, image.slice_to_uint8(hu, predictor.windows, 64))
  from_file, from_hu = predictor.predict([path, hu])
  check_prediction(from_file, hu.shape, tasks.LABELS)
  assert from_file.probabilities == pytest.approx(from_hu.probabilities, abs=1e-6)


def test_batch_equals_one_at_a_time(predictor):
  rng = np.random.default_rng(1)
  slices = [phantom.make_slice(rng, 64, s).hu for s in ((), (SUBDURAL,), (0,))]
  together = predictor.predict(slices)  # 3 slices: padded to a batch of 4
  for hu, joint in zip(slices, together):
    alone, = predictor.predict([hu])
    assert joint.probabilities == pytest.approx(alone.probabilities, abs=1e-5)
    np.testing.assert_allclose(joint.cam, alone.cam, atol=1e-4)


def test_cam_class_choice(predictor, bleed):
  p, = predictor.predict([bleed.hu], cam_class="subdural")
  assert p.cam_class == "subdural"
  assert predictor.predict([bleed.hu])[0].cam_class == "any"
  with pytest.raises(ValueError, match="no loaded model predicts 'kidney'"):
    predictor.predict([bleed.hu], cam_class="kidney")


def test_binary_plus_subtype_checkpoints_merge(predictor, bleed):
  """`any` from the binary model, subtypes (softmax, given a bleed) from the subtype model."""
  from flax import nnx

  from ichflax import models
  trained, spec = predictor.models[0]
  pair = []
  for task in ("binary", "subtype"):  # the trained backbone under each task's own head
    model = models.Classifier(trained.backbone, tasks.get_task(task).num_outputs, 0.3,
                              rngs=nnx.Rngs(0))
    model.eval()
    pair.append((model, spec.replace(task=task, class_names=tasks.get_task(task).class_names,
                                     temperatures=(), thresholds=())))  # an untrained head
  both = predictor_lib.Predictor(pair)
  assert both.labels == tasks.LABELS
  p, = both.predict([bleed.hu])
  assert sum(p.probabilities[k] for k in tasks.SUBTYPES) == pytest.approx(1.0, abs=1e-5)
  assert p.cam_class == "any"
  assert both.predict([bleed.hu], cam_class="epidural")[0].cam_class == "epidural"
  with pytest.raises(ValueError, match="overlap in their labels"):
    predictor_lib.Predictor([predictor.models[0], pair[0]])
  with pytest.raises(ValueError, match="different preprocessing"):
    predictor_lib.Predictor([pair[0], (pair[1][0], pair[1][1].replace(windows=((40, 80),)))])


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> Path:
  return shared("bad_files", lambda: _make_bad_files(tmp_path_factory.mktemp("bad")))


def _make_bad_files(d: Path) -> Path:
  """One of each kind of bad upload, made for real."""
  hu = phantom.make_slice(np.random.default_rng(3), 64).hu
  (d / "empty.dcm").write_bytes(b"")
  (d / "notes.txt").write_text("patient notes, not an image\n" * 20)
  good = write_dicom(d / "good.dcm", hu).read_bytes()
  (d / "cut.dcm").write_bytes(good[:len(good) // 2])
  multiframe_dicom(d / "multi.dcm", hu)
  huge_png(d / "huge.png")
  (d / "good.dcm").unlink()
  return d


def test_serving_programs_are_compiled_with_the_cpu_options(predictor):
  """The Predictor's forward is where a CPU Space spends its time (docs/benchmarks.md)."""
  run = predictor._runs[0]
  images = np.zeros((1, predictor.stored_size, predictor.stored_size, len(predictor.windows)),
                    np.uint8)
  hlo = run.forward.lower(run.state, images).compile().as_text()
  cam = run.forward_cam.lower(run.state, images, np.full(1, -1, np.int32)).compile().as_text()
  assert "convolution" in hlo and "__ynn_fusion" not in hlo + cam
