"""Typed training configs: each field defined once, with everything derived from it.

A run is fully described by one `TrainConfig`; it is saved in every checkpoint so that a resumed
run and the report read back exactly what training used. Each field carries its help text, its
allowed values and whether it may be swept or must match on resume; the command-line flags
(`add_flags`), the sweep table (`SWEEPABLE`), the resume check (`RESUME_FIELDS`) and
`validate` are all derived from those fields, so a new field is one line here.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import types
import typing
from pathlib import Path
from typing import Any

from ichflax import flags, tasks
from ichflax.data.image import INPUT_MODES, channels_for
from ichflax.data.rsna import DRAWS
from ichflax.spec import BACKBONES

log = logging.getLogger("ichflax.config")

# What trains: only BatchNorm + the head (the paper's recipe), or every parameter.
TRAINABLE = ("bn-head", "all")
VARIANTS = ("keras", "torchvision")
DTYPES = ("auto", "float32", "bfloat16")
RESIZES = ("antialiased", "nearest")
NORMALIZATIONS = ("backbone", "rescale")
TESTED = ("best", "final")
# ResNet50 downsamples by 32; below 32 px the last stage has no spatial extent.
MIN_IMAGE_SIZE = 32
# Rough upper bound of one checkpoint (ResNet50 params + Adam moments, fp32) plus headroom.
MIN_FREE_BYTES = 600 * 2**20


class ConfigError(ValueError):
  """A config that cannot run; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Option:
  """What a config field means and allows, beside its type and default.

  `low`/`high`: inclusive bounds unless `*_open`; `sweep`: a grid may vary it; `resume`: a
  workdir holding another value refuses to resume; `flag`: it gets a command-line flag.
  """

  help: str
  choices: tuple = ()
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  sweep: bool = False
  resume: bool = False
  flag: bool = True


def option(default: Any, help: str, **roles) -> Any:  # noqa: A002  (argparse's word for it)
  """A dataclass field carrying its `Option` (a nested config's default is frozen, so shared)."""
  return dataclasses.field(default=default, metadata={"option": Option(help, **roles)})


