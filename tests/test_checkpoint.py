"""Checkpoints: last N + best kept, exact round trip, inference loading, bf16 export, migration."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from ichflax import checkpoint, config, models, tasks
from ichflax.checkpoint import cli as checkpoint_cli
from ichflax.checkpoint import layout
from ichflax.jsonable import jsonable
from ichflax.progress import EpochRecord, EpochSums, Progress
from ichflax.spec import ModelSpec
from ichflax.training import checkpoints

SPEC = ModelSpec(task="multilabel", class_names=tasks.LABELS, variant="keras", image_size=64,
                 stored_size=64, windows=((40, 80), (80, 200), (600, 2800)), dropout=0.3,
                 trainable="bn-head", data="synthetic phantom")
CONFIG = config.TrainConfig(task="multilabel", image_size=64, dropout=0.3)
PROGRESS = Progress(step=3, epoch=1, batch=1, epoch_sums=EpochSums(loss=1.5, n=4),
                    history=[EpochRecord(1, 2, 0.5, 0.75, 0.6, 0.7, float("nan"))])


def _save(manager, step, state, opt_state, score=None, **items):
  checkpoints.save(manager, step, state, opt_state, score=score,
                  **{"spec": SPEC, "config": CONFIG, "progress": PROGRESS, **items})


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
  """A real Classifier with non-default BatchNorm statistics, saved once at step 3."""
  model = models.build_classifier("multilabel", "keras", 0.3, rngs=nnx.Rngs(1))
  stats = nnx.state(model, nnx.BatchStat)
  nnx.update(model, jax.tree.map(lambda x: x + 0.5, stats))
  params = nnx.state(model, models.trainable_filter("bn-head"))
  opt_state = optax.adam(1e-3).init(params)
  workdir = tmp_path_factory.mktemp("ckpt")
  manager = checkpoints.open_manager(workdir, keep=2)
  _save(manager, 3, checkpoint.model_state(model), opt_state, score=0.5)
  manager.wait_until_finished()
  model.eval()
  x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), minval=-100, maxval=100)
  return workdir, model, opt_state, x


def test_restore_round_trip(trained_like):
  workdir, model, opt_state, _ = trained_like
  manager = checkpoints.open_manager(workdir, keep=2)
  target = checkpoint.model_state(models.build_classifier("multilabel", "keras", 0.3,
                                                          rngs=nnx.Rngs(2)))
  state, opt, progress = checkpoints.restore(manager, 3, target, opt_state)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(checkpoint.model_state(model))):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(opt), jax.tree.leaves(opt_state)):
    np.testing.assert_array_equal(got, want)
  # NaN is stored as null (JSON has no NaN) and held as None from the start, so what comes
  # back equals what was saved: a resumed run's history compares equal to an unbroken one's.
  assert PROGRESS.history[0].val_auc is None and progress == PROGRESS
  assert checkpoint.read_spec(workdir) == SPEC and checkpoint.read_config(workdir) == CONFIG
  # Evaluation restores the model alone; the optimiser moments are not read.
  model_only, no_opt, _ = checkpoints.restore(manager, 3, target)
  assert no_opt is None
  for got, want in zip(jax.tree.leaves(model_only), jax.tree.leaves(state)):
    np.testing.assert_array_equal(got, want)


def test_load_inference_matches_and_is_in_eval_mode(trained_like):
  workdir, model, _, x = trained_like
  step_dir = workdir / "checkpoints" / "3"
  assert checkpoint.resolve(workdir) == checkpoint.resolve(workdir / "checkpoints") == step_dir
  loaded, spec = checkpoint.load_inference(workdir)
  assert spec == SPEC
  np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(loaded(x), loaded(x))  # no dropout at inference


def test_export_bf16_is_small_and_close(trained_like, tmp_path):
  workdir, model, _, x = trained_like
  dst = checkpoint.export_inference(workdir, tmp_path / "demo")
  loaded, spec = checkpoint.load_inference(dst)
  assert spec == SPEC.replace(stored_dtype="bfloat16")
  assert checkpoint.read_config(dst) == CONFIG and checkpoint.read_progress(dst).step == 3
  assert jax.tree.leaves(nnx.state(loaded, nnx.Param))[0].dtype == jnp.float32
  want = np.asarray(model(x))
  np.testing.assert_allclose(loaded(x), want, atol=0.05 * np.abs(want).max() + 1e-3)
  size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
  full = sum(f.stat().st_size for f in (workdir / "checkpoints" / "3" / "state").rglob("*")
             if f.is_file())
  assert size < 0.7 * full
  with pytest.raises(checkpoint.CheckpointError, match="already exists"):
    checkpoint.export_inference(workdir, dst)


def _stored_dtypes(item_dir) -> dict[str, str]:
  """The dtype on disk of every array of an orbax item, by path (its metadata, no array read)."""
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.metadata(item_dir).item_metadata
  return {jax.tree_util.keystr(path): str(meta.dtype)
          for path, meta in jax.tree_util.tree_leaves_with_path(tree)}


def test_export_cli_predicts_as_its_source_in_the_dtype_asked(trained_like, tmp_path, capsys):
  """`python -m ichflax.checkpoint export SRC DST`: --dtype float32 stores every parameter as it
  was, so the export predicts exactly what its source does; the default stores them in bf16,
  BatchNorm statistics in float32 (how close that predicts: test_export_bf16_is_small_and_close)."""
  workdir, _, _, x = trained_like
  source = checkpoint.load_inference(workdir)[0](x)
  f32, bf16 = tmp_path / "f32", tmp_path / "bf16"
  assert checkpoint_cli.main(["export", str(workdir), str(f32), "--dtype", "float32"]) == 0
  assert checkpoint_cli.main(["export", str(workdir / "checkpoints" / "3"), str(bf16)]) == 0
  assert capsys.readouterr().out.split() == [str(f32), str(bf16)]
  stored = {d: _stored_dtypes(d / checkpoint.STATE) for d in (f32, bf16)}
  assert set(stored[f32].values()) == {"float32"} and stored[f32].keys() == stored[bf16].keys()
  by_kind = {k: {v for path, v in stored[bf16].items() if path.endswith(f"['{k}']['value']")}
             for k in ("kernel", "mean", "var")}
  assert by_kind == {"kernel": {"bfloat16"}, "mean": {"float32"}, "var": {"float32"}}
  assert checkpoint.read_spec(bf16) == SPEC.replace(stored_dtype="bfloat16")
  exported, spec = checkpoint.load_inference(f32)
  assert spec == SPEC.replace(stored_dtype="float32")
  np.testing.assert_array_equal(exported(x), source)


def test_keeps_last_n_and_the_best(tmp_path):
  manager = checkpoints.open_manager(tmp_path, keep=2)
  state = {"w": jnp.ones(3)}
  for step, score in [(1, 0.9), (2, None), (3, 0.2), (4, None), (5, 0.1), (6, None)]:
    _save(manager, step, state, state, score)
  manager.wait_until_finished()
  assert manager.all_steps() == [1, 5, 6]  # best epoch (1) + the last two
  assert checkpoint.resolve(tmp_path) == tmp_path / "checkpoints" / "1"


def test_no_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
    checkpoint.resolve(tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
    checkpoint.load_inference(tmp_path / "missing")


def test_jsonable():
  out = jsonable({"a": (1, np.float32(2.5)), "b": np.arange(2), "c": math.inf,
                             1: config.AugmentConfig(enabled=False)})
  assert out == {"a": [1, 2.5], "b": [0, 1], "c": None,
                 "1": {**config.AugmentConfig(enabled=False).__dict__}}


def test_export_carries_the_reports_test_metrics(trained_like, tmp_path):
  """The step the report tested exports with its test figures; the demo's card shows them."""
  workdir = trained_like[0]
  (workdir / "report").mkdir(exist_ok=True)
  (workdir / "report" / "report.json").write_text(json.dumps(
      {"best_step": 3, "test": {"accuracy": 0.875, "n": 8}}))
  try:
    dst = checkpoint.export_inference(workdir, tmp_path / "demo")
  finally:
    (workdir / "report" / "report.json").unlink()
  assert checkpoint.read_progress(dst).test == {"accuracy": 0.875, "n": 8}


