"""What a checkpoint is on disk: its named items, the lean split, and the training workdir.

Layout of one checkpoint (a step directory of the CheckpointManager under WORKDIR/checkpoints,
or an exported inference checkpoint, which has no `opt_state`), one named item per job:

    <step>/state/      every nnx Param and BatchStat of the Classifier (orbax pytree)
    <step>/opt_state/  optax Adam state of the trainable subset (training checkpoints only)
    <step>/spec/       JSON ModelSpec: what inference needs (task, labels, inputs, data)
    <step>/config/     JSON TrainConfig: how the run was configured
    <step>/progress/   JSON Progress: loop position, epoch history, metrics
    <step>/domain/     training-domain statistics of the backbone features (orbax arrays;
                       `ichflax.trust.domain`), written with the calibration after training
    <step>/series/     JSON SeriesSpec of a sequence stage (`ichflax.models.sequence`), and
    <step>/sequence/   its parameters: present when the checkpoint reads whole series

A lean checkpoint (`bn-head`: frozen backbone convolutions) holds `<step>/trained/`
instead of `state/`: only what training changes (trainable parameters and BatchNorm
statistics), a few MB; the frozen parameters are written once per run, to WORKDIR/frozen/, and
joined back on restore. An exported checkpoint has a whole `state/`, so it stands alone.

A training workdir holds `checkpoints/` (the steps), `frozen/` and `report/` (the run's report,
which names the step it tested). A sequence stage's workdir holds `checkpoint/`: the slice
model exported standalone with the stage beside it, and `report/`. Only this module spells
those names.

Dropout RNG keys are not stored: each step derives its key from (config seed, step), so a
resumed run draws exactly the keys it would have drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from ichflax import models
from ichflax.jsonable import jsonable
from ichflax.spec import ModelSpec

STATE, OPT_STATE, SPEC, CONFIG, PROGRESS = "state", "opt_state", "spec", "config", "progress"
TRAINED = "trained"  # a lean checkpoint's changing part, in place of `state`
DOMAIN = "domain"
SERIES, SEQUENCE = "series", "sequence"  # a sequence stage's spec and parameters
SERVED = "checkpoint"  # a sequence stage's WORKDIR/checkpoint: what it serves
CHECKPOINTS = "checkpoints"
FROZEN = "frozen"  # WORKDIR/frozen: the parameters a lean run never changes, written once
REPORT = "report"  # WORKDIR/report: report.json names the step it tested (`best_step`)
LEGACY_META = "meta"  # one untyped JSON item, before the spec/config/progress split
# Everything a Classifier needs to be rebuilt exactly; RNG streams are derived, not stored.
MODEL_STATE = nnx.Any(nnx.Param, nnx.BatchStat)


class CheckpointError(ValueError):
  """A path that holds no usable checkpoint; the message says what was expected."""


def model_state(model: nnx.Module) -> nnx.State:
  return nnx.state(model, MODEL_STATE)


def model_parts(model: nnx.Module, trainable: str):
  """(graphdef, changing, frozen, rest) of a model under `trainable`: changing = its trainable
  parameters and BatchNorm statistics, frozen = every other parameter, rest = RNG streams."""
  graphdef, trained, stats, frozen, rest = nnx.split(
      model, models.trainable_filter(trainable), nnx.BatchStat, nnx.Param, ...)
  return graphdef, nnx.merge_state(trained, stats), frozen, rest


def workdir_of(step_dir: str | Path) -> Path:
  """The training workdir a step of WORKDIR/checkpoints belongs to."""
  return Path(step_dir).absolute().parent.parent


def frozen_dir(step_dir: str | Path) -> Path:
  """Where the frozen parameters of a lean checkpoint's run lie: WORKDIR/frozen."""
  return workdir_of(step_dir) / FROZEN


def report_json(step_dir: str | Path) -> Path:
  """The report of the run a step belongs to (it may not exist, or test another step)."""
  return workdir_of(step_dir) / REPORT / "report.json"


def is_lean(step_dir: str | Path) -> bool:
  return (Path(step_dir) / TRAINED).is_dir()


def score(metrics: dict) -> float:
  """The CheckpointManager's ranking of a step (higher is better), as saved with it."""
  return metrics["score"]


def find_step(path: str | Path) -> Path:
  """A local step directory from itself, a CheckpointManager directory (best step, else the
  latest) or a training workdir."""
  path = Path(path)
  if (path / STATE).is_dir() and (path / LEGACY_META).is_dir() and not (path / SPEC).is_dir():
    raise CheckpointError(
        f"{path} is a checkpoint of an older ichflax layout (one `meta` item): convert it once "
        f"with `python -m ichflax.checkpoint migrate {path}`")
  if (path / SPEC).is_dir() and ((path / STATE).is_dir() or is_lean(path)):
    return path
  if (path / SERVED / SPEC).is_dir():
    return find_step(path / SERVED)
  root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
  if root.is_dir():
    manager = ocp.CheckpointManager(root.absolute(), options=ocp.CheckpointManagerOptions(
        best_fn=score, read_only=True))
    step = manager.best_step()
    step = manager.latest_step() if step is None else step
    if step is not None:
      return find_step(root / str(step))
  raise CheckpointError(
      f"no checkpoint at {path}: expected a directory with {STATE}/ and {SPEC}/ (a step of "
      f"WORKDIR/{CHECKPOINTS} or an exported checkpoint) or a training workdir; train one with "
      "`python -m ichflax.train` or pass the shipped one under checkpoints/")


def read_json(step_dir: Path, item: str) -> dict:
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(Path(step_dir).absolute() / item)


def write_json(step_dir: Path, item: str, value: dict, force: bool = False) -> None:
  ocp.Checkpointer(ocp.JsonCheckpointHandler()).save(
      Path(step_dir).absolute() / item, args=ocp.args.JsonSave(jsonable(value)), force=force)


def spec_at(step_dir: Path) -> ModelSpec:
  """The model spec of a local step directory, without loading any weights."""
  return ModelSpec.from_json(read_json(step_dir, SPEC))


def restore_frozen(step_dir: Path, target: Any) -> Any:
  """A lean checkpoint's frozen parameters, from its run's WORKDIR/frozen."""
  path = frozen_dir(step_dir)
  if not path.is_dir():
    raise CheckpointError(
        f"{step_dir} is a lean checkpoint (only what training changes); its frozen parameters "
        f"belong in {path}, which is missing: keep the run's workdir whole, or export a "
        "standalone copy from it with `python -m ichflax.checkpoint export`")
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path, target)


def abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
