"""Orbax checkpoints: resumable training state, and the inference view the Predictor loads.

Layout of one checkpoint (a step directory of the CheckpointManager under WORKDIR/checkpoints,
or an exported inference checkpoint, which has no `opt_state`):

    <step>/state/      every nnx Param and BatchStat of the Classifier (orbax pytree)
    <step>/opt_state/  optax Adam state of the trainable subset (training checkpoints only)
    <step>/meta/       JSON: task, class names, preprocessing, config, position, RNG, metrics

Dropout RNG keys are not stored: each step derives its key from (seed, step), both in `meta`,
so a resumed run draws exactly the keys it would have drawn.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers

STATE, OPT_STATE, META = "state", "opt_state", "meta"
CHECKPOINTS = "checkpoints"
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


def save(manager: ocp.CheckpointManager, step: int, state: nnx.State, opt_state: Any,
         meta: dict, score: float | None = None) -> None:
  """Saves asynchronously; `score` (higher is better) marks epoch-end checkpoints for `best`."""
  manager.save(step, args=ocp.args.Composite(**{
      STATE: ocp.args.StandardSave(state),
      OPT_STATE: ocp.args.StandardSave(opt_state),
      META: ocp.args.JsonSave(jsonable(meta)),
  }), metrics=None if score is None else {"score": float(score)})


def restore(manager: ocp.CheckpointManager, step: int, state: nnx.State,
            opt_state: Any = None) -> tuple[nnx.State, Any, dict]:
  """Restores into the shapes, dtypes and shardings of the given (live or abstract) targets.

  Without `opt_state` the optimiser moments are not read (evaluation needs only the model).
  """
  items = {STATE: ocp.args.StandardRestore(_abstract(state)), META: ocp.args.JsonRestore()}
  if opt_state is not None:
    items[OPT_STATE] = ocp.args.StandardRestore(_abstract(opt_state))
  out = manager.restore(step, args=ocp.args.Composite(**items))
  return out[STATE], out[OPT_STATE] if opt_state is not None else None, out[META]


def resolve(path: str | Path) -> Path:
  """A step directory from itself, a CheckpointManager directory (best step) or a workdir."""
  path = Path(path)
  if (path / META).is_dir() and (path / STATE).is_dir():
    return path
  root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
  if root.is_dir():
    manager = ocp.CheckpointManager(root.absolute(), options=ocp.CheckpointManagerOptions(
        best_fn=_score, read_only=True))
    step = manager.best_step()
    step = manager.latest_step() if step is None else step
    if step is not None:
      return root / str(step)
  raise CheckpointError(
      f"no checkpoint at {path}: expected a directory with {STATE}/ and {META}/ (a step of "
      f"WORKDIR/{CHECKPOINTS} or an exported checkpoint) or a training workdir; train one with "
      "`python -m ichflax.train` or pass the shipped one under checkpoints/")


def read_meta(path: str | Path) -> dict:
  """The JSON metadata of a checkpoint, without loading any weights."""
  step_dir = resolve(path)
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir.absolute() / META)


def load_inference(path: str | Path, dtype=jnp.float32) -> tuple[nnx.Module, dict]:
  """(Classifier in eval mode, meta) from any checkpoint, fp32 parameters whatever was stored."""
  step_dir = resolve(path)
  meta = read_meta(step_dir)
  model = restore_model(step_dir, meta, dtype)
  model.eval()
  return model, meta


def restore_model(step_dir: Path, meta: dict, dtype=jnp.float32) -> nnx.Module:
  """The checkpoint's Classifier, built abstractly so no random initialisation is wasted."""
  from ichflax import models, steps  # pylint: disable=import-outside-toplevel
  abstract = nnx.eval_shape(lambda: models.build_classifier(
      meta["task"], meta["variant"], meta["dropout"], rngs=nnx.Rngs(0), dtype=dtype))
  graphdef, target, rngs = nnx.split(abstract, MODEL_STATE, ...)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), target)
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(step_dir.absolute() / STATE, target)
  return nnx.merge(graphdef, state, steps.reseed(rngs, jax.random.key(0)))


def export_inference(src: str | Path, dst: str | Path, dtype=jnp.bfloat16) -> Path:
  """Writes a small inference-only checkpoint (no optimiser state), parameters in `dtype`.

  BatchNorm statistics stay fp32 (their variance is sensitive to rounding); `load_inference`
  casts everything back to fp32.
  """
  step_dir = resolve(src)
  dst = Path(dst).absolute()
  if dst.exists():
    raise CheckpointError(f"{dst} already exists: remove it or choose another destination")
  meta = read_meta(step_dir)
  restored = model_state(restore_model(step_dir, meta))
  params = jax.tree.map(lambda x: x.astype(dtype), nnx.state(restored, nnx.Param))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(dst / STATE, nnx.merge_state(restored, params))
  ocp.Checkpointer(ocp.JsonCheckpointHandler()).save(
      dst / META, args=ocp.args.JsonSave(jsonable({**meta, "stored_dtype": jnp.dtype(dtype).name,
                                                   "exported_from": str(step_dir)})))
  return dst


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
  """`python -m ichflax.checkpoint export SRC DST [--dtype bfloat16]`: a small serving copy."""
  import argparse  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(prog="python -m ichflax.checkpoint", description=main.__doc__)
  p.add_argument("command", choices=["export"])
  p.add_argument("src", help="a training workdir, its checkpoints/ dir or one step dir")
  p.add_argument("dst", help="new directory for the inference checkpoint")
  p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  a = p.parse_args(argv)
  try:
    print(export_inference(a.src, a.dst, jnp.dtype(a.dtype)))
  except CheckpointError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
