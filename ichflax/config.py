"""Typed training configs, the seed's per-task presets and the checks that run before any work.

A run is fully described by one `TrainConfig`; it is saved in every checkpoint so that a resumed
run and the inference path read back exactly what training used.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from ichflax import tasks

RECIPES = ("seed", "full")
VARIANTS = ("keras", "torchvision")
DTYPES = ("auto", "float32", "bfloat16")
# ResNet50 downsamples by 32; below 32 px the last stage has no spatial extent.
MIN_IMAGE_SIZE = 32
# Rough upper bound of one checkpoint (ResNet50 params + Adam moments, fp32) plus headroom.
MIN_FREE_BYTES = 600 * 2**20


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """The seed's ImageDataGenerator family, as ranges drawn per example (0 turns one off)."""

  enabled: bool = True
  zoom: float = 0.1  # scale drawn in [1 - zoom, 1 + zoom]
  shear: float = 0.1  # shear factor drawn in [-shear, shear]
  stretch: float = 0.1  # extra x/y aspect drawn in [1 - stretch, 1 + stretch]
  shift: float = 0.1  # translation as a fraction of the image side
  rotation: float = 10.0  # degrees drawn in [-rotation, rotation]
  flip: bool = True  # horizontal flip with probability 1/2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything one training run needs; `None` fields take the task's seed preset."""

  task: str = "binary"
  data: str | None = None  # None: the synthetic phantom; else a TFDS dir or an RSNA/PNG folder
  weights: str | None = None  # converted ImageNet backbone (python -m ichflax.weights)
  recipe: str = "seed"  # seed: only BatchNorm + head train; full: every parameter
  variant: str = "keras"  # backbone variant when no --weights give it
  epochs: int = 20
  batch_size: int | None = None
  eval_batch_size: int | None = None
  dropout: float | None = None
  image_size: int = 224
  lr: float = 1e-3  # Keras Adam's default, which the seed used
  workdir: str = "runs/train"
  seed: int = 0
  dtype: str = "auto"  # auto: bf16 compute on GPU/TPU, fp32 on CPU
  protocol: str = "seed"  # how an RSNA folder is drawn into splits (ichflax.data.prepare)
  stored_size: int | None = None  # size of the stored slices when a dataset is built
  phantom_slices: int = 3000  # slices drawn when the phantom is built
  augment: AugmentConfig = AugmentConfig()
  # BatchNorm running-average momentum; None keeps the model's (Keras 0.99). Short runs from
  # random init need faster tracking, or eval-mode statistics lag the changing weights.
  bn_momentum: float | None = None
  # From random weights, start each residual block as its shortcut (see models.ResNet50); off
  # reproduces runs made before it existed. Converted --weights replace it either way.
  zero_init_residual: bool = True
  keep: int = 2  # last N checkpoints kept (the best one is kept besides)
  checkpoint_every: int = 50  # mid-epoch checkpoint every K steps (0: epoch ends only)
  limit: int | None = None  # use at most this many examples per split (quick runs, tests)
  distributed: bool = False  # call jax.distributed.initialize() (also env-detected)
  progress: bool = True

  @property
  def resolved_batch_size(self) -> int:
    return self.batch_size or tasks.get_task(self.task).default_batch_size

  @property
  def resolved_dropout(self) -> float:
    d = self.dropout
    return tasks.get_task(self.task).default_dropout if d is None else d

  @property
  def resolved_eval_batch_size(self) -> int:
    return self.eval_batch_size or self.resolved_batch_size

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
    d = dict(d)
    d["augment"] = AugmentConfig(**d.get("augment", {}))
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})

  def replace(self, **changes) -> "TrainConfig":
    return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's recipe: ImageNet ResNet50 at 224 px, only BatchNorm + head train, task presets.
    # The paper does not state its epoch count; 20 matches the length of its curves' x axes.
    "seed": dict(recipe="seed", image_size=224, epochs=20),
    # CPU demo: no ImageNet weights exist offline, so every parameter trains from random init
    # (the seed recipe cannot learn without pretrained features). 96 px, not 64: bleeds stay
    # visible and XLA's CPU step is faster there (docs/training.md); 4 epochs of the phantom's
    # 1428 training slices (356 steps) keep a 2-core run near 10 minutes.
    "cpu-demo": dict(recipe="full", image_size=96, epochs=4, lr=1e-3, batch_size=16,
                     bn_momentum=0.9, checkpoint_every=50, workdir="runs/cpu-demo"),
}


