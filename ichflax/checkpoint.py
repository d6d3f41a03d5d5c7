"""Orbax checkpoints: resumable training state, and the inference view the Predictor loads.

Layout of one checkpoint (a step directory of the CheckpointManager under WORKDIR/checkpoints,
or an exported inference checkpoint, which has no `opt_state`), one named item per job:

    <step>/state/      every nnx Param and BatchStat of the Classifier (orbax pytree)
    <step>/opt_state/  optax Adam state of the trainable subset (training checkpoints only)
    <step>/spec/       JSON ModelSpec: what inference needs (task, labels, inputs, data)
    <step>/config/     JSON TrainConfig: how the run was configured
    <step>/progress/   JSON Progress: loop position, epoch history, metrics
    <step>/domain/     training-domain statistics of the backbone features (orbax arrays;
                       `ichflax.domain`), written with the calibration after training

A lean checkpoint (the paper recipe: frozen backbone convolutions) holds `<step>/trained/`
instead of `state/`: only what training changes (trainable parameters and BatchNorm
statistics), a few MB; the frozen parameters are written once per run, to WORKDIR/frozen/, and
joined back on restore (`restore_into`, `restore_model`). `export_inference` writes a whole
`state/`, so an exported checkpoint stands alone.

Dropout RNG keys are not stored: each step derives its key from (config seed, step), so a
resumed run draws exactly the keys it would have drawn.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers

from ichflax.config import TrainConfig
from ichflax.progress import Progress
from ichflax.spec import ModelSpec

STATE, OPT_STATE, SPEC, CONFIG, PROGRESS = "state", "opt_state", "spec", "config", "progress"
TRAINED = "trained"  # a lean checkpoint's changing part, in place of `state`
DOMAIN = "domain"
CHECKPOINTS = "checkpoints"
FROZEN = "frozen"  # WORKDIR/frozen: the parameters a lean run never changes, written once
LEGACY_META = "meta"  # one untyped JSON item, before the spec/config/progress split
# Everything a Classifier needs to be rebuilt exactly; RNG streams are derived, not stored.
MODEL_STATE = nnx.Any(nnx.Param, nnx.BatchStat)


class CheckpointError(ValueError):
  """A path that holds no usable checkpoint; the message says what was expected."""


def model_state(model: nnx.Module) -> nnx.State:
  return nnx.state(model, MODEL_STATE)


def open_manager(workdir: str | Path, keep: int) -> ocp.CheckpointManager:
  """Keeps the last `keep` checkpoints plus the best by `metrics["score"]` (higher is better)."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=_score, n=1, keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, best_fn=_score, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINTS, options=options)


def model_parts(model: nnx.Module, recipe: str):
  """(graphdef, changing, frozen, rest) of a model under a recipe: changing = its trainable
  parameters and BatchNorm statistics, frozen = every other parameter, rest = RNG streams."""
  from ichflax import models  # Models import this module's users
  graphdef, trained, stats, frozen, rest = nnx.split(
      model, models.trainable_filter(recipe), nnx.BatchStat, nnx.Param, ...)
  return graphdef, nnx.merge_state(trained, stats), frozen, rest


def frozen_dir(step_dir: str | Path) -> Path:
  """Where the frozen parameters of a lean checkpoint's run lie: WORKDIR/frozen."""
  return Path(step_dir).absolute().parent.parent / FROZEN


def is_lean(step_dir: str | Path) -> bool:
  return (Path(step_dir) / TRAINED).is_dir()


def save(manager: ocp.CheckpointManager, step: int, state: nnx.State, opt_state: Any, *,
         spec: ModelSpec, config: TrainConfig, progress: Progress,
         score: float | None = None, frozen: nnx.State | None = None) -> None:
  """Saves asynchronously; `score` (higher is better) marks epoch-end checkpoints for `best`.

  With `frozen` (parameters the run never changes) the save is lean: `state` holds only the
  changing part, and `frozen` is written to WORKDIR/frozen the first time only (atomically, before
  any step refers to it).
  """
  if frozen is not None:
    target = Path(manager.directory).parent / FROZEN
    if not target.is_dir():
      with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, frozen)
  manager.save(step, args=ocp.args.Composite(**{
      (STATE if frozen is None else TRAINED): ocp.args.StandardSave(state),
      OPT_STATE: ocp.args.StandardSave(opt_state),
      SPEC: ocp.args.JsonSave(jsonable(spec.to_json())),
      CONFIG: ocp.args.JsonSave(jsonable(config.to_dict())),
      PROGRESS: ocp.args.JsonSave(jsonable(progress.to_json())),
  }), metrics=None if score is None else {"score": float(score)})