def test_migrates_the_older_single_meta_layout(trained_like, tmp_path):
  """A checkpoint saved with one untyped `meta` item is refused with the command that converts
  it; after `migrate` it loads to the same spec, config, progress and outputs."""
  import shutil
  workdir, _, _, x = trained_like
  old = tmp_path / "old"
  shutil.copytree(workdir / "checkpoints" / "3" / "state", old / "state")
  legacy = {**SPEC.to_json(), "recipe": "seed", "config": CONFIG.to_dict(), "seed": 0,
            **{k: v for k, v in PROGRESS.to_json().items() if k != "validation"},
            "metrics": {"validation": {"accuracy": 0.5}}}
  layout.write_json(old, "meta", legacy)
  with pytest.raises(checkpoint.CheckpointError, match="ichflax.checkpoint migrate"):
    checkpoint.load_inference(old)
  assert checkpoint_cli.main(["migrate", str(old)]) == 0
  loaded, spec = checkpoint.load_inference(old)
  assert spec == SPEC and not (old / "meta").exists()
  assert checkpoint.read_config(old) == CONFIG
  progress = checkpoint.read_progress(old)
  assert progress.step == 3 and progress.validation == {"accuracy": 0.5}
  np.testing.assert_array_equal(loaded(x), checkpoint.load_inference(workdir)[0](x))


@pytest.mark.parametrize("task,metric,best", [
    ("binary", "accuracy", max), ("subtype", "accuracy", max),
    ("multilabel", "rsna_log_loss", min)])
def test_best_checkpoint_is_the_best_validation_epoch_for_every_task(tmp_path, task, metric,
                                                                     best):
  """The manager keeps as best the epoch a reader would pick: highest accuracy, or lowest RSNA
  log loss for multilabel (a run that kept its highest-loss epoch as best used to pass)."""
  from ichflax.training import loop
  manager = checkpoints.open_manager(tmp_path, keep=1)
  state = {"w": jnp.ones(3)}
  epochs = {1: 0.30, 2: 0.12, 3: 0.45, 4: 0.20}  # the metric's value per epoch (= step)
  for step, value in epochs.items():
    val = {"accuracy": 0.5, "loss": 0.3, "rsna_log_loss": 0.3, metric: value}
    _save(manager, step, state, state, loop.score_of(task, val))
  manager.wait_until_finished()
  assert manager.best_step() == best(epochs, key=epochs.get)
