"""Model cards: the README.md the Hugging Face Hub shows beside an exported checkpoint.

`python -m ichflax.checkpoint export` writes it from the checkpoint's own spec, config and
progress, so no figure is typed by hand and every figure names the data it was measured on.
The metadata block goes through huggingface_hub's own `ModelCardData`, so the Hub reads it.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub as hf

from ichflax.config import TrainConfig
from ichflax.progress import Progress
from ichflax.spec import ModelSpec

NAME = "README.md"  # the file the Hub renders as a repository's model card
LICENSE = "apache-2.0"
TAGS = ["ichflax", "jax", "flax", "orbax", "medical-imaging", "computed-tomography",
        "intracranial-hemorrhage", "research-only"]
URI = "hf://OWNER/REPO"  # the card is written before the repository is named
# Scalar metrics of `metrics.evaluate` worth a row, and how people call them.
SHOWN = {"accuracy": "accuracy (all outputs at 0.5)", "auc": "ROC AUC (`any` / mean)",
         "sensitivity": "sensitivity (`any`)", "specificity": "specificity (`any`)",
         "rsna_log_loss": "RSNA weighted log loss", "log_loss": "log loss"}


def render(spec: ModelSpec, config: TrainConfig, progress: Progress) -> str:
  """The card's Markdown, Hub metadata first."""
  split, measured = _measured(progress)
  data = spec.data_named()
  meta = hf.ModelCardData(
      license=LICENSE, tags=[*TAGS, spec.task, _backbone_tag(spec)],
      pipeline_tag="image-classification",
      model_name=f"ichflax {spec.task} {spec.backbone_named().split()[0]}",
      eval_results=[
          hf.EvalResult(task_type="image-classification", task_name=f"ICH {spec.task}",
                        dataset_type="ichflax", dataset_name=data, dataset_split=split,
                        metric_type=key, metric_name=SHOWN[key], metric_value=round(value, 4))
          for key, value in _scalars(measured)] or None)
  lines = [
      "---", meta.to_yaml(), "---", "",
      f"# ichflax {spec.task} model: {', '.join(spec.outputs)}", "",
      "> **Research and education use only — not a medical device.** Do not use it to diagnose "
      "or treat anyone." + (" These weights were trained on a **synthetic phantom**, not on "
                             "patients: their figures say nothing about real CT scans."
                             if spec.synthetic else ""), "",
      spec.describe() + ".", "",
      "## Intended use", "",
      "Research, teaching and demos of intracranial hemorrhage detection on single head CT slices "
      "(DICOM, or PNG/JPG already windowed); the attention box shows where the model looked, "
      "not the extent of a bleed. Not for clinical decisions, triage or any patient.", "",
      "## Use it", "",
      f"    python app.py --checkpoint {URI}                       # the Gradio demo",
      f"    python -m ichflax.predict slice.dcm --checkpoint {URI}  # JSON per slice",
      "",
      f"From an ichflax checkout, with `{URI}` naming this repository; on a Space set the "
      f"variable `ICHFLAX_CHECKPOINT={URI}`. Append `@REVISION` (a branch, tag or commit) to "
      "pin a version.", "",
      *_metrics_section(split, measured, data),
      "## Model spec", "",
      "| field | value |", "|---|---|",
      *(f"| {key} | {_cell(value)} |" for key, value in spec.to_json().items()), "",
      *_training_section(spec, config, progress),
      "## Files", "",
      "An orbax checkpoint: `state/` (every parameter and BatchNorm statistic; parameters stored "
      f"as {spec.stored_dtype}, served in float32), `spec/` (the model spec above), `config/` "
      "(the training configuration), `progress/` (history and metrics). No optimiser state.", "",
  ]
  return "\n".join(lines)


def write(folder: str | Path, spec: ModelSpec, config: TrainConfig, progress: Progress) -> Path:
  path = Path(folder) / NAME
  path.write_text(render(spec, config, progress))
  return path


def _measured(progress: Progress) -> tuple[str, dict]:
  """The test metrics when the run's report travelled along, else the last validation."""
  if progress.test:
    return "test", progress.test
  return "validation", progress.validation or {}


def _scalars(measured: dict) -> list[tuple[str, float]]:
  return [(key, float(measured[key])) for key in SHOWN
          if isinstance(measured.get(key), (int, float))]


def _cell(value) -> str:
  return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _metrics_section(split: str, measured: dict, data: str) -> list[str]:
  if not measured:
    return ["## Metrics", "", "None recorded: this checkpoint carries no validation or test "
            "metrics.", ""]
  note = ("" if split == "test" else " No test report of the run was found for the exported "
          "step, so these are validation figures.")
  lines = ["## Metrics", "",
           f"On the **{split} split of {data}**, n = {measured.get('n', '?')}.{note}", "",
           "| metric | value |", "|---|---|",
           *(f"| {SHOWN[key]} | {value:.3f} |" for key, value in _scalars(measured))]
  for key, name in (("per_class_auc", "ROC AUC"), ("per_class_sensitivity", "sensitivity")):
    if isinstance(measured.get(key), dict):
      shown = ", ".join(f"{label} {value:.2f}" for label, value in measured[key].items()
                        if isinstance(value, (int, float)))
      lines.append(f"| per-label {name} | {shown} |")
  return [*lines, ""]


def _backbone_tag(spec: ModelSpec) -> str:
  """'resnet50-keras' as before other backbones existed; otherwise the backbone's own name."""
  return f"resnet50-{spec.variant}" if spec.backbone == "resnet50" else spec.backbone


def _training_section(spec: ModelSpec, config: TrainConfig, progress: Progress) -> list[str]:
  base = ("random initialisation (no ImageNet weights): every parameter trained"
          if config.weights is None else
          f"ImageNet {spec.backbone_named()} converted with `python -m ichflax.weights "
          f"convert` from `{Path(config.weights).name}`")
  lines = ["## How it was trained", "",
           f"- Base model: {base}; trainable `{spec.trainable}` (bn-head: BatchNorm + head "
           "trained; all: every parameter).",
           f"- Data: {spec.data_named()}.",
           f"- {progress.epoch} epochs, {progress.step} optimiser steps; batch "
           f"{config.batch_size or 'the task default'}, "
           f"Adam lr {config.lr}, dropout {spec.dropout}, {config.image_size} px, seed "
           f"{config.seed}, augmentation {'on' if config.augment.enabled else 'off'}.",
           "- The complete configuration is the checkpoint's `config/` item; "
           "`python -m ichflax.train --help` explains every field.", ""]
  if progress.history:
    lines += ["| epoch | step | train loss | train accuracy | val loss | val accuracy | val AUC |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {h.epoch} | {h.step} | {h.train_loss:.3f} | {h.train_accuracy:.3f} | "
              f"{h.val_loss:.3f} | {h.val_accuracy:.3f} | "
              f"{'' if h.val_auc is None else f'{h.val_auc:.3f}'} |" for h in progress.history]
    lines.append("")
  return lines