def restore(manager: ocp.CheckpointManager, step: int, state: nnx.State,
            opt_state: Any = None) -> tuple[nnx.State, Any, Progress]:
  """Restores into the shapes, dtypes and shardings of the given (live or abstract) targets.

  `state` is the whole model state, or for a lean step its changing part. Without `opt_state`
  the optimiser moments are not read (evaluation needs only the model).
  """
  item = TRAINED if is_lean(Path(manager.directory) / str(step)) else STATE
  items = {item: ocp.args.StandardRestore(_abstract(state)), PROGRESS: ocp.args.JsonRestore()}
  if opt_state is not None:
    items[OPT_STATE] = ocp.args.StandardRestore(_abstract(opt_state))
  out = manager.restore(step, args=ocp.args.Composite(**items))
  return (out[item], out[OPT_STATE] if opt_state is not None else None,
          Progress.from_json(out[PROGRESS]))


def restore_into(manager: ocp.CheckpointManager, step: int, model: nnx.Module, recipe: str,
                 opt_state: Any = None) -> tuple[Any, Progress]:
  """Loads a training step into `model` in place, lean or whole: (optimiser state, progress)."""
  step_dir = Path(manager.directory) / str(step)
  if not is_lean(step_dir):
    state, opt_state, progress = restore(manager, step, model_state(model), opt_state)
    nnx.update(model, state)
    return opt_state, progress
  _, changing, frozen, _ = model_parts(model, recipe)
  changing, opt_state, progress = restore(manager, step, changing, opt_state)
  nnx.update(model, changing, _restore_frozen(step_dir, _abstract(frozen)))
  return opt_state, progress


def _restore_frozen(step_dir: Path, target: Any) -> Any:
  path = frozen_dir(step_dir)
  if not path.is_dir():
    raise CheckpointError(
        f"{step_dir} is a lean checkpoint (only what training changes); its frozen parameters "
        f"belong in {path}, which is missing: keep the run's workdir whole, or export a "
        "standalone copy from it with `python -m ichflax.checkpoint export`")
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path, target)


def resolve(path: str | Path) -> Path:
  """A step directory from itself, a CheckpointManager directory (best step), a workdir, or a
  Hub repository `hf://OWNER/REPO[@REVISION]` (downloaded once into the Hub cache)."""
  if str(path).startswith("hf:/"):  # also after Path() collapsed the "//"
    from ichflax import hub
    path = hub.download(str(path))
  path = Path(path)
  if (path / STATE).is_dir() and (path / LEGACY_META).is_dir() and not (path / SPEC).is_dir():
    raise CheckpointError(
        f"{path} is a checkpoint of an older ichflax layout (one `meta` item): convert it once "
        f"with `python -m ichflax.checkpoint migrate {path}`")
  if (path / SPEC).is_dir() and ((path / STATE).is_dir() or is_lean(path)):
    return path
  root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
  if root.is_dir():
    manager = ocp.CheckpointManager(root.absolute(), options=ocp.CheckpointManagerOptions(
        best_fn=_score, read_only=True))
    step = manager.best_step()
    step = manager.latest_step() if step is None else step
    if step is not None:
      return resolve(root / str(step))
  raise CheckpointError(
      f"no checkpoint at {path}: expected a directory with {STATE}/ and {SPEC}/ (a step of "
      f"WORKDIR/{CHECKPOINTS} or an exported checkpoint) or a training workdir; train one with "
      "`python -m ichflax.train` or pass the shipped one under checkpoints/")


def _read_json(step_dir: Path, item: str) -> dict:
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir.absolute() / item)


