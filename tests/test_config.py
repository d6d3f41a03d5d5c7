"""Configs: presets follow the paper, each field defined once, bad configs fail with a message."""

import argparse
import dataclasses

import pytest

from ichflax import config


def test_paper_presets_per_task():
  binary = config.preset("paper", task="binary")
  subtype = config.preset("paper", task="subtype")
  assert (binary.resolved_dropout, binary.resolved_batch_size) == (0.4, 16)
  assert (subtype.resolved_dropout, subtype.resolved_batch_size) == (0.3, 8)
  assert binary.image_size == 224 and binary.recipe == "paper" and binary.lr == 1e-3
  assert binary.protocol == "paper"
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
    (dict(lr=0.0), "lr must be greater than 0.0, got 0.0"),
    (dict(batch_size=0), "batch size must be at least 1, got 0"),
    (dict(protocol="random"), "unknown protocol"),
    (dict(augment=config.AugmentConfig(zoom=1.0)), r"augment zoom must be in \[0.0, 1.0\)"),
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


def test_old_seed_names_are_aliases_of_paper(caplog):
  with caplog.at_level("WARNING", logger="ichflax.config"):
    cfg = config.preset("seed", recipe="seed", protocol="seed")
  assert (cfg.recipe, cfg.protocol, cfg.image_size) == ("paper", "paper", 224)
  assert "now called 'paper'" in caplog.text
  assert config.TrainConfig.from_dict({"recipe": "seed"}).recipe == "paper"


def test_every_field_has_one_flag_and_its_roles():
  """Flags, sweep table and resume check are derived from the dataclass fields, none missed."""
  parser = argparse.ArgumentParser()
  config.add_flags(parser)
  flags = {a.dest for a in parser._actions if a.dest != "help"}
  leaves = {n for n, _, f in config._walk() if config._option(f).flag}
  assert flags == leaves  # every field, nested augmentation included, has exactly one flag
  assert "preset" not in flags  # set by --preset itself, recorded for the report
  a = parser.parse_args(["--batch-size", "32", "--no-augment", "--augment-zoom", "0.5",
                         "--recipe", "full", "--no-progress"])
  values = config.flags_to_values(a)
  assert values == {"batch_size": 32, "augment.enabled": False, "augment.zoom": 0.5,
                    "recipe": "full", "progress": False}
  cfg = config.with_values(config.TrainConfig(), values)
  assert cfg.augment == config.AugmentConfig(enabled=False, zoom=0.5) and cfg.batch_size == 32
  with pytest.raises(SystemExit):
    parser.parse_args(["--recipe", "linear"])  # choices come from the field
  assert config.SWEEPABLE["dropout"] is float and config.SWEEPABLE["batch_size"] is int
  assert "progress" not in config.SWEEPABLE and "workdir" not in config.SWEEPABLE
  assert {"task", "dropout", "augment.zoom", "recipe"} <= set(config.RESUME_FIELDS)
  assert not {"epochs", "workdir", "keep", "progress"} & set(config.RESUME_FIELDS)
  for f in dataclasses.fields(config.TrainConfig):
    assert f.metadata["option"].help, f.name


def test_dropout_bounds_are_half_open(tmp_path):
  """[0, 1): no dropout is allowed, dropping every unit is not."""
  cfg = config.TrainConfig(workdir=str(tmp_path))
  config.validate(cfg.replace(dropout=0.0))
  config.validate(cfg.replace(image_size=config.MIN_IMAGE_SIZE))  # the smallest size is allowed
  with pytest.raises(config.ConfigError, match=r"dropout must be in \[0.0, 1.0\), got 1.0"):
    config.validate(cfg.replace(dropout=1.0))
