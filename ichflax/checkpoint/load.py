"""Reading a checkpoint for inference and for trust: resolve a path (local or `hf://`), read
one item, rebuild the Classifier, store what calibration fits."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ichflax import models
from ichflax.checkpoint import hub, layout
from ichflax.config import TrainConfig
from ichflax.progress import Progress
from ichflax.spec import ModelSpec


def resolve(path: str | Path) -> Path:
  """A step directory from itself, a CheckpointManager directory (best step), a workdir, or a
  Hub repository `hf://OWNER/REPO[@REVISION]` (downloaded once into the Hub cache)."""
  return layout.find_step(hub.download(str(path)) if hub.is_hub(path) else path)


def read_spec(path: str | Path) -> ModelSpec:
  """The model spec of a checkpoint, without loading any weights."""
  return layout.spec_at(resolve(path))


def read_config(path: str | Path) -> TrainConfig:
  return TrainConfig.from_dict(layout.read_json(resolve(path), layout.CONFIG))


def read_progress(path: str | Path) -> Progress:
  return Progress.from_json(layout.read_json(resolve(path), layout.PROGRESS))


def write_trust(path: str | Path, spec: ModelSpec, domain_arrays: dict[str, np.ndarray]) -> Path:
  """Stores a calibrated spec and the domain statistics in a checkpoint; weights untouched."""
  step_dir = resolve(path)
  layout.write_json(step_dir, layout.SPEC, spec.to_json(), force=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(step_dir.absolute() / layout.DOMAIN, domain_arrays, force=True)
  return step_dir


def read_domain(path: str | Path) -> dict[str, np.ndarray] | None:
  """The domain statistics' arrays, or None for a checkpoint calibrated before they existed."""
  step_dir = resolve(path)
  if not (step_dir / layout.DOMAIN).is_dir():
    return None
  with ocp.StandardCheckpointer() as ckptr:
    return {k: np.asarray(v) for k, v in ckptr.restore(step_dir.absolute() / layout.DOMAIN).items()}


def read_series(path: str | Path):
  """(SeriesModel in eval mode, SeriesSpec) of a checkpoint with a sequence stage, else None."""
  from ichflax.models import sequence
  step_dir = resolve(path)
  if not (step_dir / layout.SERIES).is_dir():
    return None
  spec = sequence.SeriesSpec.from_json(layout.read_json(step_dir, layout.SERIES))
  abstract = nnx.eval_shape(lambda: sequence.SeriesModel(spec, rngs=nnx.Rngs(0)))
  graphdef, target = nnx.split(abstract)
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(step_dir.absolute() / layout.SEQUENCE, target)
  model = nnx.merge(graphdef, state)
  model.eval()
  return model, spec


def write_series(step_dir: Path, model, spec) -> None:
  """Stores a sequence stage (its spec and parameters) in a checkpoint, replacing any."""
  layout.write_json(step_dir, layout.SERIES, spec.to_json(), force=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(Path(step_dir).absolute() / layout.SEQUENCE, nnx.state(model), force=True)


def load_inference(path: str | Path, dtype=jnp.float32) -> tuple[nnx.Module, ModelSpec]:
  """(Classifier in eval mode, spec) from any checkpoint, fp32 parameters whatever was stored."""
  step_dir = resolve(path)
  spec = layout.spec_at(step_dir)
  model = restore_model(step_dir, spec, dtype)
  model.eval()
  return model, spec


def restore_model(step_dir: Path, spec: ModelSpec, dtype=jnp.float32) -> nnx.Module:
  """The checkpoint's Classifier, built abstractly so no random initialisation is wasted."""
  abstract = nnx.eval_shape(lambda: models.build_classifier(
      spec.task, spec.variant, spec.dropout, rngs=nnx.Rngs(0), dtype=dtype, arch=spec.backbone,
      context=spec.context))
  def f32(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), tree)
  if layout.is_lean(step_dir):
    graphdef, changing, frozen, rngs = layout.model_parts(abstract, spec.trainable)
    with ocp.StandardCheckpointer() as ckptr:
      changing = ckptr.restore(step_dir.absolute() / layout.TRAINED, f32(changing))
    return nnx.merge(graphdef, changing, layout.restore_frozen(step_dir, f32(frozen)),
                     models.reseed(rngs, jax.random.key(0)))
  graphdef, target, rngs = nnx.split(abstract, layout.MODEL_STATE, ...)
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(step_dir.absolute() / layout.STATE, f32(target))
  return nnx.merge(graphdef, state, models.reseed(rngs, jax.random.key(0)))