def _option(f: dataclasses.Field) -> Option:
  return f.metadata["option"]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """The paper's ImageDataGenerator family, as ranges drawn per example (0 turns one off)."""

  enabled: bool = option(True, "training augmentation on the device", resume=True)
  zoom: float = option(0.1, "scale drawn in [1 - zoom, 1 + zoom]", low=0.0, high=1.0,
                       high_open=True, resume=True)
  shear: float = option(0.1, "shear factor drawn in [-shear, shear]", low=0.0, resume=True)
  stretch: float = option(0.1, "extra x/y aspect drawn in [1 - stretch, 1 + stretch]", low=0.0,
                          high=1.0, high_open=True, resume=True)
  shift: float = option(0.1, "translation as a fraction of the image side", low=0.0, high=1.0,
                        resume=True)
  rotation: float = option(10.0, "degrees drawn in [-rotation, rotation]", low=0.0, high=180.0,
                           resume=True)
  flip: bool = option(True, "horizontal flip with probability 1/2", resume=True)
  # Keras ImageDataGenerator's own parameterisation, so the paper's code is expressible exactly.
  keras: bool = option(False, "Keras ImageDataGenerator semantics: x and y zoom drawn apart in "
                       "[zoom-low, zoom-high] as Keras's inverse scale, shear in degrees, "
                       "shift as a fraction, no stretch", resume=True)
  zoom_low: float | None = option(None, "keras: lowest zoom draw (default 1 - zoom)", low=0.0,
                                  resume=True)
  zoom_high: float | None = option(None, "keras: highest zoom draw (default 1 + zoom)",
                                   low=0.0, resume=True)
  fill: str = option("constant", "outside the slice: constant (black air) or nearest (the edge "
                     "pixel, Keras fill_mode='nearest')", choices=("constant", "nearest"),
                     resume=True)
  # Domain randomisation of the picture's look (training/augment.py `appearance`).
  appearance: float = option(0.0, "strength in [0, 1] of appearance randomisation: window and "
                             "level jitter, gamma, grey brain-window pictures, blur or sharpen, "
                             "noise, 8-bit rounding (0: off)", low=0.0, high=1.0, resume=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything one training run needs; `None` fields take the task's paper preset."""

  task: str = option("binary", "what to learn from the six RSNA labels",
                     choices=tuple(tasks.TASKS), resume=True)
  data: str | None = option(None, "phantom (default), a TFDS dataset dir, or an RSNA/PNG folder",
                            resume=True)
  weights: str | None = option(None, "converted ImageNet backbone (python -m ichflax.weights)",
                               resume=True)
  trainable: str = option("bn-head", "what trains: bn-head (only BatchNorm + head, the paper's "
                          "recipe) or all (every parameter)", choices=TRAINABLE, sweep=True,
                          resume=True)
  backbone: str = option("resnet50", "the backbone when no --weights give it: resnet50 (the "
                         "paper's), efficientnet_b0 (10x cheaper) or convnext_tiny",
                         choices=tuple(BACKBONES), sweep=True, resume=True)
  variant: str = option("keras", "ResNet50's weight layout when no --weights give it (the "
                        "other backbones come in torchvision's)", choices=VARIANTS, sweep=True,
                        resume=True)
  epochs: int = option(20, "epochs to train", low=1, sweep=True)
  batch_size: int | None = option(None, "training batch (default: the task's own: binary 16, "
                                  "subtype 8, multilabel 16)",
                                  low=1, sweep=True, resume=True)
  eval_batch_size: int | None = option(None, "evaluation batch (default: the training batch)",
                                       low=1, sweep=True)
  dropout: float | None = option(None, "head dropout (default: the task's own: binary 0.4, "
                                 "subtype and multilabel 0.3)",
                                 low=0.0, high=1.0, high_open=True, sweep=True, resume=True)
  image_size: int = option(224, "model input side in pixels (a multiple of 32, at least 32)",
                           sweep=True, resume=True)
  # Not resume-checked: resuming a diverged run from its last good checkpoint with a lower rate
  # is the usual remedy.
  lr: float = option(1e-3, "Adam learning rate (Keras' default, which the paper used)",
                     low=0.0, low_open=True, sweep=True)
  lr_schedule: str = option("constant", "learning rate over the run: constant (the paper's) or "
                            "cosine (decays to 0 at the last step)",
                            choices=("constant", "cosine"), sweep=True, resume=True)
  workdir: str = option("runs/train", "checkpoints and report (default runs/<preset>-<task>)")
  seed: int = option(0, "random seed of the model, the data order and augmentation",
                     sweep=True, resume=True)
  dtype: str = option("auto", "compute dtype; auto: bf16 on GPU/TPU, fp32 on CPU",
                      choices=DTYPES, resume=True)
  draw: str = option("balanced", "how an RSNA folder is drawn into splits: balanced (the "
                     "paper's text, 2,000 per class), paper-code (the authors' parser) or "
                     "by-patient (every slice, split by patient, else study)", choices=DRAWS,
                     resume=True)
  stored_size: int | None = option(None, "stored slice size when a dataset is built", low=32,
                                   sweep=True, resume=True)
  phantom_slices: int = option(3000, "slices drawn when the phantom is built", low=1,
                               resume=True)
  augment: AugmentConfig = option(AugmentConfig(), "training augmentation")  # noqa: RUF009
  # Short runs from random init need faster tracking, or eval-mode statistics lag the weights.
  bn_momentum: float | None = option(None, "BatchNorm running-average momentum (default: the "
                                     "model's, Keras 0.99)", low=0.0, high=1.0, high_open=True,
                                     sweep=True, resume=True)
  zero_init_residual: bool = option(
      True, "random init: each residual block starts as its shortcut (--no-zero-init-residual "
      "reproduces runs made before the option existed)", resume=True)
  per_class: int | None = option(None, "balanced and paper-code draws: images per class "
                                 "(default 2000; phantom: as many as exist)", low=3, resume=True)
  input_mode: str = option("windows", "windows: brain, subdural, bone CT windows as RGB; grey: "
                           "one grey channel (the paper's PNG values, or the brain window)",
                           choices=INPUT_MODES, resume=True)
  resize: str = option("antialiased", "stored image -> model size: antialiased (bilinear) or "
                       "nearest (Keras load_img)", choices=RESIZES, resume=True)
  normalization: str = option("backbone", "backbone: the weights' ImageNet normalisation; "
                              "rescale: x / 255 only (the paper's code)",
                              choices=NORMALIZATIONS, resume=True)
  # Keras 2 defaults the paper's code ran with (each one testable on its own).
  head_init: str = option("lecun", "head Dense kernels: lecun (flax normal) or glorot (Keras "
                          "glorot_uniform)", choices=("lecun", "glorot"), sweep=True, resume=True)
  adam: str = option("optax", "optax: eps on the bias-corrected moment (1e-8); keras: eps 1e-7 "
                     "on the uncorrected one", choices=("optax", "keras"), sweep=True, resume=True)
  bn_variance: str = option("biased", "BatchNorm moving variance update: biased (flax, Keras 3) "
                            "or unbiased (Keras 2: n / (n - 1))", choices=("biased", "unbiased"),
                            resume=True)
  loss_clip: float = option(0.0, "clip probabilities to [c, 1 - c] in the loss (Keras: 1e-7)",
                            low=0.0, high=0.5, high_open=True, resume=True)
  tested: str = option("best", "checkpoint tested: best (by validation) or final (the last "
                       "epoch's, as the paper's code did)", choices=TESTED)
  preset: str = option("", "the preset this config started from (reports name it)", flag=False)
  keep: int = option(2, "last N checkpoints kept (the best one is kept besides)", low=1)
  checkpoint_every: int = option(50, "mid-epoch checkpoint every K steps (0: epoch ends only)",
                                 low=0)
  log_every: int = option(50, "read the running loss and accuracy off the device every K steps "
                          "for the progress bar and TensorBoard (0: epoch ends only)", low=0)
  tensorboard: bool = option(True, "TensorBoard scalar curves in WORKDIR/tb while training")
  limit: int | None = option(None, "use at most this many examples per split", low=1,
                             sweep=True, resume=True)
  distributed: bool = option(False, "call jax.distributed.initialize() (also env-detected)")
  progress_bar: bool = option(True, "progress bar (off: log lines only)")
  target_sensitivity: float = option(0.95, "validation sensitivity each output's operating point "
                                     "reaches (fitted after training)", low=0.0, high=1.0,
                                     low_open=True)
  context: int = option(1, "slices per input (2.5D): the slice and its neighbours in series "
                        "order as channels, edge slices repeated (1: the slice alone; 3, 5 ...: "
                        "needs a dataset drawn by patient, whole series)", low=1, sweep=True,
                        resume=True)
  sequence_from: str | None = option(None, "train a sequence stage (BiGRU over the series) on "
                                     "this finished slice run's frozen embeddings instead of a "
                                     "slice model; it serves beside it (WORKDIR/checkpoint)")
  sequence_steps: int = option(400, "sequence stage: optimiser steps over random series crops",
                               low=1)
  neighbour_diffs: bool = option(False, "sequence stage: feed each slice's embedding with its "
                                 "differences to the previous and next slice's")

  @property
  def resolved_batch_size(self) -> int:
    return self.batch_size or tasks.get_task(self.task).default_batch_size

  @property
  def resolved_variant(self) -> str:
    """The weight layout (and ImageNet normalisation) of the backbone asked for."""
    return self.variant if self.backbone == "resnet50" else "torchvision"

  @property
  def resolved_dropout(self) -> float:
    d = self.dropout
    return tasks.get_task(self.task).default_dropout if d is None else d

  @property
  def resolved_eval_batch_size(self) -> int:
    return self.eval_batch_size or self.resolved_batch_size

  def dataset_request(self) -> dict[str, Any]:
    """How `ichflax.data.splits.load` prepares this run's dataset and picks its examples."""
    return dict(draw=self.draw, per_class=self.per_class,
                windows=channels_for(self.input_mode), size=self.stored_size,
                phantom_slices=self.phantom_slices, limit=self.limit, seed=self.seed,
                context=self.context)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
    """Inverse of `to_dict`; unknown keys (from older or newer code) are ignored, old names of
    fields and values (`recipe: full`) read as their new ones, silently."""
    return _from_dict(cls, flags.upgrade(d))

  def replace(self, **changes) -> TrainConfig:
    return dataclasses.replace(self, **changes)


def _from_dict(cls, d: dict[str, Any]):
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name in d:
      value = d[f.name]
      nested = _nested(f)
      kwargs[f.name] = _from_dict(nested, value) if nested else value
  return cls(**kwargs)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls) -> dict[str, Any]:
  if cls not in _HINTS:
    _HINTS[cls] = typing.get_type_hints(cls)
  return _HINTS[cls]