def preset(name: str, **overrides) -> TrainConfig:
  """A config from a named preset, with explicit overrides applied on top."""
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
  return TrainConfig(**{**PRESETS[name], **overrides})


def validate(cfg: TrainConfig, *, num_devices: int = 1) -> None:
  """Fails fast, with what was wrong and what to do, before any data or model work."""
  _check(cfg.task in tasks.TASKS, f"unknown task {cfg.task!r}: choose one of {tuple(tasks.TASKS)}")
  _check(cfg.recipe in RECIPES, f"unknown recipe {cfg.recipe!r}: choose one of {RECIPES}")
  _check(cfg.variant in VARIANTS, f"unknown variant {cfg.variant!r}: choose one of {VARIANTS}")
  _check(cfg.dtype in DTYPES, f"unknown dtype {cfg.dtype!r}: choose one of {DTYPES}")
  _check(cfg.image_size >= MIN_IMAGE_SIZE and cfg.image_size % 32 == 0,
         f"image size {cfg.image_size} does not suit ResNet50 (it downsamples by 32): use a "
         f"multiple of 32 that is at least {MIN_IMAGE_SIZE}, e.g. 64 or 224")
  _check(cfg.epochs >= 1, f"epochs must be at least 1, got {cfg.epochs}")
  _check(cfg.lr > 0, f"learning rate must be positive, got {cfg.lr}")
  _check(0.0 <= cfg.resolved_dropout < 1.0, f"dropout must be in [0, 1), got {cfg.dropout}")
  _check(cfg.bn_momentum is None or 0.0 <= cfg.bn_momentum < 1.0,
         f"bn_momentum must be in [0, 1), got {cfg.bn_momentum}")
  _check(cfg.keep >= 1, f"keep must be at least 1 checkpoint, got {cfg.keep}")
  _check(cfg.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0: at epoch ends only)")
  _check(cfg.limit is None or cfg.limit >= 1, f"limit must be positive, got {cfg.limit}")
  _check(cfg.phantom_slices >= 1, f"phantom_slices must be positive, got {cfg.phantom_slices}")
  for name, size in (("batch size", cfg.resolved_batch_size),
                     ("eval batch size", cfg.resolved_eval_batch_size)):
    _check(size >= 1 and size % num_devices == 0,
           f"{name} {size} must be a positive multiple of the {num_devices} devices "
           "(each device takes an equal share of the batch)")
  if cfg.data is not None and cfg.data != "phantom":
    _check(Path(cfg.data).exists(),
           f"data directory {cfg.data!r} does not exist: give a TFDS dataset dir, an RSNA "
           "folder (stage_1_train.csv + DICOMs) or a PNG folder, or omit --data for the phantom")
  if cfg.weights is not None:
    _check(Path(cfg.weights).exists(),
           f"weights {cfg.weights!r} not found: convert ImageNet weights first with "
           "`python -m ichflax.weights convert ...`, or omit --weights")
  _check_space(Path(cfg.workdir))


def _check_space(workdir: Path) -> None:
  probe = workdir
  while not probe.exists():
    probe = probe.parent
  _check(os.access(probe, os.W_OK), f"cannot write checkpoints under {workdir}: {probe} is not "
         "writable; choose another --workdir")
  free = shutil.disk_usage(probe).free
  _check(free >= MIN_FREE_BYTES,
         f"only {free / 2**20:.0f} MiB free under {probe}; checkpoints need about "
         f"{MIN_FREE_BYTES / 2**20:.0f} MiB: free space or choose another --workdir")


class ConfigError(ValueError):
  """A config that cannot run; the message says what to change."""


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)
