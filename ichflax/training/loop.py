"""One training run: the paper's recipe, jit-compiled, data-parallel, resumable.

Re-running the same command after the process died resumes from the last checkpoint (mid-epoch
included); a finished run only re-evaluates and rewrites its report. `run(cfg)` is the Python
API behind the CLI (`ichflax.training.cli`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from ichflax import checkpoint, config, models, tasks
from ichflax.config import TrainConfig
from ichflax.data import splits as data_splits
from ichflax.evaluation import metrics, report
from ichflax.progress import EpochRecord, EpochSums, Progress
from ichflax.spec import ModelSpec
from ichflax.training import checkpoints, curves, optim, sharding, steps
from ichflax.trust import calibrate

log = logging.getLogger("ichflax.train")

RANDOM_INIT_WARNING = """
==========================================================================================
WARNING: no --weights given: the backbone starts from RANDOM weights.
There are no ImageNet features to transfer, so the paper's recipe (--trainable bn-head: every
convolution frozen, only BatchNorm + head trained) cannot learn anything useful; results from
it say nothing about the paper. Use --trainable all (every parameter trains; fine on the
phantom at small sizes) or convert ImageNet weights first: python -m ichflax.weights
fetch/convert, then pass --weights DIR.
==========================================================================================
"""
def ranking(task_name: str) -> tuple[str, bool]:
  """(validation metric, higher is better) that ranks checkpoints and sweep points alike."""
  return tasks.get_task(task_name).ranking


def score_of(task_name: str, val: dict) -> float:
  """Checkpoint score, higher is better: accuracy, or minus the RSNA log loss for multilabel."""
  metric, higher = ranking(task_name)
  return val[metric] if higher else -val[metric]


def run(cfg: TrainConfig) -> dict:
  """Trains (or resumes), evaluates the best checkpoint on test and writes the report."""
  sharding.maybe_initialize_distributed(cfg.distributed)
  config.validate(cfg, num_devices=jax.device_count())
  workdir = Path(cfg.workdir).absolute()
  manager = checkpoints.open_manager(workdir, cfg.keep)
  if manager.latest_step() is not None:
    check_resumable(manager, cfg)
  task = tasks.get_task(cfg.task)
  if cfg.weights is None:
    log.warning(RANDOM_INIT_WARNING)
  info, splits = load_data(cfg, task)
  warn_if_demo_preset(cfg, info)
  dtype = steps.compute_dtype(cfg.dtype)
  model = build_model(cfg, dtype)
  spec = model_spec(cfg, model, info)
  trainable = models.trainable_filter(cfg.trainable)
  total = len(splits["train"].indices) // cfg.resolved_batch_size * cfg.epochs
  lr = optim.schedule(cfg.lr_schedule, cfg.lr, total)
  compiled, state, frozen = steps.make_steps(model, trainable, optim.make(cfg.adam, lr),
                                             step_spec(cfg, model.variant, dtype))
  mesh = sharding.make_mesh()
  state, frozen = sharding.replicate((state, frozen), mesh)
  progress = Progress()
  if manager.latest_step() is not None:
    state, frozen, progress = resume(manager, model, cfg.trainable, trainable, state)
    state, frozen = sharding.replicate((state, frozen), mesh)
  log.info("%s on %s: %d train / %d validation / %d test, %d x %s, %s compute, trainable %s",
           task.name, spec.data, *(len(splits[s].indices) for s in data_splits.SPLITS),
           jax.device_count(), jax.devices()[0].platform, np.dtype(dtype).name, cfg.trainable)
  trainer = _Trainer(cfg, task, compiled, mesh, manager, model, spec, progress, frozen, lr)
  state = trainer.fit(state, frozen, splits)
  manager.wait_until_finished()
  return finish(trainer, trainable, state, splits)


def build_model(cfg: TrainConfig, dtype) -> models.Classifier:
  backbone = None
  if cfg.weights is not None:
    from ichflax import weights  # H5py/safetensors only when asked for
    backbone = weights.load_backbone(cfg.weights, dtype=dtype)
  arch, variant = ((backbone.arch, backbone.variant) if backbone is not None
                   else (cfg.backbone, cfg.resolved_variant))
  model = models.build_classifier(cfg.task, variant, cfg.resolved_dropout,
                                  rngs=nnx.Rngs(cfg.seed), dtype=dtype, backbone=backbone,
                                  arch=arch, zero_init_residual=cfg.zero_init_residual,
                                  head_init=cfg.head_init, context=cfg.context)
  for _, module in nnx.iter_graph(model):
    if isinstance(module, models.BatchNorm):
      module.unbiased_variance = cfg.bn_variance == "unbiased"
      if cfg.bn_momentum is not None:
        module.momentum = cfg.bn_momentum
  return model


def step_spec(cfg: TrainConfig, variant: str, dtype) -> steps.StepSpec:
  """What the compiled steps fix statically, from the run's config."""
  return steps.StepSpec(cfg.task, cfg.image_size, variant, cfg.augment, dtype, resize=cfg.resize,
                        normalization=cfg.normalization, loss_clip=cfg.loss_clip,
                        context=cfg.context)