def _nested(f: dataclasses.Field) -> type | None:
  """The dataclass type of a nested config field (AugmentConfig), else None."""
  return type(f.default) if dataclasses.is_dataclass(f.default) else None


def value_type(cls, name: str) -> type:
  """The plain type of a field (`int | None` -> int)."""
  hint = _hints(cls)[name]
  if isinstance(hint, types.UnionType):  # `X | None`, the only union the fields use
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  return hint


def _walk(cls=TrainConfig, prefix: str = ""):
  """(dotted name, owning class, field) for every leaf field, nested configs included."""
  for f in dataclasses.fields(cls):
    nested = _nested(f)
    if nested:
      yield from _walk(nested, f"{prefix}{f.name}.")
    else:
      yield prefix + f.name, cls, f


# What a sweep may vary and must match on resume, derived from the fields' roles.
SWEEPABLE: dict[str, type] = {n: value_type(c, f.name) for n, c, f in _walk() if _option(f).sweep}
RESUME_FIELDS: tuple[str, ...] = tuple(n for n, _, f in _walk() if _option(f).resume)


def get(cfg: TrainConfig, dotted: str) -> Any:
  for part in dotted.split("."):
    cfg = getattr(cfg, part)
  return cfg


def with_values(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
  """`cfg` with dotted field names set (`augment.enabled`), nested configs rebuilt."""
  top: dict[str, Any] = {}
  nested: dict[str, dict[str, Any]] = {}
  for dotted, value in values.items():
    head, _, rest = dotted.partition(".")
    if rest:
      nested.setdefault(head, {})[rest] = value
    else:
      top[head] = value
  for head, changes in nested.items():
    top[head] = dataclasses.replace(getattr(cfg, head), **changes)
  return dataclasses.replace(cfg, **top)


# --- command-line flags ----------------------------------------------------------------------


def _flag_name(dotted: str) -> str:
  """augment.enabled -> --augment, augment.zoom -> --augment-zoom, batch_size -> --batch-size."""
  name = dotted.replace(".enabled", "").replace(".", "-").replace("_", "-")
  return f"--{name}"


def add_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None,
              shown: TrainConfig | None = None) -> None:
  """One flag per config field (or the `only` ones), defaults None: unset flags change nothing.

  Booleans get --x / --no-x. Parsed values go back with `flags_to_values`. `shown`: the config
  a run would start from (a preset); each help text ends with its value there, so --help says
  what runs, not the dataclass default. A renamed field also takes its old flag and old values
  (`--recipe full` is `--trainable all`), with a notice.
  """
  old_flags = {new: _flag_name(old) for old, new in flags.OLD_FIELDS.items()}
  for dotted, cls, f in _walk():
    opt = _option(f)
    if not opt.flag or (only is not None and dotted not in only):
      continue
    kind = value_type(cls, f.name)
    help_text = opt.help
    if shown is not None:
      help_text += f" [{shown.preset}: {_shown(shown, dotted)}]"
    kwargs: dict[str, Any] = dict(dest=dotted, help=help_text)  # argparse's default is None
    if kind is bool:
      kwargs["action"] = argparse.BooleanOptionalAction
    else:
      kwargs["type"] = kind
      if opt.choices:
        kwargs["choices"] = opt.choices
    if dotted in old_flags:
      flags.renamed(parser, _flag_name(dotted), old_flags[dotted],
                    old_values=flags.OLD_VALUES[dotted], **kwargs)
    else:
      parser.add_argument(_flag_name(dotted), **kwargs)


