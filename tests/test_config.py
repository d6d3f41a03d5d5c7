"""Configs: presets follow the paper, each field defined once, bad configs fail with a message."""

import argparse
import dataclasses
import os
import re
import shutil

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
  assert config.preset("paper-code").epochs == 15  # no task given: the binary notebook's run


def test_round_trip_through_dict():
  cfg = config.preset("cpu-demo", task="multilabel",
                      augment=config.AugmentConfig(rotation=5.0, flip=False))
  assert config.TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("changes,message", [
    (dict(task="segmentation"), "unknown task"),
    (dict(image_size=16), "image size 16"),
    (dict(image_size=100), "multiple of 32"),
    (dict(recipe="linear"), "unknown recipe 'linear': choose one of paper, full"),
    (dict(dropout=1.0), "dropout"),
    (dict(epochs=0), "epochs"),
    (dict(lr=0.0), "lr must be greater than 0.0, got 0.0"),
    (dict(batch_size=0), "batch size must be at least 1, got 0"),
    (dict(protocol="random"), "unknown protocol"),
    (dict(augment=config.AugmentConfig(zoom=1.0)), r"augment zoom must be in \[0.0, 1.0\)"),
    (dict(augment=config.AugmentConfig(rotation=181.0)),
     r"augment rotation must be in \[0.0, 180.0\], got 181.0"),
    (dict(target_sensitivity=0.0), r"target sensitivity must be in \(0.0, 1.0\], got 0.0"),
    (dict(augment=config.AugmentConfig(zoom_low=1.2, zoom_high=0.8)),
     "augment zoom low 1.2 exceeds zoom high 0.8"),
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
  with pytest.raises(config.ConfigError, match="^batch size 6 must .* multiple of the 4 devices"):
    config.validate(cfg, num_devices=4)
  config.validate(cfg.replace(batch_size=8), num_devices=4)
  with pytest.raises(config.ConfigError, match="^eval batch size 6 must .* of the 4 devices"):
    config.validate(cfg.replace(batch_size=8, eval_batch_size=6), num_devices=4)
  config.validate(cfg.replace(batch_size=3))  # one device takes any batch


def test_no_space_for_checkpoints(tmp_path, monkeypatch):
  monkeypatch.setattr(config, "MIN_FREE_BYTES", 2**62)
  with pytest.raises(config.ConfigError, match=f"need about {2**42} MiB") as e:
    config.validate(config.TrainConfig(workdir=str(tmp_path / "a" / "b")))
  # Free space as the user's `df -m` shows it (other writers move it a little meanwhile).
  free = float(re.search(r"only (\d+) MiB free", str(e.value)).group(1))
  assert free == pytest.approx(shutil.disk_usage(tmp_path).free / 2**20, rel=0.05)


def test_unwritable_workdir(tmp_path):
  locked = tmp_path / "locked"
  locked.mkdir(mode=0o500)
  if os.access(locked, os.W_OK):
    pytest.skip("this user (root) may write anywhere")
  with pytest.raises(config.ConfigError, match=f"{locked} is not writable"):
    config.validate(config.TrainConfig(workdir=str(locked / "run")))


def test_unknown_preset():
  with pytest.raises(ValueError, match="unknown preset 'fast': choose one of paper, paper-code, "):
    config.preset("fast")


def test_old_seed_names_are_aliases_of_paper(caplog):
  with caplog.at_level("WARNING", logger="ichflax.config"):
    cfg = config.preset("seed", recipe="seed", protocol="seed")
  assert (cfg.recipe, cfg.protocol, cfg.image_size) == ("paper", "paper", 224)
  assert set(caplog.messages) == {f"{name} 'seed' is now called 'paper'"
                                  for name in ("preset", "recipe", "protocol")}
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
                         "--recipe", "full", "--no-progress-bar"])
  values = config.flags_to_values(a)
  assert values == {"batch_size": 32, "augment.enabled": False, "augment.zoom": 0.5,
                    "recipe": "full", "progress_bar": False}
  cfg = config.with_values(config.TrainConfig(), values)
  assert cfg.augment == config.AugmentConfig(enabled=False, zoom=0.5) and cfg.batch_size == 32
  with pytest.raises(SystemExit):
    parser.parse_args(["--recipe", "linear"])  # choices come from the field
  assert config.SWEEPABLE["dropout"] is float and config.SWEEPABLE["batch_size"] is int
  assert "progress_bar" not in config.SWEEPABLE and "workdir" not in config.SWEEPABLE
  assert {"task", "dropout", "augment.zoom", "recipe"} <= set(config.RESUME_FIELDS)
  assert not {"epochs", "workdir", "keep", "progress_bar"} & set(config.RESUME_FIELDS)
  for f in dataclasses.fields(config.TrainConfig):
    assert f.metadata["option"].help, f.name
  assert "epochs to train" in parser.format_help()  # each flag's help is its field's


