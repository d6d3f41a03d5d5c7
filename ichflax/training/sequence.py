"""`python -m ichflax.train --sequence-from RUN_DIR`: a sequence stage over a trained slice model.

The slice model is frozen: every slice of the run's dataset (same splits) is embedded once
(pooled backbone features + logits), then a small BiGRU (`ichflax.models.sequence`) learns on
random crops of the training series, each reversed with probability 1/2, and is kept at its
best validation loss (the untrained stage, which answers as the slice model, included). Its
outputs are calibrated on validation like the slice model's, and it is saved beside a
standalone copy of the slice model, so predict and the app serve the pair. Out-of-fold
embeddings (the 1st-place recipe) are not used: the training series are embedded by a model
that saw them, which makes the stage trust the slice model a little more than it should.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ichflax import checkpoint, tasks
from ichflax.checkpoint import card, layout
from ichflax.config import ConfigError, TrainConfig
from ichflax.evaluation import metrics
from ichflax.models import sequence
from ichflax.trust import calibration
from ichflax.trust.embedded import Embedded, embed, refine

log = logging.getLogger("ichflax.train")
EVAL_EVERY = 25  # steps between validation passes (each a few milliseconds per series)


def _crops(data: Embedded, rng: np.random.Generator, batch: int, window: int):
  """A batch of random crops of training series, each reversed with probability 1/2."""
  k, d = data.logits.shape[1], data.embeddings.shape[1]
  emb = np.zeros((batch, window, d), np.float32)
  logit, target = np.zeros((batch, window, k), np.float32), np.zeros((batch, window, k), np.float32)
  where = np.zeros((batch, window, 2), np.float32)
  lengths = np.zeros(batch, np.int32)
  for b, s in enumerate(rng.integers(len(data.series), size=batch)):
    members, n = data.series[s], len(data.series[s])
    start = int(rng.integers(max(n - window, 0) + 1))
    take = np.arange(start, min(start + window, n))
    place = sequence.place(n, data.spacing[s])[take]
    if rng.random() < 0.5:
      take, place = take[::-1], place[::-1]
    m = len(take)
    emb[b, :m], logit[b, :m] = data.embeddings[members[take]], data.logits[members[take]]
    target[b, :m], where[b, :m], lengths[b] = data.targets[members[take]], place, m
  return emb, logit, where, lengths, target


def _loss_fn(task: tasks.Task):
  def loss(model, emb, logit, where, lengths, target):
    slices, series = model(emb, logit, where, lengths)
    valid = (jnp.arange(emb.shape[1])[None, :] < lengths[:, None]).astype(jnp.float32)
    k = target.shape[-1]
    per_slice = task.loss(slices.reshape(-1, k), target.reshape(-1, k)).reshape(valid.shape)
    slice_loss = (per_slice * valid).sum() / valid.sum()
    series_target = (target * valid[..., None]).max(axis=1)
    return slice_loss + task.loss(series, series_target).mean()
  return loss


def _validation_loss(task: tasks.Task, refiner: sequence.Refiner, data: Embedded) -> float:
  refined, _ = refine(refiner, data)
  return float(np.mean(task.loss(jnp.asarray(refined), jnp.asarray(data.targets))))


def train_stage(cfg: TrainConfig, task: tasks.Task, train: Embedded, val: Embedded,
                spec: sequence.SeriesSpec) -> tuple[sequence.SeriesModel, dict]:
  """The stage at its best validation loss, and the curve it followed."""
  model = sequence.SeriesModel(spec, rngs=nnx.Rngs(cfg.seed))
  model.train()
  tx = optax.adamw(cfg.lr, weight_decay=1e-4)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  grad = nnx.value_and_grad(_loss_fn(task))

  @nnx.jit
  def step(model, optimizer, *batch):
    loss, grads = grad(model, *batch)
    optimizer.update(model, grads)
    return loss

  rng = np.random.default_rng(cfg.seed)

  def validate(i: int, loss: float | None) -> None:
    nonlocal best, best_state
    val_loss = _validation_loss(task, sequence.Refiner(model, spec), val)
    model.train()
    curve.append({"step": i, "train_loss": loss, "val_loss": val_loss})
    if val_loss < best:
      best, best_state = val_loss, jax.tree.map(jnp.copy, nnx.state(model))

  # Step 0 is a candidate: the untrained stage is the slice model itself, so a stage that
  # never beats it on validation is kept as the identity, never worse than its slice model.
  best, best_state, curve = np.inf, None, []
  validate(0, None)
  for i in range(1, cfg.sequence_steps + 1):
    loss = step(model, optimizer, *_crops(train, rng, cfg.resolved_batch_size, spec.window))
    if i % EVAL_EVERY == 0 or i == cfg.sequence_steps:
      validate(i, float(loss))
  nnx.update(model, best_state)
  model.eval()
  best_step = next(c["step"] for c in curve if c["val_loss"] == best)
  return model, {"curve": curve, "best_val_loss": best, "best_step": best_step}


def _side_by_side(task: tasks.Task, spec, sspec: sequence.SeriesSpec, data: Embedded,
                  refined: np.ndarray, series_logits: np.ndarray) -> dict:
  """Test metrics of the slice model and of the stage, on the same slices, calibrated each;
  and the per-series AUC of the stage's own series output."""
  act = task.activation
  before = calibration.probabilities(data.logits, act, spec.temperatures)
  after = calibration.probabilities(refined, act, sspec.temperatures)
  out = {name: metrics.evaluate(task.name, p, data.targets, series_ids=data.series_ids)
         for name, p in (("slice model", before), ("with sequence stage", after))}
  positive = np.stack([data.targets[m].max(axis=0) for m in data.series]) >= 0.5
  out["with sequence stage"]["series_output_auc"] = dict(zip(sspec.outputs, (
      metrics.roc_auc(positive[:, j], series_logits[:, j]) for j in range(positive.shape[1]))))
  out["with sequence stage"]["gain"] = metrics.paired_change(task.name, before, after,
                                                            data.targets, data.series_ids)
  return out


