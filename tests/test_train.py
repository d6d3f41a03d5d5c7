"""Training end to end on a tiny phantom at 32 px: kill -9 and resume, run API, sweep, errors."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _synth_data
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ichflax import checkpoint, config, models, tasks
from ichflax.checkpoint import layout
from ichflax.data import builders
from ichflax.progress import Progress
from ichflax.training import checkpoints, steps, sweep
from ichflax.training import cli as train_cli
from ichflax.training import loop as train
from ichflax.xla import cache as xla_cache

ROOT = Path(__file__).resolve().parents[1]
# XLA's compile cache, shared by this process and the subprocesses it starts.
XLA_CACHE = ROOT / "tmp" / "xla_cache"
SUBPROCESS_ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
                  "JAX_COMPILATION_CACHE_DIR": str(XLA_CACHE),
                  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  xla_cache.enable(XLA_CACHE)
  out = tmp_path_factory.mktemp("data")
  return _synth_data.build(out, num=80, size=32)


def _cfg(dataset, workdir, **changes):
  return config.TrainConfig(**{
      "task": "binary", "data": dataset, "trainable": "all", "image_size": 32, "epochs": 2,
      "batch_size": 8, "checkpoint_every": 2, "workdir": str(workdir), "progress_bar": False,
      **changes})


def _cli(cfg):
  return [sys.executable, "-m", "ichflax.train", "--task", cfg.task, "--data", cfg.data,
          "--trainable", cfg.trainable, "--image-size", str(cfg.image_size), "--epochs",
          str(cfg.epochs), "--batch-size", str(cfg.batch_size), "--checkpoint-every",
          str(cfg.checkpoint_every), "--workdir", cfg.workdir, "--no-progress-bar"]


def _committed_steps(workdir: Path) -> list[int]:
  root = workdir / "checkpoints"
  return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.exists() else []


def test_resume_after_kill_loses_no_epoch(dataset, tmp_path):
  cfg = _cfg(dataset, tmp_path / "run")
  first = subprocess.Popen(_cli(cfg), env=SUBPROCESS_ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 600
  while not _committed_steps(tmp_path / "run") and first.poll() is None:
    assert time.monotonic() < deadline, "no checkpoint appeared"
    time.sleep(0.2)
  first.send_signal(signal.SIGKILL)
  assert first.wait() == -signal.SIGKILL, "the run finished before it could be killed"
  killed_at = _committed_steps(tmp_path / "run")[-1]

  second = subprocess.run(_cli(cfg), env=SUBPROCESS_ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False)
  assert second.returncode == 0, second.stderr[-3000:]
  assert f"resumed from step {killed_at}" in second.stderr
  assert "# ichflax binary report" in second.stdout  # the report is printed at the end
  rep = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
  assert [h["epoch"] for h in rep["history"]] == [1, 2]
  steps_per_epoch = rep["history"][0]["step"]
  assert killed_at > 0 and rep["history"][1]["step"] == 2 * steps_per_epoch
  assert _committed_steps(tmp_path / "run")[-1] == 2 * steps_per_epoch


def _spy_steps(mp: pytest.MonkeyPatch) -> list[tuple[steps.StepSpec, models.Classifier]]:
  """What each run hands `steps.make_steps` (its step spec and live model), recorded on the way
  to the real function, which still compiles and trains."""
  calls = []
  real = steps.make_steps

  def spy(model, trainable, tx, spec):
    calls.append((spec, model))
    return real(model, trainable, tx, spec)
  mp.setattr(steps, "make_steps", spy)
  return calls


def _computes_in(spec: steps.StepSpec, model: models.Classifier) -> set[jnp.dtype]:
  """The dtypes a run's steps compute in: the input the step spec casts to, every backbone
  layer's, and the backbone output's (traced for its shape and dtype only)."""
  layers = {jnp.dtype(m.dtype) for _, m in nnx.iter_graph(model.backbone)
            if isinstance(m, (nnx.Conv, nnx.BatchNorm))}
  model.eval()  # the run is over: a train-mode trace would update BatchNorm statistics
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), spec.dtype)
  return layers | {jnp.dtype(spec.dtype), jax.eval_shape(model.backbone, x).dtype}


def test_sweep_ranks_runs_and_checkpoints_serve(dataset, tmp_path, caplog, monkeypatch):
  cfg = _cfg(dataset, tmp_path / "sweep", epochs=1, checkpoint_every=0)
  compiled_for = _spy_steps(monkeypatch)
  with caplog.at_level("WARNING", logger="ichflax.train"):
    result = sweep.sweep(cfg, "seed=0,1")
  assert "RANDOM weights" in caplog.text
  # --dtype auto (the default) on a CPU: float32 throughout, for every point.
  assert [_computes_in(*call) for call in compiled_for] == [{jnp.dtype(jnp.float32)}] * 2
  lines = result["table"].splitlines()
  assert lines[0].startswith("| rank | seed | val_accuracy") and len(lines) == 4
  ranked = [float(line.split("|")[3]) for line in lines[2:]]
  assert ranked == sorted(ranked, reverse=True)
  assert sorted(ranked) == pytest.approx(sorted(r["val_accuracy"] for r in result["rows"]),
                                         abs=1e-3)
  written = Path(result["path"]).read_text().splitlines()
  assert [line.split("|")[1].strip() for line in written if line.startswith("| ")][1:] == ["1", "2"]

  run_dir = Path(result["rows"][0]["workdir"])
  best = checkpoint.resolve(run_dir)
  model, spec = checkpoint.load_inference(best)
  assert (spec.task, spec.image_size, spec.stored_size) == ("binary", 32, 32)
  assert spec.data == "anatomy-based synthetic phantom"
  assert checkpoint.read_progress(best).history[0].epoch == 1
  assert checkpoint.read_config(best) == cfg.replace(seed=result["rows"][0]["params"]["seed"],
                                                     workdir=str(run_dir))
  x = np.zeros((1, 32, 32, 3), np.float32)
  assert model(x).shape == (1, 1)
  report = json.loads((run_dir / "report" / "report.json").read_text())
  assert report["test"]["n"] > 0 and report["data"] == "anatomy-based synthetic phantom"
  assert (run_dir / "report" / "loss.png").exists()


@pytest.fixture(scope="module")
def torchvision_bf16(dataset, tmp_path_factory):
  """One short CLI run (8 examples a split, one step) with `--variant torchvision --dtype
  bfloat16`: its workdir, and what its steps were compiled for."""
  cfg = _cfg(dataset, tmp_path_factory.mktemp("torchvision_bf16"), epochs=1, checkpoint_every=0)
  with pytest.MonkeyPatch.context() as mp:
    compiled_for = _spy_steps(mp)
    assert train_cli.main([*_cli(cfg)[3:], "--limit", "8", "--no-tensorboard",
                       "--variant", "torchvision", "--dtype", "bfloat16"]) == 0
  return Path(cfg.workdir), compiled_for


def test_variant_flag_trains_and_saves_that_backbone(torchvision_bf16):
  """--variant torchvision is ResNet50 v1.5 as torchvision defines it: no convolution biases,
  BatchNorm2d's eps 1e-5 and momentum 0.1 (nnx: 0.9), the stride in each stage's first 3x3
  convolution. So is the model that trained, and the one its checkpoint loads."""
  workdir, compiled_for = torchvision_bf16
  [(spec, trained)] = compiled_for
  best = checkpoint.resolve(workdir)
  assert spec.variant == checkpoint.read_spec(best).variant == "torchvision"
  assert checkpoint.read_config(best).variant == "torchvision"
  for model in (trained, checkpoint.load_inference(best)[0]):
    layers = [m for _, m in nnx.iter_graph(model.backbone)]
    convs = [m for m in layers if isinstance(m, nnx.Conv)]
    norms = [m for m in layers if isinstance(m, nnx.BatchNorm)]
    assert len(convs) == len(norms) == 53  # 1 stem + 16 blocks x 3 + 4 projections
    assert all(c.bias is None for c in convs)
    assert all(n.epsilon == 1e-5 for n in norms)
    firsts = [stage[0] for stage in model.backbone.stages[1:]]
    assert [(b.conv1.strides, b.conv2.strides) for b in firsts] == [(1, 2)] * 3
  assert all(n.momentum == 0.9 for _, n in nnx.iter_graph(trained.backbone)
             if isinstance(n, nnx.BatchNorm))


def test_dtype_flag_computes_in_bfloat16_on_cpu(torchvision_bf16):
  """--dtype bfloat16 wins over auto's float32 on a CPU: the step casts its input to bf16 and every
  backbone layer computes in it; parameters stay float32 (auto: test_sweep_ranks_runs_...)."""
  workdir, compiled_for = torchvision_bf16
  [(spec, trained)] = compiled_for
  assert _computes_in(spec, trained) == {jnp.dtype(jnp.bfloat16)}
  assert {p.dtype for p in jax.tree.leaves(nnx.state(trained, nnx.Param))} == {
      jnp.dtype(jnp.float32)}
  assert checkpoint.read_config(checkpoint.resolve(workdir)).dtype == "bfloat16"


@pytest.mark.parametrize("args,message", [
    (["--image-size", "16"], "image size 16"),
    (["--data", "/no/such/folder"], "does not exist"),
    (["--dropout", "1.5"], "dropout"),
    (["--sweep", "depth=3,4"], "bad sweep item"),
])
def test_bad_configs_fail_before_any_work(args, message, tmp_path, capsys):
  assert train_cli.main(args + ["--workdir", str(tmp_path / "w")]) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_unknown_task_is_refused(capsys):
  with pytest.raises(SystemExit):
    train_cli.parse_args(["--task", "segmentation"])
  assert "invalid choice" in capsys.readouterr().err


def test_refuses_to_resume_a_different_run(dataset, tmp_path):
  manager = checkpoints.open_manager(tmp_path, keep=1)
  cfg = _cfg(dataset, tmp_path)
  spec = train.model_spec(cfg, train.build_model(cfg, np.float32), {"size": 32, "channels": 3})
  checkpoints.save(manager, 1, {"w": np.ones(2)}, {"w": np.ones(2)}, spec=spec, config=cfg,
                  progress=Progress())
  manager.wait_until_finished()
  with pytest.raises(config.ConfigError, match="different dropout"):
    train.run(cfg.replace(dropout=0.1))
  same_data = cfg.replace(data=cfg.data.rstrip("/") + "/")  # the path as a shell completes it
  train.check_resumable(manager, same_data)
  with pytest.raises(config.ConfigError, match="different data"):
    train.check_resumable(manager, cfg.replace(data=cfg.data + "_other"))


def test_defaults_and_grid_parsing():
  cfg, grid = train_cli.parse_args([])
  assert (cfg.task, cfg.trainable, cfg.image_size, cfg.limit) == ("binary", "all", 96, None)
  assert cfg.workdir == "runs/cpu-demo-binary" and grid is None
  assert cfg.zero_init_residual
  assert not train_cli.parse_args(["--no-zero-init-residual"])[0].zero_init_residual
  paper, _ = train_cli.parse_args(["--preset", "paper", "--task", "subtype"])
  assert (paper.image_size, paper.trainable, paper.resolved_batch_size) == (224, "bn-head", 8)
  assert paper.workdir == "runs/paper-subtype"
  rsna, _ = train_cli.parse_args(["--preset", "rsna"])  # the preset names its task
  assert (rsna.task, rsna.workdir) == ("multilabel", "runs/rsna-multilabel")
  flags, _ = train_cli.parse_args(["--no-augment", "--augment-rotation", "20", "--keep", "3",
                               "--lr", "0.01", "--no-progress-bar"])
  assert not flags.augment.enabled and flags.augment.rotation == 20.0 and flags.keep == 3
  assert flags.lr == 0.01 and not flags.progress_bar and flags.trainable == "all"  # cpu-demo's
  assert sweep.parse_grid("dropout=0.25,0.3 batch_size=8,16") == [
      {"dropout": 0.25, "batch_size": 8}, {"dropout": 0.25, "batch_size": 16},
      {"dropout": 0.3, "batch_size": 8}, {"dropout": 0.3, "batch_size": 16}]
  with pytest.raises(config.ConfigError, match="must be int"):
    sweep.parse_grid("batch_size=eight")
  # Fields whose default is None are typed too, not called as NoneType.
  assert sweep.parse_grid("bn_momentum=0.9,0.99") == [{"bn_momentum": 0.9}, {"bn_momentum": 0.99}]
  with pytest.raises(config.ConfigError, match="bad sweep item"):
    sweep.parse_grid("progress_bar=False")  # not a tuning knob


def test_limit_draws_across_the_split(dataset, tmp_path):
  cfg = _cfg(dataset, tmp_path, limit=12)
  _, splits = train.load_data(cfg, tasks.get_task("binary"))
  meta = builders.read_meta(dataset, "train")
  picked = splits["train"].indices
  studies = {meta["study_id"][i] for i in picked}
  labels = set(meta["labels"][picked, tasks.ANY].tolist())
  # Not a prefix: the split is stored study by study, so a prefix holds two studies.
  assert len(picked) == 12 and len(studies) > 2 and labels == {0, 1}
  _, again = train.load_data(cfg, tasks.get_task("binary"))
  np.testing.assert_array_equal(again["train"].indices, splits["train"].indices)  # seeded


def test_random_init_starts_residual_blocks_as_shortcuts():
  def last_bn_scale(**changes):
    model = train.build_model(config.TrainConfig(**changes), np.float32)
    return np.asarray(model.backbone.layer4[2].bn3.scale[...])
  assert not np.any(last_bn_scale())
  assert np.all(last_bn_scale(zero_init_residual=False) == 1.0)


def _events(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
  """Scalars of every TensorBoard event file under tb_dir, by tag: a plain TFRecord read (length,
  crc, Event proto, crc), so nothing but tensorboardX's own protos is needed."""
  from tensorboardX.proto import event_pb2
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(tb_dir.glob("events.out.tfevents.*")):
    data, at = path.read_bytes(), 0
    while at < len(data):
      length = int.from_bytes(data[at:at + 8], "little")
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def _weights(path: Path) -> list[np.ndarray]:
  model, _ = checkpoint.load_inference(path)
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, layout.MODEL_STATE))]