def _shown(cfg: TrainConfig, dotted: str) -> Any:
  """A field's value as a run uses it: the task's own batch and dropout where the field is None.
  (argparse formats help with %, so a literal percent sign is doubled.)"""
  value = get(cfg, dotted)
  if value is None:
    value = getattr(cfg, f"resolved_{dotted}", "its default")
  return str(value).replace("%", "%%")


def flags_to_values(namespace: argparse.Namespace) -> dict[str, Any]:
  """The config fields a parsed command line set (dotted names -> values)."""
  names = {n for n, _, _ in _walk()}
  return {k: v for k, v in vars(namespace).items() if k in names and v is not None}


# --- presets ---------------------------------------------------------------------------------

# Keras 2 defaults (Colab's TF 1.x + standalone Keras), shared by both readings of the paper.
KERAS_2 = dict(head_init="glorot", adam="keras", bn_variance="unbiased", loss_clip=1e-7)
# The notebook's ImageDataGenerator: zoom_range=[0, 1], rotation_range=20, shifts 0.05,
# shear_range=0.05 (degrees), horizontal_flip, fill_mode='nearest'.
KERAS_AUGMENT = {"augment.keras": True, "augment.zoom_low": 0.0, "augment.zoom_high": 1.0,
                 "augment.rotation": 20.0, "augment.shift": 0.05, "augment.shear": 0.05,
                 "augment.stretch": 0.0, "augment.flip": True, "augment.fill": "nearest"}