def run(cfg: TrainConfig) -> dict:
  """Trains the stage on a finished slice run and writes WORKDIR/checkpoint and report/."""
  from ichflax.training import loop
  source = checkpoint.resolve(cfg.sequence_from)
  model, spec = checkpoint.load_inference(source)
  task = tasks.get_task(spec.task)
  if task.activation != "sigmoid":
    raise ConfigError(f"a sequence stage refines independent labels (binary or multilabel "
                      f"runs); {cfg.sequence_from} is a {spec.task} model, whose classes compete "
                      "within positive slices only")
  slice_cfg = checkpoint.read_config(source)
  _, splits = loop.load_data(slice_cfg, task)
  start = time.perf_counter()
  data = {name: embed(model, spec, splits[name]) for name in ("train", "validation", "test")}
  embed_s = time.perf_counter() - start
  if not any(len(g) > 1 for g in data["train"].series):
    raise ConfigError(f"the training split of {slice_cfg.data or 'the phantom'} has no series "
                      "of two or more slices: a sequence stage needs whole series (a dataset "
                      "drawn by patient)")
  sspec = sequence.SeriesSpec(data["train"].embeddings.shape[1], spec.outputs, task.activation,
                              neighbour_diffs=cfg.neighbour_diffs)
  start = time.perf_counter()
  stage, fitted = train_stage(cfg, task, data["train"], data["validation"], sspec)
  train_s = time.perf_counter() - start
  refiner = sequence.Refiner(stage, sspec)
  val_refined, _ = refine(refiner, data["validation"])
  temps = calibration.keep_if_better(
      val_refined, data["validation"].targets, task.activation,
      calibration.fit_temperatures(val_refined, data["validation"].targets, task.activation))
  val_probs = calibration.probabilities(val_refined, task.activation, temps)
  sspec = dataclasses.replace(
      sspec, temperatures=temps, target_sensitivity=cfg.target_sensitivity,
      thresholds=calibration.operating_thresholds(val_probs, data["validation"].targets,
                                                  cfg.target_sensitivity))
  test_refined, test_series = refine(refiner, data["test"])
  compared = _side_by_side(task, spec, sspec, data["test"], test_refined, test_series)
  workdir = Path(cfg.workdir).absolute()
  served = workdir / layout.SERVED
  if served.exists():
    shutil.rmtree(served)
  checkpoint.export_inference(source, served, dtype=jnp.float32)
  checkpoint.write_series(served, stage, sspec)
  seconds = {"embed": round(embed_s, 1), "train": round(train_s, 1)}
  report = {"task": task.name, "data": spec.data, "slice_checkpoint": str(source),
            "context": spec.context, "series_spec": sspec.to_json(), "test": compared,
            "fit": fitted, "seconds": seconds, "config": cfg.to_dict()}
  paths = write_report(report, workdir / layout.REPORT)
  with (served / card.NAME).open("a") as f:  # the model card says what serves beside the model
    f.write("\n## Sequence stage\n\nThis checkpoint also holds a sequence stage (a BiGRU "
            "over each series' slice embeddings, `ichflax.models.sequence`) that refines the "
            "numbers above for every series of two or more slices; measured on the test split "
            f"of the same data ({spec.data_named()}):\n\n" + "\n".join(table(compared)) + "\n")
  log.info("sequence stage: %s; report %s", served, paths["md"])
  return {"workdir": str(workdir), "checkpoint": str(served), "report_md": str(paths["md"]),
          "report_json": str(paths["json"]), "metrics": {"test": compared}}


