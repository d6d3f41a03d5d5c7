"""Configs: presets follow the paper, each field defined once, bad configs fail with a message."""

import argparse
import dataclasses
import os
import re
import shutil
from pathlib import Path

import pytest

from ichflax import config


def test_paper_presets_per_task():
  binary = config.preset("paper", task="binary")
  subtype = config.preset("paper", task="subtype")
  assert (binary.resolved_dropout, binary.resolved_batch_size) == (0.4, 16)
  assert (subtype.resolved_dropout, subtype.resolved_batch_size) == (0.3, 8)
  assert binary.image_size == 224 and binary.trainable == "bn-head" and binary.lr == 1e-3
  assert binary.draw == "balanced"
  demo = config.preset("cpu-demo")
  assert demo.trainable == "all" and demo.image_size < 224
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
    (dict(trainable="linear"), "unknown trainable 'linear': choose one of bn-head, all"),
    (dict(trainable="full"), "unknown trainable 'full'"),  # old names: only stored and CLI
    (dict(dropout=1.0), "dropout"),
    (dict(epochs=0), "epochs"),
    (dict(lr=0.0), "lr must be greater than 0.0, got 0.0"),
    (dict(batch_size=0), "batch size must be at least 1, got 0"),
    (dict(draw="random"), "unknown draw 'random': choose one of balanced, paper-code, by-pat"),
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


def test_old_seed_preset_is_an_alias_of_paper(caplog):
  with caplog.at_level("WARNING", logger="ichflax.config"):
    cfg = config.preset("seed")
  assert (cfg.preset, cfg.trainable, cfg.draw, cfg.image_size) == ("paper", "bn-head", "balanced",
                                                                   224)
  assert caplog.messages == ["preset 'seed' is now called 'paper'"]


@pytest.mark.parametrize("recipe,protocol,trainable,draw", [
    ("full", "full", "all", "by-patient"),  # one old word, another new one per field
    ("paper", "paper", "bn-head", "balanced"),
    ("seed", "seed", "bn-head", "balanced"),
    ("paper", "paper-code", "bn-head", "paper-code"),
])
def test_a_stored_config_with_old_names_loads_silently(recipe, protocol, trainable, draw, caplog):
  """Configs in checkpoints and run dirs written before the renames (`recipe`, `protocol`)."""
  stored = {**config.preset("cpu-demo").to_dict(), "preset": "seed"}
  del stored["trainable"], stored["draw"]
  with caplog.at_level("DEBUG"):
    cfg = config.TrainConfig.from_dict({**stored, "recipe": recipe, "protocol": protocol})
  assert (cfg.trainable, cfg.draw, cfg.preset) == (trainable, draw, "paper")
  assert not caplog.records
  assert config.TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_the_shipped_checkpoint_reads_in_new_names(caplog):
  """checkpoints/multilabel was exported before the renames: its config and spec say `recipe`."""
  from ichflax import checkpoint
  shipped = Path(__file__).parents[1] / "checkpoints" / "multilabel"
  with caplog.at_level("WARNING"):
    cfg, spec = checkpoint.read_config(shipped), checkpoint.read_spec(shipped)
  assert (cfg.trainable, cfg.draw, spec.trainable) == ("all", "by-patient", "all")
  assert not caplog.records


def test_resuming_a_run_saved_before_the_renames_passes_the_resume_check(tmp_path):
  from ichflax.checkpoint import layout
  from ichflax.training import loop

  class Manager:  # the latest step of a workdir whose config was written with the old names
    directory = tmp_path

    def latest_step(self):
      return 7

  cfg = config.preset("cpu-demo", workdir=str(tmp_path))
  old = {k: v for k, v in cfg.to_dict().items() if k not in ("trainable", "draw")}
  layout.write_json(tmp_path / "7", layout.CONFIG, {**old, "recipe": "full", "protocol": "full"})
  for item in (layout.SPEC, layout.STATE):  # what makes it a step (read_config reads none)
    (tmp_path / "7" / item).mkdir()
  loop.check_resumable(Manager(), cfg)
  with pytest.raises(config.ConfigError, match="different trainable"):
    loop.check_resumable(Manager(), cfg.replace(trainable="bn-head"))


def test_every_field_has_one_flag_and_its_roles():
  """Flags, sweep table and resume check are derived from the dataclass fields, none missed."""
  parser = argparse.ArgumentParser()
  config.add_flags(parser)
  flags = {a.dest for a in parser._actions if a.dest != "help"}
  leaves = {n for n, _, f in config._walk() if config._option(f).flag}
  assert flags == leaves  # every field, nested augmentation included, has exactly one flag
  assert "preset" not in flags  # set by --preset itself, recorded for the report
  a = parser.parse_args(["--batch-size", "32", "--no-augment", "--augment-zoom", "0.5",
                         "--trainable", "all", "--no-progress-bar"])
  values = config.flags_to_values(a)
  assert values == {"batch_size": 32, "augment.enabled": False, "augment.zoom": 0.5,
                    "trainable": "all", "progress_bar": False}
  cfg = config.with_values(config.TrainConfig(), values)
  assert cfg.augment == config.AugmentConfig(enabled=False, zoom=0.5) and cfg.batch_size == 32
  with pytest.raises(SystemExit):
    parser.parse_args(["--trainable", "linear"])  # choices come from the field
  assert config.SWEEPABLE["dropout"] is float and config.SWEEPABLE["batch_size"] is int
  assert "progress_bar" not in config.SWEEPABLE and "workdir" not in config.SWEEPABLE
  assert {"task", "dropout", "augment.zoom", "trainable", "draw"} <= set(config.RESUME_FIELDS)
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
  assert (cfg.task, cfg.trainable, cfg.draw) == ("multilabel", "all", "by-patient")
  assert cfg.image_size >= 224 and cfg.stored_size >= cfg.image_size
  assert config.preset("rsna", task="binary").task == "binary"  # a flag still wins
  with pytest.raises(config.ConfigError, match="needs --weights"):
    config.validate(cfg.replace(workdir=str(tmp_path / "run")))
  weights = tmp_path / "weights"
  weights.mkdir()
  config.validate(cfg.replace(workdir=str(tmp_path / "run"), weights=str(weights)))


def test_demo_preset_on_real_data_warns(caplog):
  from ichflax.training import loop
  rsna_info = {"source": "rsna", "data": "RSNA folder", "draw": "by-patient"}
  assert loop.warn_if_demo_preset(config.preset("cpu-demo"), rsna_info)
  assert "docs/rsna.md" in caplog.text
  assert not loop.warn_if_demo_preset(config.preset("cpu-demo"), {"source": "phantom"})
  assert not loop.warn_if_demo_preset(config.preset("rsna"), rsna_info)


@pytest.mark.parametrize("protocol,draw", [("full", "by-patient"), ("paper", "balanced"),
                                           ("seed", "balanced"), ("paper-code", "paper-code")])
def test_a_dataset_built_before_the_renames_reads_its_draw(tmp_path, protocol, draw, caplog):
  """Old builds' ichflax.json says `protocol`; reading it (info, data names) gives the draw."""
  import json

  from ichflax.data import builders, splits
  (tmp_path / "dataset_info.json").write_text("{}")
  (tmp_path / "ichflax.json").write_text(json.dumps({"source": "rsna", "data": "RSNA folder X",
                                                     "protocol": protocol, "seed": 0}))
  with caplog.at_level("WARNING"):
    info = builders.dataset_info(tmp_path)
  assert info["draw"] == draw and "protocol" not in info and info["seed"] == 0
  assert splits.data_name(info) == f"RSNA folder X, {draw} draw" and not caplog.records