# A preset is data: values for every task, and `per_task` values for one task on top of them.
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's text: ImageNet ResNet50 at 224 px, only BatchNorm + head train; binary
    # dropout 0.4 batch 16, subtype dropout 0.3 batch 8. The text does not state its epoch
    # count; 20 matches the length of its curves' x axes.
    "paper": dict(trainable="bn-head", draw="balanced", image_size=224, epochs=20, **KERAS_2,
                  per_task={"binary": dict(batch_size=16, dropout=0.4),
                            "subtype": dict(batch_size=8, dropout=0.3)}),
    # The authors' notebook (the paper's reference [6]): batch 32 for both, 15 / 90 epochs, one
    # grey 128 px PNG nearest-upsampled to 224 and scaled by 1/255, its ImageDataGenerator,
    # its parser's class assignment, and the last epoch's model tested.
    "paper-code": dict(trainable="bn-head", draw="paper-code", image_size=224, batch_size=32,
                       input_mode="grey", stored_size=128, resize="nearest",
                       normalization="rescale", tested="final", **KERAS_2, **KERAS_AUGMENT,
                       per_task={"binary": dict(epochs=15, dropout=0.4),
                                 "subtype": dict(epochs=90, dropout=0.3)}),
    # CPU demo: no ImageNet weights exist offline, so every parameter trains from random init
    # (bn-head, the paper's recipe, cannot learn without pretrained features). 96 px, not 64:
    # bleeds stay visible and XLA's CPU step is faster there (docs/training.md). 1500 anatomical
    # phantom slices rendered at 256 and stored at 128, all of them split by subject (the
    # balanced draw is capped by the rarest subtype, epidural, at ~2 % of slices); 4 epochs.
    "cpu-demo": dict(trainable="all", image_size=96, epochs=4, lr=1e-3, batch_size=16,
                     bn_momentum=0.9, checkpoint_every=50, workdir="runs/cpu-demo",
                     draw="by-patient", phantom_slices=1500, stored_size=128),
    # The shipped demo model (checkpoints/multilabel, --task multilabel): from
    # random init on the anatomical phantom, sized to train on 2 CPU cores within an hour.
    "phantom-demo": dict(trainable="all", image_size=128, epochs=5, lr=1e-3,
                         lr_schedule="cosine", batch_size=16, bn_momentum=0.9,
                         checkpoint_every=200, draw="by-patient", phantom_slices=9000,
                         workdir="runs/phantom-demo", **{"augment.appearance": 1.0}),
    # What a practitioner runs on the RSNA 2019 download with a GPU/TPU: ImageNet weights (given
    # with --weights; refused without them), the multilabel task ranked by the RSNA weighted log
    # loss, every parameter fine-tuned, every slice split by patient, 256 px stored and seen
    # (the field's 224-512 px), a short cosine schedule at a fine-tuning rate.
    "rsna": dict(task="multilabel", trainable="all", draw="by-patient", image_size=256,
                 stored_size=256, epochs=4, batch_size=32, lr=2e-4, lr_schedule="cosine",
                 checkpoint_every=1000, log_every=100),
}
# Presets that fine-tune pretrained features and mean nothing from random weights.
NEEDS_WEIGHTS = ("rsna",)
# Presets sized for the bundled phantom on a CPU; on real data they are a smoke test, not a model.
PHANTOM_PRESETS = ("cpu-demo", "phantom-demo")