def _write_json(step_dir: Path, item: str, value: dict, force: bool = False) -> None:
  ocp.Checkpointer(ocp.JsonCheckpointHandler()).save(
      step_dir.absolute() / item, args=ocp.args.JsonSave(jsonable(value)), force=force)


def write_trust(path: str | Path, spec: ModelSpec, domain_arrays: dict[str, np.ndarray]) -> Path:
  """Stores a calibrated spec and the domain statistics in a checkpoint; weights untouched."""
  step_dir = resolve(path)
  _write_json(step_dir, SPEC, spec.to_json(), force=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(step_dir.absolute() / DOMAIN, domain_arrays, force=True)
  return step_dir


def read_domain(path: str | Path) -> dict[str, np.ndarray] | None:
  """The domain statistics' arrays, or None for a checkpoint calibrated before they existed."""
  step_dir = resolve(path)
  if not (step_dir / DOMAIN).is_dir():
    return None
  with ocp.StandardCheckpointer() as ckptr:
    return {k: np.asarray(v) for k, v in ckptr.restore(step_dir.absolute() / DOMAIN).items()}


def read_spec(path: str | Path) -> ModelSpec:
  """The model spec of a checkpoint, without loading any weights."""
  return ModelSpec.from_json(_read_json(resolve(path), SPEC))


def read_config(path: str | Path) -> TrainConfig:
  return TrainConfig.from_dict(_read_json(resolve(path), CONFIG))


def read_progress(path: str | Path) -> Progress:
  return Progress.from_json(_read_json(resolve(path), PROGRESS))


def load_inference(path: str | Path, dtype=jnp.float32) -> tuple[nnx.Module, ModelSpec]:
  """(Classifier in eval mode, spec) from any checkpoint, fp32 parameters whatever was stored."""
  step_dir = resolve(path)
  spec = read_spec(step_dir)
  model = restore_model(step_dir, spec, dtype)
  model.eval()
  return model, spec


def restore_model(step_dir: Path, spec: ModelSpec, dtype=jnp.float32) -> nnx.Module:
  """The checkpoint's Classifier, built abstractly so no random initialisation is wasted."""
  from ichflax import models, steps  # Models import this module's users
  abstract = nnx.eval_shape(lambda: models.build_classifier(
      spec.task, spec.variant, spec.dropout, rngs=nnx.Rngs(0), dtype=dtype))
  def f32(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), tree)
  if is_lean(step_dir):
    graphdef, changing, frozen, rngs = model_parts(abstract, spec.recipe)
    with ocp.StandardCheckpointer() as ckptr:
      changing = ckptr.restore(step_dir.absolute() / TRAINED, f32(changing))
    return nnx.merge(graphdef, changing, _restore_frozen(step_dir, f32(frozen)),
                     steps.reseed(rngs, jax.random.key(0)))
  graphdef, target, rngs = nnx.split(abstract, MODEL_STATE, ...)
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(step_dir.absolute() / STATE, f32(target))
  return nnx.merge(graphdef, state, steps.reseed(rngs, jax.random.key(0)))


def export_inference(src: str | Path, dst: str | Path, dtype=jnp.bfloat16) -> Path:
  """Writes a small inference-only checkpoint (no optimiser state), parameters in `dtype`.

  BatchNorm statistics stay fp32 (their variance is sensitive to rounding); `load_inference`
  casts everything back to fp32. The run's test metrics (its report) travel along when the
  exported step is the one the report tested.
  """
  step_dir = resolve(src)
  dst = Path(dst).absolute()
  if dst.exists():
    raise CheckpointError(f"{dst} already exists: remove it or choose another destination")
  spec = read_spec(step_dir)
  restored = model_state(restore_model(step_dir, spec))
  params = jax.tree.map(lambda x: x.astype(dtype), nnx.state(restored, nnx.Param))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(dst / STATE, nnx.merge_state(restored, params))
  progress = read_progress(step_dir)
  report = step_dir.parent.parent / "report" / "report.json"
  if step_dir.name.isdigit() and report.is_file():
    tested = json.loads(report.read_text())
    if tested.get("best_step") == int(step_dir.name):
      progress.test = tested.get("test")
  spec = spec.replace(stored_dtype=jnp.dtype(dtype).name)
  config = _read_json(step_dir, CONFIG)
  _write_json(dst, SPEC, spec.to_json())
  _write_json(dst, CONFIG, config)
  _write_json(dst, PROGRESS, progress.to_json())
  from ichflax import card
  card.write(dst, spec, TrainConfig.from_dict(config), progress)
  if (step_dir / DOMAIN).is_dir():
    shutil.copytree(step_dir / DOMAIN, dst / DOMAIN)
  return dst