COLUMNS = (("per-slice RSNA log loss", lambda m: m.get("rsna_log_loss")),
           ("per-slice log loss", lambda m: m["log_loss"]),
           ("per-slice AUC (any)", lambda m: m["auc"]),
           ("per-series AUC (any)", lambda m: m.get("series", {}).get("auc", {}).get("any")),
           ("its series output: AUC (any)", lambda m: m.get("series_output_auc", {}).get("any")))


def table(rows: dict[str, dict]) -> list[str]:
  """The side-by-side table: one row per model, the same columns for any run."""
  out = ["| model | " + " | ".join(c for c, _ in COLUMNS) + " |",
         "|---" * (len(COLUMNS) + 1) + "|"]
  for name, m in rows.items():
    cells = [("-" if (v := f(m)) is None or v != v else f"{v:.4f}") for _, f in COLUMNS]
    out.append(f"| {name} | " + " | ".join(cells) + " |")
  return out


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
  paths["json"].write_text(json.dumps(report, indent=2, default=float) + "\n")
  n = report["test"]["slice model"]
  lines = [f"# Sequence stage on {report['data']}", "",
           f"Test split: {n['n']} slices, {n.get('series', {}).get('n', '?')} series; slice "
           f"model context {report['context']}; both calibrated on validation. Per-series AUC: a "
           "series scores its highest slice; the stage's series output scores it directly.", "",
           *table(report["test"]), "",
           f"Kept step {report['fit']['best_step']} of "
           f"{report['config']['sequence_steps']} (lowest validation loss; step 0 is the slice "
           f"model itself). Embedding {report['seconds']['embed']} s, stage training "
           f"{report['seconds']['train']} s. Research and education use only; not a medical "
           "device.", ""]
  gain = report["test"]["with sequence stage"]["gain"]
  lines[-2:-2] = ["The stage's change on these slices (95% interval, resampling whole series): "
                  + "; ".join(f"{name} {g['value']:+.4f} [{g['interval'][0]:+.4f}, "
                              f"{g['interval'][1]:+.4f}]" for name, g in gain.items()), ""]
  paths["md"].write_text("\n".join(lines))
  return paths