def preset(name: str, **overrides) -> TrainConfig:
  """A config from a named preset for `overrides["task"]` (default binary), with explicit
  overrides (dotted names too) applied on top of the preset's shared and per-task values."""
  if flags.current("preset", name) != name:
    log.warning("preset %r is now called %r", name, flags.current("preset", name))
    name = flags.current("preset", name)
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
  values = dict(PRESETS[name])
  per_task = values.pop("per_task", {})
  # A preset may name its task (rsna); the others serve every task.
  task = overrides.get("task", values.pop("task", TrainConfig.task))
  return with_values(TrainConfig(), {**values, **per_task.get(task, {}), "preset": name,
                                     "task": task, **overrides})


# --- validation ------------------------------------------------------------------------------


def validate(cfg: TrainConfig, *, num_devices: int = 1) -> None:
  """Fails fast, with what was wrong and what to do, before any data or model work."""
  for dotted, _, f in _walk():
    _check_field(dotted.replace("_", " ").replace(".", " "), get(cfg, dotted), _option(f))
  _check(cfg.image_size >= MIN_IMAGE_SIZE and cfg.image_size % 32 == 0,
         f"image size {cfg.image_size} does not suit the backbones (they downsample by 32): use a "
         f"multiple of 32 that is at least {MIN_IMAGE_SIZE}, e.g. 64 or 224")
  _check(cfg.context % 2 == 1, f"context {cfg.context}: use an odd number of slices, the slice "
         "in the middle (1, 3, 5 ...)")
  low, high = cfg.augment.zoom_low, cfg.augment.zoom_high
  _check(low is None or high is None or low <= high,
         f"augment zoom low {low} exceeds zoom high {high}: give low <= high")
  for name, size in (("batch size", cfg.resolved_batch_size),
                     ("eval batch size", cfg.resolved_eval_batch_size)):
    _check(size % num_devices == 0,
           f"{name} {size} must be a positive multiple of the {num_devices} devices "
           "(each device takes an equal share of the batch)")
  if cfg.data is not None and cfg.data != "phantom":
    _check(Path(cfg.data).exists(),
           f"data directory {cfg.data!r} does not exist: give a TFDS dataset dir, an RSNA "
           "folder (stage_1_train.csv + DICOMs) or a PNG folder, or omit --data for the phantom")
  _check(cfg.preset not in NEEDS_WEIGHTS or cfg.weights is not None,
         f"the {cfg.preset} preset fine-tunes ImageNet features and needs --weights DIR: convert "
         "them with `python -m ichflax.weights fetch` / `convert` (docs/weights.md), or use "
         "another preset")
  if cfg.weights is not None:
    _check(Path(cfg.weights).exists(),
           f"weights {cfg.weights!r} not found: convert ImageNet weights first with "
           "`python -m ichflax.weights convert ...`, or omit --weights")
  _check_space(Path(cfg.workdir))


def _check_field(label: str, value: Any, opt: Option) -> None:
  """A field's declared choices and bounds; None means 'the preset's value' and always passes."""
  if value is None:
    return
  if opt.choices:
    _check(value in opt.choices,
           f"unknown {label} {value!r}: choose one of {', '.join(opt.choices)}")
    return
  low, high = opt.low, opt.high
  too_low = low is not None and (value <= low if opt.low_open else value < low)
  too_high = high is not None and (value >= high if opt.high_open else value > high)
  if too_low or too_high:
    if high is None:
      bound = f"greater than {low}" if opt.low_open else f"at least {low}"
    else:
      bound = f"in {'(' if opt.low_open else '['}{low}, {high}{')' if opt.high_open else ']'}"
    raise ConfigError(f"{label} must be {bound}, got {value}")


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


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)