def migrate(path: str | Path) -> Path:
  """Splits an older checkpoint's single `meta` item into spec, config and progress, in place.

  The weights are not touched, so the migrated checkpoint computes exactly what it did.
  """
  step_dir = Path(path)
  if not (step_dir / LEGACY_META).is_dir():
    raise CheckpointError(f"{step_dir} has no `{LEGACY_META}` item: nothing to migrate")
  from ichflax import config
  legacy = _read_json(step_dir, LEGACY_META)
  recipe = legacy.get("recipe")
  spec = ModelSpec.from_json({**legacy, "recipe": config.ALIASES.get(recipe, recipe)})
  measured = legacy.get("metrics") or {}
  progress = dataclasses.replace(Progress.from_json(legacy), validation=measured.get("validation"),
                                 test=measured.get("test"))
  _write_json(step_dir, SPEC, spec.to_json())
  _write_json(step_dir, CONFIG, TrainConfig.from_dict(legacy.get("config") or {}).to_dict())
  _write_json(step_dir, PROGRESS, progress.to_json())
  shutil.rmtree(step_dir / LEGACY_META)
  return step_dir


def _score(metrics: dict) -> float:
  return metrics["score"]


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def jsonable(x: Any) -> Any:
  """JSON-safe copy: dataclasses, tuples, numpy scalars/arrays and NaN (as null)."""
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return jsonable(dataclasses.asdict(x))
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.ndarray, jax.Array)):
    return jsonable(np.asarray(x).tolist())
  if isinstance(x, (np.floating, float)):
    return None if not np.isfinite(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, (str, int, bool)) or x is None:
    return x
  return json.loads(json.dumps(x, default=str))


def main(argv: list[str] | None = None) -> int:
  """`python -m ichflax.checkpoint export SRC DST [--dtype bfloat16]`, `push DIR OWNER/REPO`
  or `migrate DIR`."""
  import argparse
  p = argparse.ArgumentParser(prog="python -m ichflax.checkpoint", description=main.__doc__)
  commands = p.add_subparsers(dest="command", required=True)
  export = commands.add_parser("export", help="a small serving copy of a training checkpoint")
  export.add_argument("src", help="a training workdir, its checkpoints/ dir or one step dir")
  export.add_argument("dst", help="new directory for the inference checkpoint")
  export.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  push = commands.add_parser(
      "push", help="upload an exported checkpoint and its model card to a Hugging Face model "
                   "repository (token: HF_TOKEN or `hf auth login`)")
  push.add_argument("dir", help="a directory written by `export`")
  push.add_argument("repo", help="OWNER/REPO on the Hub; created if it does not exist")
  push.add_argument("--private", action="store_true", help="create the repository private")
  old = commands.add_parser("migrate", help="convert a checkpoint of the older one-`meta` layout")
  old.add_argument("dir", help="the checkpoint's step directory (holding state/ and meta/)")
  a = p.parse_args(argv)
  try:
    if a.command == "export":
      print(export_inference(a.src, a.dst, jnp.dtype(a.dtype)))
    elif a.command == "push":
      from ichflax import hub
      commit = hub.push(a.dir, a.repo, private=a.private)
      print(f"{commit.commit_url}\nserve it with: python app.py --checkpoint hf://{a.repo}"
            f"@{commit.oid}")
    else:
      print(migrate(a.dir))
  except CheckpointError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  # Run the importable module's main: errors raised by ichflax.hub subclass *its* CheckpointError,
  # not that of this `__main__` copy.
  from ichflax import checkpoint
  sys.exit(checkpoint.main())
