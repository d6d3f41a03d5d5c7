"""The paper's two readings as presets, the Keras-faithful options one by one, the seed's data."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from ichflax import config, tasks
from ichflax.data import builders, phantom, rsna
from ichflax.models import Head, preprocess
from ichflax.training import cli as train_cli


def test_presets_per_task():
  text = {t: config.preset("paper", task=t) for t in ("binary", "subtype")}
  code = {t: config.preset("paper-code", task=t) for t in ("binary", "subtype")}
  assert [(c.batch_size, c.dropout) for c in text.values()] == [(16, 0.4), (8, 0.3)]
  assert [(c.batch_size, c.epochs, c.dropout) for c in code.values()] == [(32, 15, 0.4),
                                                                          (32, 90, 0.3)]
  c = code["binary"]
  assert (c.input_mode, c.stored_size, c.resize, c.normalization, c.tested, c.draw) == (
      "grey", 128, "nearest", "rescale", "final", "paper-code")
  for cfg in (*text.values(), *code.values()):  # Keras 2's defaults in both readings
    assert (cfg.head_init, cfg.adam, cfg.bn_variance, cfg.loss_clip) == (
        "glorot", "keras", "unbiased", 1e-7)
  a = c.augment
  assert (a.keras, a.zoom_low, a.zoom_high, a.rotation, a.shift, a.shear, a.flip, a.fill) == (
      True, 0.0, 1.0, 20.0, 0.05, 0.05, True, "nearest")
  # Flags win over the per-task values; the preset's name is kept for the report.
  assert config.preset("paper-code", task="subtype", epochs=2).epochs == 2
  assert c.preset == "paper-code"


def test_glorot_head_initialiser():
  head = Head(2048, 1, 0.4, rngs=nnx.Rngs(0), kernel_init="glorot")
  k = np.asarray(head.hidden.kernel[...])
  limit = np.sqrt(6 / (2048 + 256))  # Keras glorot_uniform: U(-limit, limit)
  assert np.abs(k).max() <= limit and np.abs(k).max() > 0.99 * limit
  np.testing.assert_allclose(k.std(), limit / np.sqrt(3), rtol=0.02)
  lecun = np.asarray(Head(2048, 1, 0.4, rngs=nnx.Rngs(0)).hidden.kernel[...])
  np.testing.assert_allclose(lecun.std(), np.sqrt(1 / 2048), rtol=0.02)  # flax: LeCun normal


def test_loss_clip_is_keras_binary_crossentropy():
  task = tasks.get_task("binary")
  logits, targets = jnp.array([[40.0], [-40.0], [0.3]]), jnp.array([[0.0], [1.0], [1.0]])
  p = np.clip(1 / (1 + np.exp(-np.asarray(logits, np.float64))), 1e-7, 1 - 1e-7)
  t = np.asarray(targets)
  want = -(t * np.log(p) + (1 - t) * np.log(1 - p))[:, 0]
  np.testing.assert_allclose(task.loss(logits, targets, 1e-7), want, rtol=1e-4)
  assert float(task.loss(logits, targets)[0]) > 39  # unclipped: the full -log(sigmoid(-40))
  sub = tasks.get_task("subtype")
  onehot = jnp.eye(5)[:1]
  np.testing.assert_allclose(sub.loss(jnp.array([[-50.0, 50, 0, 0, 0]]), onehot, 1e-7),
                             [-np.log(1e-7)], rtol=1e-5)


def test_nearest_resize_is_pil_and_rescale_is_div_255():
  img = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 1), np.uint8)
  got = np.asarray(preprocess.model_input(img, 224, "keras", resize="nearest",
                                          normalization="rescale"))
  pil = np.asarray(Image.fromarray(img[0, ..., 0]).resize((224, 224), Image.Resampling.NEAREST))
  np.testing.assert_allclose(got[0], np.repeat(pil[..., None], 3, -1) / 255.0, atol=1e-7)


def test_paper_code_assignment_walks_the_csv():
  #                epi ipa ivh sah sdh any
  labels = np.array([[0, 1, 0, 1, 0, 1],   # ipa (first subtype that is 1)
                     [0, 1, 0, 0, 0, 1],   # ipa full (cap 1): nowhere
                     [0, 1, 0, 1, 0, 1],   # ipa full -> sah
                     [0, 0, 0, 0, 0, 0],   # none
                     [0, 0, 0, 0, 0, 0],   # none full
                     [1, 0, 0, 0, 1, 1]])  # epidural
  np.testing.assert_array_equal(rsna.paper_code_groups(labels, per_class=1),
                                [1, -1, 3, 5, -1, 0])


@pytest.fixture(scope="module")
def seed_png(tmp_path_factory):
  """The phantom written in the seed's layout: stage_1_train.csv + stage_1_train_images/*.png."""
  return phantom.write_rsna(tmp_path_factory.mktemp("seed"), 90, seed=3, size=64, workers=1,
                            png_size=phantom.PNG_SIZE)


