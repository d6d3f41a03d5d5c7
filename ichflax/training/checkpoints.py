"""Saving and resuming a training run: orbax's CheckpointManager over the named items of
`ichflax.checkpoint.layout`, lean under `bn-head` (frozen parameters once per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers

from ichflax.checkpoint import layout
from ichflax.config import TrainConfig
from ichflax.jsonable import jsonable
from ichflax.progress import Progress
from ichflax.spec import ModelSpec


def open_manager(workdir: str | Path, keep: int) -> ocp.CheckpointManager:
  """Keeps the last `keep` checkpoints plus the best by `metrics["score"]` (higher is better)."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=layout.score, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, best_fn=layout.score, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(Path(workdir).absolute() / layout.CHECKPOINTS, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: nnx.State, opt_state: Any, *,
         spec: ModelSpec, config: TrainConfig, progress: Progress,
         score: float | None = None, frozen: nnx.State | None = None) -> None:
  """Saves asynchronously; `score` (higher is better) marks epoch-end checkpoints for `best`.

  With `frozen` (parameters the run never changes) the save is lean: `state` holds only the
  changing part, and `frozen` is written to WORKDIR/frozen the first time only (atomically, before
  any step refers to it).
  """
  if frozen is not None:
    target = Path(manager.directory).parent / layout.FROZEN
    if not target.is_dir():
      with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, frozen)
  manager.save(step, args=ocp.args.Composite(**{
      (layout.STATE if frozen is None else layout.TRAINED): ocp.args.StandardSave(state),
      layout.OPT_STATE: ocp.args.StandardSave(opt_state),
      layout.SPEC: ocp.args.JsonSave(jsonable(spec.to_json())),
      layout.CONFIG: ocp.args.JsonSave(jsonable(config.to_dict())),
      layout.PROGRESS: ocp.args.JsonSave(jsonable(progress.to_json())),
  }), metrics=None if score is None else {"score": float(score)})


def restore(manager: ocp.CheckpointManager, step: int, state: nnx.State,
            opt_state: Any = None) -> tuple[nnx.State, Any, Progress]:
  """Restores into the shapes, dtypes and shardings of the given (live or abstract) targets.

  `state` is the whole model state, or for a lean step its changing part. Without `opt_state`
  the optimiser moments are not read (evaluation needs only the model).
  """
  item = layout.TRAINED if layout.is_lean(Path(manager.directory) / str(step)) else layout.STATE
  items = {item: ocp.args.StandardRestore(layout.abstract(state)),
           layout.PROGRESS: ocp.args.JsonRestore()}
  if opt_state is not None:
    items[layout.OPT_STATE] = ocp.args.StandardRestore(layout.abstract(opt_state))
  out = manager.restore(step, args=ocp.args.Composite(**items))
  return (out[item], out[layout.OPT_STATE] if opt_state is not None else None,
          Progress.from_json(out[layout.PROGRESS]))


def restore_into(manager: ocp.CheckpointManager, step: int, model: nnx.Module, trainable: str,
                 opt_state: Any = None) -> tuple[Any, Progress]:
  """Loads a training step into `model` in place, lean or whole: (optimiser state, progress)."""
  step_dir = Path(manager.directory) / str(step)
  if not layout.is_lean(step_dir):
    state, opt_state, progress = restore(manager, step, layout.model_state(model), opt_state)
    nnx.update(model, state)
    return opt_state, progress
  _, changing, frozen, _ = layout.model_parts(model, trainable)
  changing, opt_state, progress = restore(manager, step, changing, opt_state)
  nnx.update(model, changing, layout.restore_frozen(step_dir, layout.abstract(frozen)))
  return opt_state, progress