def test_flags_for_some_fields_only():
  """`reproduce` offers a few training flags; the rest must not appear."""
  parser = argparse.ArgumentParser()
  config.add_flags(parser, only=("epochs", "augment.zoom"))
  assert {a.dest for a in parser._actions if a.dest != "help"} == {"epochs", "augment.zoom"}


def test_option_is_a_field_with_its_default_and_meaning():
  """Every field is declared through `option`; flags, sweeps, resume and validation read it."""
  @dataclasses.dataclass(frozen=True)
  class Tiny:
    side: int = config.option(3, "side in pixels", low=1, sweep=True)

  (f,) = dataclasses.fields(Tiny)
  assert Tiny().side == 3
  assert config._option(f) == config.Option("side in pixels", low=1, sweep=True)


def test_dropout_bounds_are_half_open(tmp_path):
  """[0, 1): no dropout is allowed, dropping every unit is not."""
  cfg = config.TrainConfig(workdir=str(tmp_path))
  config.validate(cfg.replace(dropout=0.0))
  config.validate(cfg.replace(image_size=config.MIN_IMAGE_SIZE))  # the smallest size is allowed
  with pytest.raises(config.ConfigError, match=r"dropout must be in \[0.0, 1.0\), got 1.0"):
    config.validate(cfg.replace(dropout=1.0))


def test_configs_at_the_edge_of_what_is_allowed_pass(tmp_path):
  """Closed bounds include their ends; a fixed zoom (low = high) or one zoom end is fine; data
  and weights that exist, or the named phantom, pass."""
  weights = tmp_path / "weights.npz"
  weights.write_bytes(b"")
  cfg = config.TrainConfig(workdir=str(tmp_path), target_sensitivity=1.0, data="phantom",
                           weights=str(weights))
  config.validate(cfg)
  config.validate(cfg.replace(data=str(tmp_path)))
  for aug in (config.AugmentConfig(rotation=180.0, shift=1.0),
              config.AugmentConfig(zoom_low=0.5, zoom_high=0.5),
              config.AugmentConfig(zoom_low=1.2), config.AugmentConfig(zoom_high=0.8)):
    config.validate(cfg.replace(augment=aug))


def test_rsna_preset_is_what_a_practitioner_runs(tmp_path):
  """ImageNet weights required, multilabel, full fine-tuning, every slice, >= 224 px."""
  cfg = config.preset("rsna")
  assert (cfg.task, cfg.recipe, cfg.protocol) == ("multilabel", "full", "full")
  assert cfg.image_size >= 224 and cfg.stored_size >= cfg.image_size
  assert config.preset("rsna", task="binary").task == "binary"  # a flag still wins
  with pytest.raises(config.ConfigError, match="needs --weights"):
    config.validate(cfg.replace(workdir=str(tmp_path / "run")))
  weights = tmp_path / "weights"
  weights.mkdir()
  config.validate(cfg.replace(workdir=str(tmp_path / "run"), weights=str(weights)))


def test_demo_preset_on_real_data_warns(caplog):
  from ichflax.training import loop
  rsna_info = {"source": "rsna", "data": "RSNA folder", "protocol": "full"}
  assert loop.warn_if_demo_preset(config.preset("cpu-demo"), rsna_info)
  assert "docs/rsna.md" in caplog.text
  assert not loop.warn_if_demo_preset(config.preset("cpu-demo"), {"source": "phantom"})
  assert not loop.warn_if_demo_preset(config.preset("rsna"), rsna_info)
