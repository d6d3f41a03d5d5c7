"""`python -m ichflax.train`: the seed's recipe, jit-compiled, data-parallel, resumable.

Re-running the same command after the process died resumes from the last checkpoint (mid-epoch
included); a finished run only re-evaluates and rewrites its report. `run(cfg)` is the Python
API behind the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from ichflax import checkpoint, config, metrics, models, report, sharding, steps, tasks, xla_cache
from ichflax.config import TrainConfig

log = logging.getLogger("ichflax.train")

RANDOM_INIT_WARNING = """
==========================================================================================
WARNING: no --weights given: the ResNet50 backbone starts from RANDOM weights.
There are no ImageNet features to transfer, so the paper's recipe (--recipe seed: every
convolution frozen, only BatchNorm + head trained) cannot learn anything useful; results from
it say nothing about the paper. Use --recipe full (every parameter trains; fine on the phantom
at small sizes) or convert ImageNet weights first: python -m ichflax.weights fetch/convert,
then pass --weights DIR.
==========================================================================================
"""
# Fields that change what a checkpoint means; a workdir holding another run refuses to resume.
RESUME_KEYS = ("task", "data", "weights", "recipe", "variant", "batch_size", "dropout",
               "image_size", "lr", "seed", "dtype", "augment", "limit", "stored_size", "protocol",
               "phantom_slices", "bn_momentum", "zero_init_residual")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Split:
  """The examples of one split this task learns from."""

  source: Any
  indices: np.ndarray


def ranking(task_name: str) -> tuple[str, bool]:
  """(validation metric, higher is better) that ranks checkpoints and sweep points alike."""
  return ("loss", False) if task_name == "multilabel" else ("accuracy", True)


def score_of(task_name: str, val: dict) -> float:
  """Checkpoint score, higher is better: accuracy, or minus the RSNA loss for multilabel."""
  metric, higher = ranking(task_name)
  return val[metric] if higher else -val[metric]


def run(cfg: TrainConfig) -> dict:
  """Trains (or resumes), evaluates the best checkpoint on test and writes the report."""
  sharding.maybe_initialize_distributed(cfg.distributed)
  config.validate(cfg, num_devices=jax.device_count())
  workdir = Path(cfg.workdir).absolute()
  manager = checkpoint.open_manager(workdir, cfg.keep)
  if manager.latest_step() is not None:
    check_resumable(manager, cfg)
  task = tasks.get_task(cfg.task)
  if cfg.weights is None:
    log.warning(RANDOM_INIT_WARNING)
  dataset_dir, info, splits = load_data(cfg, task)
  dtype = steps.compute_dtype(cfg.dtype)
  model = build_model(cfg, dtype)
  spec = steps.StepSpec(task.name, cfg.image_size, model.variant, cfg.augment, dtype)
  trainable = models.trainable_filter(cfg.recipe)
  compiled, state, frozen = steps.make_steps(model, trainable, optax.adam(cfg.lr), spec)
  mesh = sharding.make_mesh()
  state, frozen = sharding.replicate((state, frozen), mesh)
  meta = {"task": task.name, "class_names": list(task.class_names), "variant": model.variant,
          "image_size": cfg.image_size, "stored_size": info.get("size"),
          "windows": info.get("windows"), "dropout": cfg.resolved_dropout, "recipe": cfg.recipe,
          "data": data_name(info), "dataset_dir": str(dataset_dir), "config": cfg.to_dict(),
          "seed": cfg.seed, "step": 0, "epoch": 0, "batch": 0, "history": [], "epoch_sums": None,
          "metrics": {}}
  if manager.latest_step() is not None:
    state, frozen, meta = resume(manager, model, trainable, state)
    state, frozen = sharding.replicate((state, frozen), mesh)
  log.info("%s on %s: %d train / %d validation / %d test, %d x %s, %s compute, recipe %s",
           task.name, meta["data"], *(len(splits[s].indices) for s in SPLITS),
           jax.device_count(), jax.devices()[0].platform, np.dtype(dtype).name, cfg.recipe)
  trainer = _Trainer(cfg, task, compiled, mesh, manager, model, meta)
  state = trainer.fit(state, frozen, splits)
  manager.wait_until_finished()
  return finish(trainer, trainable, state, splits)


def build_model(cfg: TrainConfig, dtype) -> models.Classifier:
  backbone = None
  if cfg.weights is not None:
    from ichflax import weights  # pylint: disable=import-outside-toplevel
    backbone = weights.load_backbone(cfg.weights, dtype=dtype)
  variant = backbone.variant if backbone is not None else cfg.variant
  model = models.build_classifier(cfg.task, variant, cfg.resolved_dropout,
                                  rngs=nnx.Rngs(cfg.seed), dtype=dtype, backbone=backbone,
                                  zero_init_residual=cfg.zero_init_residual)
  if cfg.bn_momentum is not None:
    for _, module in nnx.iter_graph(model):
      if isinstance(module, nnx.BatchNorm):
        module.momentum = cfg.bn_momentum
  return model


def load_data(cfg: TrainConfig, task: tasks.Task) -> tuple[Path, dict, dict[str, Split]]:
  """Prepares the dataset once and picks each split's examples for the task."""
  from ichflax import data  # pylint: disable=import-outside-toplevel
  kwargs = {"protocol": cfg.protocol}
  if cfg.stored_size is not None:
    kwargs["size"] = cfg.stored_size
  if cfg.data in (None, "phantom"):
    kwargs["num"] = cfg.phantom_slices
  dataset_dir = Path(data.prepare(cfg.data, **kwargs))
  info = data.dataset_info(dataset_dir)
  splits = {}
  for name in SPLITS:
    meta = data.read_meta(dataset_dir, name)
    indices = np.flatnonzero(task.select(meta["labels"], meta["group"]))
    if cfg.limit is not None and cfg.limit < len(indices):
      # Splits are stored class by class: a prefix would hold only some classes.
      rng = np.random.default_rng([cfg.seed, SPLITS.index(name)])
      indices = np.sort(rng.choice(indices, cfg.limit, replace=False))
    if len(indices) == 0:
      raise config.ConfigError(f"the {name} split of {dataset_dir} has no examples for the "
                               f"{task.name} task: check --data and --task")
    splits[name] = Split(data.open_split(dataset_dir, name), indices)
  return dataset_dir, info, splits