def _size(path: Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.slow  # three short paper-recipe runs (~1 min each on 2 cores); one compile, cached
def test_lean_paper_checkpoints_resume_to_the_same_weights_and_curves(dataset, tmp_path):
  """Paper recipe: each save holds only trainable parameters + BatchNorm statistics (+ Adam);
  the frozen convolutions are written once. A run resumed from such a checkpoint ends with the
  weights of an uninterrupted run, an exported checkpoint stands alone, and TensorBoard has the
  curves the report has."""
  whole = _cfg(dataset, tmp_path / "whole", trainable="bn-head", checkpoint_every=0, log_every=2)
  rep = train.run(whole)
  split = _cfg(dataset, tmp_path / "split", trainable="bn-head", checkpoint_every=0, log_every=2)
  train.run(split.replace(epochs=1))
  train.run(split)
  steps = _committed_steps(tmp_path / "split")
  assert steps == _committed_steps(tmp_path / "whole") and len(steps) == 2
  step_dir = tmp_path / "split" / "checkpoints" / str(steps[-1])
  want = _weights(tmp_path / "whole" / "checkpoints" / str(steps[-1]))
  for a, b in zip(want, _weights(step_dir)):
    np.testing.assert_array_equal(a, b)

  assert checkpoint.is_lean(step_dir) and not (step_dir / checkpoint.STATE).exists()
  frozen = _size(tmp_path / "split" / layout.FROZEN)
  assert _size(step_dir / checkpoint.TRAINED) * 20 < frozen  # ResNet50: ~0.4 MB vs ~90 MB
  exported = checkpoint.export_inference(step_dir, tmp_path / "export", dtype=np.float32)
  assert (exported / checkpoint.STATE).is_dir()
  (tmp_path / "split" / layout.FROZEN).rename(tmp_path / "frozen-moved")
  with pytest.raises(checkpoint.CheckpointError, match="frozen parameters"):
    checkpoint.load_inference(step_dir)
  for a, b in zip(want, _weights(exported)):  # stands alone
    np.testing.assert_array_equal(a, b)

  curves = _events(tmp_path / "whole" / "tb")
  history = rep["history"]
  assert [s for s, _ in curves["val/loss"]] == [h.step for h in history]
  np.testing.assert_allclose([v for _, v in curves["val/loss"]],
                             [h.val_loss for h in history], rtol=1e-6)
  np.testing.assert_allclose([v for _, v in curves["epoch/train_loss"]],
                             [h.train_loss for h in history], rtol=1e-6)
  per_epoch = history[0].step
  # Read every second step and at each epoch's end.
  assert [s for s, _ in curves["train/loss"]] == sorted(
      {*range(2, 2 * per_epoch + 1, 2), per_epoch, 2 * per_epoch})
  assert {"train/accuracy", "val/accuracy", "val/auc", "lr", "epoch/images_per_s"} <= set(curves)
  assert curves["lr"][0][1] == pytest.approx(whole.lr)


@pytest.mark.slow  # three short full-recipe runs (~1 min each on 2 cores), one compile, cached
def test_divergence_stops_at_its_step_and_resumes_from_the_last_good_checkpoint(
    dataset, tmp_path, capsys, caplog):
  """A non-finite loss is caught where the loop next reads the device (here the epoch end,
  several steps later), yet the message names the exact step; the exit code is non-zero and
  re-running (with a sane learning rate) resumes from the checkpoint it names."""
  args = ["--task", "binary", "--data", dataset, "--trainable", "all", "--image-size", "32",
          "--batch-size", "8", "--checkpoint-every", "0", "--log-every", "0", "--workdir",
          str(tmp_path), "--no-progress-bar", "--no-tensorboard"]
  assert train_cli.main(args + ["--epochs", "1"]) == 0
  good = _committed_steps(tmp_path)[-1]
  capsys.readouterr()
  # Step good+1 still sees sane weights; its Adam update of ~1e30 makes step good+2 overflow.
  assert train_cli.main(args + ["--epochs", "2", "--lr", "1e30"]) == 3
  err = capsys.readouterr().err
  assert f"non-finite (NaN or inf) at step {good + 2};" in err
  assert f"last good checkpoint is {tmp_path / 'checkpoints' / str(good)} (step {good})" in err
  assert _committed_steps(tmp_path)[-1] == good  # nothing saved after it
  with caplog.at_level("INFO", logger="ichflax.train"):
    assert train_cli.main(args + ["--epochs", "2"]) == 0
  assert f"resumed from step {good}" in caplog.text
  assert _committed_steps(tmp_path)[-1] == 2 * good


def _head_kernel(model) -> np.ndarray:
  return np.asarray(model.head.out.kernel[...])


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
  """Two epochs in one go: what a resumed run must reproduce exactly."""
  cfg = _cfg(dataset, tmp_path_factory.mktemp("uninterrupted"), checkpoint_every=2)
  return cfg, train.run(cfg)


# Slow (each about 1-2 min on 2 shared cores): two and one more real runs beside the
# uninterrupted one; the weights themselves are the claim, so no shortcut stands in for a run.
@pytest.mark.slow
def test_resumed_run_has_the_weights_of_an_uninterrupted_one(uninterrupted, tmp_path):
  cfg, whole = uninterrupted
  resumed_cfg = cfg.replace(workdir=str(tmp_path / "resumed"))
  train.run(resumed_cfg.replace(epochs=1))  # stops after epoch 1, as a killed run would
  resumed = train.run(resumed_cfg)
  last = _committed_steps(Path(whole["workdir"]))[-1]
  assert _committed_steps(tmp_path / "resumed")[-1] == last
  ours = _weights(tmp_path / "resumed" / "checkpoints" / str(last))
  theirs = _weights(Path(whole["workdir"]) / "checkpoints" / str(last))
  assert len(ours) == len(theirs) > 300
  for a, b in zip(ours, theirs):
    np.testing.assert_array_equal(a, b)
  untimed = lambda history: [dataclasses.replace(r, images_per_s=None) for r in history]
  assert untimed(resumed["history"]) == untimed(whole["history"])
  assert resumed["metrics"]["test"] == whole["metrics"]["test"]


@pytest.mark.slow
def test_lr_keep_and_no_augment_flags_take_effect(uninterrupted, tmp_path):
  """Against the same run with the defaults: each flag must change what it configures."""
  cfg, whole = uninterrupted
  workdir = tmp_path / "flags"
  assert train_cli.main([*_cli(cfg.replace(workdir=str(workdir)))[3:], "--lr", "0.01", "--keep",
                     "1", "--no-augment"]) == 0
  steps = _committed_steps(workdir)
  best = checkpoint.resolve(workdir)
  saved = checkpoint.read_config(best)
  assert (saved.lr, saved.keep, saved.augment.enabled) == (0.01, 1, False)
  # --keep 1: the latest checkpoint and the best one remain. With the default 2, the mid-epoch
  # checkpoint before the last (never the best: only epoch ends are scored) would remain too.
  assert set(steps) == {steps[-1], int(best.name)} and len(steps) <= 2
  # --lr 0.01: Adam moves each weight about lr per step, so ten times the default's distance.
  init = _head_kernel(train.build_model(cfg, np.float32))
  fast = _head_kernel(checkpoint.load_inference(workdir / "checkpoints" / str(steps[-1]))[0])
  slow_step = _committed_steps(Path(whole["workdir"]))[-1]
  slow = _head_kernel(checkpoint.load_inference(
      Path(whole["workdir"]) / "checkpoints" / str(slow_step))[0])
  assert np.abs(fast - init).mean() > 3 * np.abs(slow - init).mean()


def _params_by_kind(model) -> dict[str, dict[str, np.ndarray]]:
  """The backbone's convolution weights and BatchNorm scale/bias, and the head's parameters."""
  out: dict[str, dict[str, np.ndarray]] = {"conv": {}, "bn": {}, "head": {}}
  for path, module in nnx.iter_graph(model.backbone):
    kind = {nnx.Conv: "conv", nnx.BatchNorm: "bn"}.get(type(module))
    for name in ("kernel", "bias", "scale"):
      if kind and getattr(module, name, None) is not None:
        out[kind]["/".join(map(str, path)) + "/" + name] = np.asarray(getattr(module, name)[...])
  for path, value in nnx.to_flat_state(nnx.state(model.head, nnx.Param)):
    out["head"]["/".join(map(str, path))] = np.asarray(value[...])
  return out


# Slow (about 1-2 min on 2 shared cores): a Keras ResNet50 is built and saved, converted, then
# trained; the only test of the paper recipe from converted weights as a user runs it.
@pytest.mark.slow
def test_bn_head_from_converted_weights_end_to_end(dataset, tmp_path):
  """Random Keras weights -> `weights convert` CLI -> the paper recipe with --weights: every
  convolution kernel in the saved checkpoint is the converted one, bit for bit; BatchNorm and
  the head trained."""
  import _weights_refs as refs

  from ichflax import weights
  from ichflax.weights.__main__ import main as weights_main
  h5 = tmp_path / "resnet50_notop.h5"
  refs.keras_h5(h5, input_shape=(32, 32, 3))
  converted = tmp_path / "backbone"
  assert weights_main(["convert", str(h5), "--out", str(converted)]) == 0
  backbone = _params_by_kind(models.Classifier(weights.load_backbone(converted), 1, 0.4,
                                               rngs=nnx.Rngs(0)))
  cfg = _cfg(dataset, tmp_path / "run", trainable="bn-head", weights=str(converted), epochs=1,
             checkpoint_every=0)
  head = _params_by_kind(train.build_model(cfg, np.float32))["head"]
  result = train.run(cfg)
  saved = _params_by_kind(checkpoint.load_inference(result["checkpoint"])[0])
  assert len(saved["conv"]) > 100 and saved["conv"].keys() == backbone["conv"].keys()
  for path, kernel in saved["conv"].items():
    np.testing.assert_array_equal(kernel, backbone["conv"][path], err_msg=path)
  assert saved["bn"].keys() == backbone["bn"].keys()
  moved = [not np.array_equal(v, backbone["bn"][k]) for k, v in saved["bn"].items()]
  assert all(moved), f"{moved.count(False)} BatchNorm parameters did not train"
  assert all(not np.array_equal(v, head[k]) for k, v in saved["head"].items())