def model_spec(cfg: TrainConfig, model: models.Classifier, info: dict) -> ModelSpec:
  """What inference needs to know about this run's model, from its config and its dataset."""
  from ichflax.data import image  # Keeps PIL out of the import path
  task = tasks.get_task(cfg.task)
  windows = info.get("windows") or image.windows_for(info["channels"])
  return ModelSpec(task=task.name, class_names=task.class_names, variant=model.variant,
                   backbone=model.arch,
                   image_size=cfg.image_size, stored_size=info["size"], windows=windows,
                   dropout=cfg.resolved_dropout, trainable=cfg.trainable,
                   data=data_splits.data_name(info),
                   normalization=cfg.normalization, resize=cfg.resize, context=cfg.context)


def load_data(cfg: TrainConfig, task: tasks.Task) -> tuple[dict, dict[str, data_splits.Split]]:
  """The run's dataset and its task's rows per split; a data problem is a config error."""
  from ichflax import data  # TFDS only when data is needed
  from ichflax.data import rsna
  try:
    return data_splits.load(cfg.data, task, **cfg.dataset_request())
  except (data.DataError, rsna.LabelError) as e:  # a message for the user, not a traceback
    raise config.ConfigError(str(e)) from e


def warn_if_demo_preset(cfg: TrainConfig, info: dict) -> bool:
  """Warns (True) when a preset sized for the phantom on a CPU trains on real data."""
  if cfg.preset not in config.PHANTOM_PRESETS or info.get("source") == "phantom":
    return False
  log.warning("the %s preset is sized for the bundled phantom on a CPU (%d px, %d epochs, "
              "from random weights); on %s it is a smoke test, not a model. For RSNA use "
              "--preset rsna --weights DIR (docs/rsna.md).", cfg.preset, cfg.image_size,
              cfg.epochs, data_splits.data_name(info))
  return True


def check_resumable(manager, cfg: TrainConfig) -> None:
  """Refuses, before any work, to resume a workdir that holds a different run."""
  old = checkpoint.read_config(Path(manager.directory) / str(manager.latest_step()))
  changed = [k for k in config.RESUME_FIELDS
             if _resume_key(config.get(old, k)) != _resume_key(config.get(cfg, k))]
  if changed:
    raise config.ConfigError(
        f"{cfg.workdir} holds a run with different {', '.join(changed)} ("
        + ", ".join(f"{k}={config.get(old, k)!r}, now {config.get(cfg, k)!r}" for k in changed)
        + "): choose another --workdir, or delete it to start over")


def _resume_key(value):
  """A path names the same data with or without a trailing slash or `./`."""
  return os.path.normpath(value) if isinstance(value, str) and os.sep in value else value


def resume(manager, model, trainable, train_filter, state):
  """Restores the latest checkpoint (mid-epoch position included) into the live model."""
  step = manager.latest_step()
  _write_back(model, state)
  opt_state, progress = checkpoints.restore_into(manager, step, model, trainable,
                                                    state.opt_state)
  _, params, stats, frozen = steps.split(model, train_filter)
  log.info("resumed from step %d: %d epochs done, next batch %d", step, progress.epoch,
           progress.batch)
  return steps.TrainState(params, stats, opt_state), frozen, progress


def _write_back(model, state: steps.TrainState) -> nnx.State:
  """Writes the live train state into `model` (it changes in place); its whole state after."""
  nnx.update(model, state.trainable, state.batch_stats)
  return checkpoint.model_state(model)


@dataclasses.dataclass
class _Clock:
  """Training throughput: the examples stepped since `start`, compiles and saves left out."""

  start: float = 0.0
  examples: int = 0

  def restart(self) -> None:
    self.start, self.examples = time.perf_counter(), 0

  def seconds(self) -> float:
    return time.perf_counter() - self.start

  def lap(self) -> tuple[float, int]:
    """(seconds, examples) since the last lap or restart, and a new interval begins."""
    out = (self.seconds(), self.examples)
    self.restart()
    return out


class DivergedError(RuntimeError):
  """The loss became NaN or infinite: the run stopped rather than train on garbage."""