def data_name(info: dict) -> str:
  """What the weights were trained on, in words (reports and model cards name their data)."""
  if info.get("source") == "phantom":
    return "synthetic phantom"
  return f"{info.get('data', info.get('source', 'unknown'))}, {info.get('protocol')} protocol"


def check_resumable(manager, cfg: TrainConfig) -> None:
  """Refuses, before any work, to resume a workdir that holds a different run."""
  saved = checkpoint.read_meta(Path(manager.directory) / str(manager.latest_step()))
  old = config.TrainConfig.from_dict(saved["config"]).to_dict()
  new = cfg.to_dict()
  changed = [k for k in RESUME_KEYS if old.get(k) != new.get(k)]
  if changed:
    raise config.ConfigError(
        f"{cfg.workdir} holds a run with different {', '.join(changed)} "
        f"({', '.join(f'{k}={old.get(k)!r}' for k in changed)}): choose another --workdir, "
        "or delete it to start over")


def resume(manager, model, trainable, state):
  """Restores the latest checkpoint (mid-epoch position included) into the live model."""
  step = manager.latest_step()
  params, opt_state, meta = checkpoint.restore(
      manager, step, _model_state(model, state), state.opt_state)
  nnx.update(model, params)
  _, params, stats, frozen = steps.split(model, trainable)
  log.info("resumed from step %d: %d epochs done, next batch %d", step, meta["epoch"], meta["batch"])
  return steps.TrainState(params, stats, opt_state), frozen, meta


def _model_state(model, state: steps.TrainState) -> nnx.State:
  nnx.update(model, state.trainable, state.batch_stats)
  return checkpoint.model_state(model)


