"""New checkpoints from old ones: a small standalone serving copy, and the older layout's
migration. Weights are only cast, never changed."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from ichflax.checkpoint import card, layout, load
from ichflax.config import TrainConfig
from ichflax.progress import Progress
from ichflax.spec import ModelSpec


def export_inference(src: str | Path, dst: str | Path, dtype=jnp.bfloat16) -> Path:
  """Writes a small inference-only checkpoint (no optimiser state), parameters in `dtype`.

  BatchNorm statistics stay fp32 (their variance is sensitive to rounding); `load_inference`
  casts everything back to fp32. The run's test metrics (its report) travel along when the
  exported step is the one the report tested.
  """
  step_dir = load.resolve(src)
  dst = Path(dst).absolute()
  if dst.exists():
    raise layout.CheckpointError(f"{dst} already exists: remove it or choose another destination")
  spec = layout.spec_at(step_dir)
  restored = layout.model_state(load.restore_model(step_dir, spec))
  params = jax.tree.map(lambda x: x.astype(dtype), nnx.state(restored, nnx.Param))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(dst / layout.STATE, nnx.merge_state(restored, params))
  progress = load.read_progress(step_dir)
  report = layout.report_json(step_dir)
  if step_dir.name.isdigit() and report.is_file():
    tested = json.loads(report.read_text())
    if tested.get("best_step") == int(step_dir.name):
      progress.test = tested.get("test")
  spec = spec.replace(stored_dtype=jnp.dtype(dtype).name)
  run_config = layout.read_json(step_dir, layout.CONFIG)
  layout.write_json(dst, layout.SPEC, spec.to_json())
  layout.write_json(dst, layout.CONFIG, run_config)
  layout.write_json(dst, layout.PROGRESS, progress.to_json())
  card.write(dst, spec, TrainConfig.from_dict(run_config), progress)
  for item in (layout.DOMAIN, layout.SERIES, layout.SEQUENCE):  # trust and the sequence stage
    if (step_dir / item).is_dir():
      shutil.copytree(step_dir / item, dst / item)
  return dst


def migrate(path: str | Path) -> Path:
  """Splits an older checkpoint's single `meta` item into spec, config and progress, in place.

  The weights are not touched, so the migrated checkpoint computes exactly what it did.
  """
  step_dir = Path(path)
  if not (step_dir / layout.LEGACY_META).is_dir():
    raise layout.CheckpointError(f"{step_dir} has no `{layout.LEGACY_META}` item: nothing to "
                                 "migrate")
  legacy = layout.read_json(step_dir, layout.LEGACY_META)
  spec = ModelSpec.from_json(legacy)
  measured = legacy.get("metrics") or {}
  progress = dataclasses.replace(Progress.from_json(legacy), validation=measured.get("validation"),
                                 test=measured.get("test"))
  layout.write_json(step_dir, layout.SPEC, spec.to_json())
  layout.write_json(step_dir, layout.CONFIG,
                    TrainConfig.from_dict(legacy.get("config") or {}).to_dict())
  layout.write_json(step_dir, layout.PROGRESS, progress.to_json())
  shutil.rmtree(step_dir / layout.LEGACY_META)
  return step_dir