class _Trainer:
  """The epoch loop: train steps, mid-epoch and epoch-end checkpoints, validation, history.

  Steps are queued without waiting on the device: their loss, hits and first non-finite step
  are summed on it (`steps.StepSums`) and read only at log intervals, checkpoints and epoch
  ends, which is also where divergence is caught (before anything is saved).
  """

  def __init__(self, cfg, task, compiled, mesh, manager, model, spec, progress, frozen, lr):
    self.cfg, self.task, self.compiled, self.mesh = cfg, task, compiled, mesh
    self.lr = lr  # a number or an optax schedule of the step
    self.manager, self.model, self.spec, self.progress = manager, model, spec, progress
    self.key = jax.random.key(cfg.seed)
    self.first_calls: set[str] = set()
    # bn-head's frozen parameters: saved once, not with every checkpoint.
    lean = nnx.state(frozen, nnx.Param)
    self.lean_frozen = lean if jax.tree.leaves(lean) else None
    self.curves = curves.Curves(Path(cfg.workdir).absolute() / curves.TB_DIR
                                if cfg.tensorboard else None)
    self.clock = _Clock()

  def fit(self, state, frozen, splits):
    """Every remaining epoch (a resumed run starts mid-epoch), each ended by validation."""
    bs = self.cfg.resolved_batch_size
    per_epoch = len(splits["train"].indices) // bs
    if per_epoch == 0:
      raise config.ConfigError(f"batch size {bs} exceeds the {len(splits['train'].indices)} "
                               "training examples: lower --batch-size")
    for epoch in range(self.progress.epoch, self.cfg.epochs):
      state, sums = self.train_epoch(state, frozen, splits["train"], epoch, per_epoch)
      self.end_epoch(state, frozen, splits["validation"], epoch, sums)
    self.curves.close()
    return state

  def train_epoch(self, state, frozen, split, epoch: int, per_epoch: int):
    """The epoch's train steps from where the run stands; mid-epoch saves on the way."""
    cfg, at, bs = self.cfg, self.progress, self.cfg.resolved_batch_size
    start = at.batch if epoch == at.epoch else 0
    sums = at.epoch_sums or EpochSums()
    acc = sharding.replicate(steps.StepSums.zeros(), self.mesh)
    batches = self.batches(split, bs, train=True, epoch=epoch, start_batch=start)
    bar = tqdm(batches, total=per_epoch, initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not cfg.progress_bar or jax.process_index() != 0, leave=False)
    self.clock.restart()
    for i, batch in enumerate(bar, start):
      state, acc = self.compiled.train(state, frozen, batch, self.key, at.step, acc)
      at.step += 1
      self.clock.examples += bs
      if "train" not in self.first_calls:  # throughput leaves the compile out
        jax.block_until_ready(acc)
        self._log_compile("train", self.clock.seconds())
        self.clock.restart()
      mid_save = bool(cfg.checkpoint_every and at.step % cfg.checkpoint_every == 0
                      and i + 1 < per_epoch)
      if mid_save or (cfg.log_every and at.step % cfg.log_every == 0):
        acc = self.read(acc, sums, bar)
      if mid_save:
        at.epoch, at.batch, at.epoch_sums = epoch, i + 1, sums
        self.save(state)
        self.clock.restart()  # saving is not training throughput
    bar.close()
    self.read(acc, sums, bar)
    return state, sums

  def end_epoch(self, state, frozen, split, epoch: int, sums: EpochSums) -> None:
    """Validation, the epoch's record, the scored checkpoint, its curves and log line."""
    cfg, at = self.cfg, self.progress
    val = self.evaluate(state, frozen, split)
    record = EpochRecord(
        epoch=epoch + 1, step=at.step, train_loss=sums.loss / sums.n,
        train_accuracy=sums.hits / sums.n, val_loss=val["loss"], val_accuracy=val["accuracy"],
        val_auc=val.get("auc"), images_per_s=sums.timed / sums.seconds if sums.timed else None)
    at.record(record)
    at.epoch, at.batch, at.epoch_sums, at.validation = epoch + 1, 0, None, val
    self.save(state, score=score_of(self.task.name, val))
    self.curves.add(at.step, {
        "epoch/train_loss": record.train_loss, "epoch/train_accuracy": record.train_accuracy,
        "val/loss": val["loss"], "val/accuracy": val["accuracy"], "val/auc": val.get("auc"),
        "epoch/images_per_s": record.images_per_s, "lr": optim.rate_at(self.lr, at.step)})
    log.info("epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f auc %s | "
             "%s img/s", epoch + 1, cfg.epochs, record.train_loss, record.train_accuracy,
             val["loss"], val["accuracy"], report.fmt(val.get("auc")),
             report.fmt(record.images_per_s))

  def read(self, acc: steps.StepSums, sums: EpochSums, bar) -> steps.StepSums:
    """Adds the device sums since the last read to the epoch's, and starts new ones.

    The one place the loop waits on the device; a non-finite loss since the last read stops
    the run here, before anything is saved, naming its step and the last good checkpoint.
    """
    got = acc.read()
    seconds, examples = self.clock.lap()
    if got["first_nonfinite"] >= 0:
      self.curves.close()
      raise DivergedError(self._diverged_message(got["first_nonfinite"] + 1))
    sums.loss += got["loss"]
    sums.hits += got["hits"]
    sums.n += got["n"]
    sums.seconds += seconds
    sums.timed += examples
    rate = examples / seconds if examples else None
    if got["n"]:
      loss, accuracy = got["loss"] / got["n"], got["hits"] / got["n"]
      bar.set_postfix(loss=f"{loss:.4f}", img_s=report.fmt(rate))
      self.curves.add(self.progress.step, {"train/loss": loss, "train/accuracy": accuracy,
                                           "train/images_per_s": rate,
                                           "lr": optim.rate_at(self.lr, self.progress.step)})
    return sharding.replicate(steps.StepSums.zeros(), self.mesh)

  def _diverged_message(self, step: int) -> str:
    self.manager.wait_until_finished()
    last = self.manager.latest_step()
    where = (f"the last good checkpoint is {Path(self.manager.directory) / str(last)} (step "
             f"{last}): re-running the command resumes from it (a lower --lr is allowed)"
             if last is not None else
             "no checkpoint was saved before it: start over with a lower --lr")
    return (f"the training loss became non-finite (NaN or inf) at step {step}; the run stopped "
            f"there and saved nothing after it. {where}")

  def save(self, state, score=None):
    """Lean under bn-head: trainable parameters + BatchNorm statistics only."""
    kept = (_write_back(self.model, state) if self.lean_frozen is None
            else nnx.merge_state(state.trainable, state.batch_stats))
    checkpoints.save(self.manager, self.progress.step, kept, state.opt_state, spec=self.spec,
                    config=self.cfg, progress=self.progress, score=score,
                    frozen=self.lean_frozen)

  def batches(self, split: data_splits.Split, batch_size: int, *, train: bool, epoch: int = 0,
              start_batch: int = 0) -> Iterator[dict]:
    """Device batches of task targets, split over the mesh's batch axis.

    Training: each host loads only its rows of every global batch (the order is fixed by
    (seed, epoch)). Evaluation: each host loads whole padded batches and keeps its rows.
    """
    from ichflax.data import loader
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

  def evaluate(self, state, frozen, split: data_splits.Split) -> dict:
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
    out = metrics.evaluate(self.task.name, np.concatenate(probs), np.concatenate(targets),
                           series_ids=split.series_ids)
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
  """Tests the best checkpoint (or the final one, `cfg.tested`) and writes the report."""
  cfg, manager, model = trainer.cfg, trainer.manager, trainer.model
  best = manager.best_step()
  if cfg.tested == "final" or best is None:  # the paper's code tested its last epoch's model
    best = manager.latest_step()
  _write_back(model, state)
  _, tested = checkpoints.restore_into(manager, best, model, cfg.trainable)
  _, trained, stats, frozen = steps.split(model, trainable)
  # Evaluation reads the model only: the live Adam state rides along unread.
  best_state, frozen = sharding.replicate(
      (steps.TrainState(trained, stats, state.opt_state), frozen), trainer.mesh)
  test = trainer.evaluate(best_state, frozen, splits["test"])
  # What the model knows it does not know: domain statistics, temperatures, operating points.
  calibrated = calibrate.fit_and_store(model, trainer.spec, splits,
                                       Path(manager.directory) / str(best),
                                       target_sensitivity=cfg.target_sensitivity)
  history = trainer.progress.history  # the whole run's, however many epochs `best` saw
  rep = report.build(trainer.spec, history, test, config=cfg.to_dict(),
                     extra={"best_step": best, "best_epoch": tested.epoch, "tested": cfg.tested,
                            "validation": tested.validation, "calibration": calibrated})
  paths = report.write(rep, Path(cfg.workdir).absolute() / "report")
  log.info("report: %s", paths["md"])
  return {"workdir": str(Path(cfg.workdir).absolute()),
          "checkpoint": str(Path(manager.directory) / str(best)),
          "report_json": str(paths["json"]), "report_md": str(paths["md"]),
          "metrics": {"test": test, "validation": tested.validation},
          "history": history}


def _host(x) -> np.ndarray:
  """A global array gathered to this host (all hosts' rows on a multi-host mesh)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