def test_seed_png_layout_builds_with_the_code_protocol(seed_png, tmp_path):
  assert sorted(p.name for p in seed_png.iterdir()) == [
      phantom.MARKER, phantom.PNG_CSV_NAME, phantom.PNG_IMAGES_DIR]
  cfg = builders.BuildConfig(size=128, windows=1, draw="paper-code", workers=1)
  ds = builders.build_rsna(seed_png, tmp_path, cfg)
  info = builders.dataset_info(ds)
  assert info["draw"] == "paper-code" and info["skipped"] == 0 and info["channels"] == 1
  table = rsna.read_labels(seed_png / phantom.PNG_CSV_NAME)
  groups = rsna.paper_code_groups(table.labels)
  ids = np.array(table.image_ids)
  for split in rsna.SPLITS:
    meta = builders.read_meta(ds, split)
    for image_id, g in zip(meta["image_id"], meta["group"]):
      assert groups[ids == image_id][0] == g  # the parser's folder, not a random draw
  record = builders.open_split(ds, "test")[0]
  png = np.asarray(Image.open(seed_png / phantom.PNG_IMAGES_DIR / f"{record['image_id']}.png"))
  np.testing.assert_array_equal(record["image"][..., 0], png)  # the PNG's own grey values


def _class_tree(root, with_test=True):
  names = [*tasks.SUBTYPES, "no"]
  rng = np.random.default_rng(0)
  for name in names:
    for sub, count in (("", 6), ("test", 2 if with_test else 0)):
      folder = root / name / sub
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(count):
        Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).save(folder / f"{i}.png")
  return names


def test_class_folders_with_test_subfolders_give_the_test_split(tmp_path):
  _class_tree(tmp_path / "png")
  (tmp_path / "png" / "no" / "extra").mkdir()  # another subfolder: reported, not silent
  ds = builders.build_png(tmp_path / "png", tmp_path / "out",
                          builders.BuildConfig(size=16, windows=1, workers=1))
  test = builders.read_meta(ds, "test")
  assert len(test["image_id"]) == 12 and all("_test_" in i for i in test["image_id"])
  assert sum(len(builders.read_meta(ds, s)["image_id"]) for s in ("train", "validation")) == 36
  report = (ds / builders.REPORT_FILE).read_text()
  assert "extra: a subfolder, not used" in report


def test_per_class_errors_are_messages_and_the_flag_is_reachable(tmp_path, capsys):
  _class_tree(tmp_path / "png", with_test=False)
  argv = ["--data", str(tmp_path / "png"), "--workdir", str(tmp_path / "run"), "--no-progress-bar"]
  assert train_cli.main(argv + ["--preset", "paper"]) == 2  # default 2000 per class: too many
  err = capsys.readouterr().err
  assert err.startswith("error: not enough images for 2000 per class") and "--per-class" in err
  assert "Traceback" not in err
  cfg, _ = train_cli.parse_args(argv + ["--per-class", "5"])
  assert cfg.per_class == 5
  from ichflax.training import reproduce
  cfgs, _ = reproduce.parse_args(argv + ["--per-class", "5", "--preset", "paper-code"])
  assert {c.per_class for c in cfgs.values()} == {5}
