"""Configs: presets follow the seed, and bad configs fail before any work with a clear message."""

import pytest

from ichflax import config


def test_seed_presets_per_task():
  binary = config.preset("seed", task="binary")
  subtype = config.preset("seed", task="subtype")
  assert (binary.resolved_dropout, binary.resolved_batch_size) == (0.4, 16)
  assert (subtype.resolved_dropout, subtype.resolved_batch_size) == (0.3, 8)
  assert binary.image_size == 224 and binary.recipe == "seed" and binary.lr == 1e-3
  demo = config.preset("cpu-demo")
  assert demo.recipe == "full" and demo.image_size < 224
  assert config.preset("cpu-demo", dropout=0.25).resolved_dropout == 0.25


def test_round_trip_through_dict():
  cfg = config.preset("cpu-demo", task="multilabel",
                      augment=config.AugmentConfig(rotation=5.0, flip=False))
  assert config.TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("changes,message", [
    (dict(task="segmentation"), "unknown task"),
    (dict(image_size=16), "image size 16"),
    (dict(image_size=100), "multiple of 32"),
    (dict(recipe="linear"), "unknown recipe"),
    (dict(dropout=1.0), "dropout"),
    (dict(epochs=0), "epochs"),
    (dict(lr=0.0), "learning rate"),
    (dict(dtype="float16"), "unknown dtype"),
    (dict(data="/no/such/dir"), "does not exist"),
    (dict(weights="/no/such/weights"), "not found"),
])
def test_bad_configs_fail_with_a_message(tmp_path, changes, message):
  cfg = config.TrainConfig(workdir=str(tmp_path / "run"), **changes)
  with pytest.raises(config.ConfigError, match=message):
    config.validate(cfg)


def test_batch_must_split_over_devices(tmp_path):
  cfg = config.TrainConfig(batch_size=6, workdir=str(tmp_path))
  with pytest.raises(config.ConfigError, match="multiple of the 4 devices"):
    config.validate(cfg, num_devices=4)
  config.validate(cfg.replace(batch_size=8), num_devices=4)


def test_no_space_for_checkpoints(tmp_path, monkeypatch):
  monkeypatch.setattr(config, "MIN_FREE_BYTES", 2**62)
  with pytest.raises(config.ConfigError, match="free"):
    config.validate(config.TrainConfig(workdir=str(tmp_path / "a" / "b")))


def test_unknown_preset():
  with pytest.raises(ValueError, match="unknown preset"):
    config.preset("fast")