class _Trainer:
  """The epoch loop: train steps, mid-epoch and epoch-end checkpoints, validation, history."""

  def __init__(self, cfg, task, compiled, mesh, manager, model, meta):
    self.cfg, self.task, self.compiled, self.mesh = cfg, task, compiled, mesh
    self.manager, self.model, self.meta = manager, model, meta
    self.key = jax.random.key(cfg.seed)
    self.first_calls: set[str] = set()

  def fit(self, state, frozen, splits):
    cfg, meta = self.cfg, self.meta
    bs = cfg.resolved_batch_size
    per_epoch = len(splits["train"].indices) // bs
    if per_epoch == 0:
      raise config.ConfigError(f"batch size {bs} exceeds the {len(splits['train'].indices)} "
                               "training examples: lower --batch-size")
    for epoch in range(meta["epoch"], cfg.epochs):
      start = meta["batch"] if epoch == meta["epoch"] else 0
      sums = meta["epoch_sums"] or {"loss": 0.0, "hits": 0.0, "n": 0, "seconds": 0.0, "timed": 0}
      batches = self.batches(splits["train"], bs, train=True, epoch=epoch, start_batch=start)
      bar = tqdm(batches, total=per_epoch, initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                 disable=not cfg.progress or jax.process_index() != 0, leave=False)
      for i, batch in enumerate(bar, start):
        t0 = time.perf_counter()
        state, loss, probs = self.compiled.train(state, frozen, batch, self.key, meta["step"])
        loss = float(loss)
        seconds = time.perf_counter() - t0
        if not self._log_compile("train", seconds):  # throughput leaves the compile out
          sums["seconds"] += seconds
          sums["timed"] += bs
        meta["step"] += 1
        sums["loss"] += loss * bs
        sums["hits"] += float(np.sum(metrics.hits(self.task.activation, _host(probs),
                                                  _host(batch["targets"]))))
        sums["n"] += bs
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{bs / seconds:.1f}")
        if cfg.checkpoint_every and meta["step"] % cfg.checkpoint_every == 0 and i + 1 < per_epoch:
          meta.update(epoch=epoch, batch=i + 1, epoch_sums=sums)
          self.save(state, frozen)
      bar.close()
      val = self.evaluate(state, frozen, splits["validation"])
      record = {"epoch": epoch + 1, "step": meta["step"],
                "train_loss": sums["loss"] / sums["n"], "train_accuracy": sums["hits"] / sums["n"],
                "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                "val_auc": val.get("auc"), "images_per_s": sums["timed"] / sums["seconds"] if sums["timed"] else None}
      meta["history"] = [h for h in meta["history"] if h["epoch"] != epoch + 1] + [record]
      meta.update(epoch=epoch + 1, batch=0, epoch_sums=None, metrics={"validation": val})
      self.save(state, frozen, score=score_of(self.task.name, val))
      log.info("epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f auc %s | "
               "%s img/s", epoch + 1, cfg.epochs, record["train_loss"],
               record["train_accuracy"], val["loss"], val["accuracy"],
               report.fmt(val.get("auc")), report.fmt(record["images_per_s"]))
    return state

  def save(self, state, frozen, score=None):
    checkpoint.save(self.manager, self.meta["step"], _model_state(self.model, state),
                    state.opt_state, self.meta, score)

  def batches(self, split: Split, batch_size: int, *, train: bool, epoch: int = 0,
              start_batch: int = 0) -> Iterator[dict]:
    """Device batches of task targets, split over the mesh's batch axis.

    Training: each host loads only its rows of every global batch (the order is fixed by
    (seed, epoch)). Evaluation: each host loads whole padded batches and keeps its rows.
    """
    from ichflax.data import loader  # pylint: disable=import-outside-toplevel
    rows = sharding.host_slice(batch_size)
    if train:
      order = loader.epoch_order(split.indices, shuffle=True, seed=self.cfg.seed, epoch=epoch)
      full = len(order) // batch_size * batch_size
      mine = order[:full].reshape(-1, batch_size)[:, rows].ravel()
      it = loader.batches(split.source, mine, rows.stop - rows.start, shuffle=False,
                          drop_remainder=True, start_batch=start_batch)
    else:
      it = (jax.tree.map(lambda v: v[rows], b) for b in loader.batches(
          split.source, split.indices, batch_size, shuffle=False, drop_remainder=False))
    for b in it:
      local = {"image": b["image"], "targets": self.task.targets(b["labels"], b["group"]),
               "mask": b["mask"]}
      yield sharding.shard_batch(local, self.mesh)

  def evaluate(self, state, frozen, split: Split) -> dict:
    """Metrics over every example of the split exactly once (padding rows masked out)."""
    losses, probs, targets = [], [], []
    for batch in self.batches(split, self.cfg.resolved_eval_batch_size, train=False):
      t0 = time.perf_counter()
      loss, p = self.compiled.eval(state, frozen, batch)
      mask = _host(batch["mask"])
      losses.append(_host(loss)[mask])
      probs.append(_host(p)[mask])
      self._log_compile("eval", time.perf_counter() - t0)
      targets.append(_host(batch["targets"])[mask])
    out = metrics.evaluate(self.task.name, np.concatenate(probs), np.concatenate(targets))
    out["loss"] = float(np.mean(np.concatenate(losses)))
    return out

  def _log_compile(self, which: str, seconds: float) -> bool:
    """Logs the first call of a step (compile + run) once; True for that call."""
    if which in self.first_calls:
      return False
    self.first_calls.add(which)
    log.info("%s step compiled and ran once in %.1f s", which, seconds)
    return True


def finish(trainer: _Trainer, trainable, state: steps.TrainState, splits) -> dict:
  """Evaluates the best checkpoint on test and writes the report beside the checkpoints."""
  cfg, task, manager, model = trainer.cfg, trainer.task, trainer.manager, trainer.model
  best = manager.best_step()
  best = manager.latest_step() if best is None else best
  params, _, meta = checkpoint.restore(manager, best, _model_state(model, state))
  nnx.update(model, params)
  _, trained, stats, frozen = steps.split(model, trainable)
  # Evaluation reads the model only: the live Adam state rides along unread.
  best_state, frozen = sharding.replicate(
      (steps.TrainState(trained, stats, state.opt_state), frozen), trainer.mesh)
  test = trainer.evaluate(best_state, frozen, splits["test"])
  history = checkpoint.read_meta(Path(manager.directory) / str(manager.latest_step()))["history"]
  rep = report.build(task.name, history, test, data=meta["data"], config=cfg.to_dict(),
                     extra={"best_step": best, "best_epoch": meta["epoch"],
                            "validation": meta["metrics"].get("validation")})
  paths = report.write(rep, Path(cfg.workdir).absolute() / "report")
  log.info("report: %s", paths["md"])
  return {"workdir": str(Path(cfg.workdir).absolute()),
          "checkpoint": str(Path(manager.directory) / str(best)),
          "report_json": str(paths["json"]), "report_md": str(paths["md"]),
          "metrics": {"test": test, "validation": meta["metrics"].get("validation")},
          "history": history}


def _host(x) -> np.ndarray:
  """A global array gathered to this host (all hosts' rows on a multi-host mesh)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


# ---------------------------------------------------------------------------------------------
# Sweep and CLI.


# What a sweep may vary, with each value's type (a grid is text; None/bool defaults say nothing).
SWEEPABLE = {"dropout": float, "batch_size": int, "lr": float, "epochs": int, "image_size": int,
             "bn_momentum": float, "seed": int, "recipe": str, "variant": str, "limit": int,
             "eval_batch_size": int, "stored_size": int}


def parse_grid(text: str) -> list[dict[str, Any]]:
  """'dropout=0.25,0.3 batch_size=8,16' -> every combination, values typed."""
  axes = []
  for item in text.split():
    name, _, values = item.partition("=")
    if name not in SWEEPABLE or not values:
      raise config.ConfigError(f"bad sweep item {item!r}: write NAME=V1,V2 with NAME one of "
                               f"{', '.join(sorted(SWEEPABLE))}")
    axes.append([(name, _typed(name, v)) for v in values.split(",")])
  if not axes:
    raise config.ConfigError("empty --sweep: write e.g. 'dropout=0.25,0.3,0.4 batch_size=8,16'")
  return [dict(combo) for combo in itertools.product(*axes)]


def _typed(name: str, value: str) -> Any:
  kind = SWEEPABLE[name]
  try:
    return kind(value)
  except ValueError as e:
    raise config.ConfigError(f"sweep value {value!r} for {name} must be {kind.__name__}") from e


def sweep(cfg: TrainConfig, grid: str) -> dict:
  """Runs the grid (the seed's tuning), one workdir per point; one table ranked by validation."""
  points = parse_grid(grid)
  for p in points:  # every point is checked before the first one trains
    config.validate(cfg.replace(**p), num_devices=jax.device_count())
  rows = []
  for p in points:
    name = ",".join(f"{k}={v}" for k, v in p.items())
    point = cfg.replace(**p, workdir=str(Path(cfg.workdir) / "sweep" / name))
    try:
      result = run(point)
    except Exception as e:  # pylint: disable=broad-except
      log.error("sweep point %s failed, skipped: %s", name, e)
      rows.append({"params": p, "workdir": point.workdir, "error": str(e)})
      continue
    val = result["metrics"]["validation"] or {}
    rows.append({"params": p, "workdir": point.workdir, "val_accuracy": val.get("accuracy"),
                 "val_loss": val.get("loss"), "test_accuracy": result["metrics"]["test"]["accuracy"]})
  metric, higher = ranking(cfg.task)
  table = report.sweep_table(rows, f"val_{metric}", higher)
  out = Path(cfg.workdir).absolute() / "sweep"
  out.mkdir(parents=True, exist_ok=True)
  (out / "sweep.md").write_text(f"# Sweep over {grid!r} ({cfg.task}, data: "
                                f"{cfg.data or 'synthetic phantom'})\n\n{table}")
  (out / "sweep.json").write_text(json.dumps(checkpoint.jsonable(rows), indent=1))
  return {"table": table, "rows": rows, "path": str(out / "sweep.md")}


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, str | None]:
  p = argparse.ArgumentParser(prog="python -m ichflax.train", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="cpu-demo", choices=sorted(config.PRESETS),
                 help="starting values; flags override them (default: cpu-demo)")
  p.add_argument("--task", default="binary", choices=sorted(tasks.TASKS))
  p.add_argument("--data", help="phantom (default), a TFDS dataset dir, or an RSNA/PNG folder")
  p.add_argument("--weights", help="converted ImageNet backbone (python -m ichflax.weights)")
  p.add_argument("--recipe", choices=config.RECIPES)
  p.add_argument("--variant", choices=config.VARIANTS)
  p.add_argument("--epochs", type=int)
  p.add_argument("--batch-size", type=int)
  p.add_argument("--eval-batch-size", type=int)
  p.add_argument("--dropout", type=float)
  p.add_argument("--image-size", type=int)
  p.add_argument("--lr", type=float)
  p.add_argument("--workdir", help="checkpoints and report (default runs/<preset>-<task>)")
  p.add_argument("--seed", type=int)
  p.add_argument("--dtype", choices=config.DTYPES)
  p.add_argument("--limit", type=int, help="use at most this many examples per split")
  p.add_argument("--stored-size", type=int, help="stored slice size when a dataset is built")
  p.add_argument("--phantom-slices", type=int, help="slices drawn when the phantom is built")
  p.add_argument("--bn-momentum", type=float, help="BatchNorm running-average momentum")
  p.add_argument("--keep", type=int, help="last N checkpoints to keep (plus the best)")
  p.add_argument("--checkpoint-every", type=int, help="mid-epoch checkpoint every K steps")
  p.add_argument("--no-augment", action="store_true", help="turn training augmentation off")
  p.add_argument("--no-zero-init-residual", dest="zero_init_residual", action="store_false",
                 default=None, help="random init: residual blocks start as in Keras, not as "
                 "their shortcut (reproduces runs made before the option existed)")
  p.add_argument("--distributed", action="store_true", help="jax.distributed.initialize()")
  p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
  p.add_argument("--sweep", help="grid, e.g. 'dropout=0.25,0.3,0.4 batch_size=8,16'")
  a = p.parse_args(argv)
  flags = {k: v for k, v in vars(a).items()
           if v is not None and k not in ("preset", "sweep", "no_augment", "no_progress")}
  flags.setdefault("workdir", f"runs/{a.preset}-{a.task}")
  cfg = config.preset(a.preset, **flags)
  if a.no_augment:
    cfg = cfg.replace(augment=dataclasses.replace(cfg.augment, enabled=False))
  return cfg.replace(progress=not a.no_progress), a.sweep


def setup_cli() -> None:
  """CLI set-up: a log line per epoch, quiet orbax, and the persistent compile cache."""
  logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
  logging.getLogger("ichflax").setLevel(logging.INFO)
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's per-save chatter
  xla_cache.enable()


def main(argv: list[str] | None = None) -> int:
  setup_cli()
  try:
    cfg, grid = parse_args(argv)
    if grid:
      print(sweep(cfg, grid)["table"])
      return 0
    result = run(cfg)
  except (config.ConfigError, checkpoint.CheckpointError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(Path(result["report_md"]).read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
