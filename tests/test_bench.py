"""The benchmarks run end to end at CI size and write a well-formed table and JSON.

Speed is never asserted (CI machines differ and are shared); what is checked is that every
path a GPU run depends on works: the project's step, the loader from a TFDS dataset on disk,
the torchvision baseline when torch imports, and the machine record every figure must carry.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import common

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_out(tmp_path_factory):
  """One tiny phantom dataset shared by both smoke runs (same stored size: built once)."""
  return tmp_path_factory.mktemp("bench_data")


def run_bench(script: str, out: Path, *extra: str) -> tuple[str, dict]:
  """bench/SCRIPT --smoke on the CPU, its exit checked: (stdout, its JSON record)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  cmd = [sys.executable, str(ROOT / "bench" / script), "--smoke", "--json", str(out), *extra]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout, json.loads(out.read_text())


def check_record(result: dict, script: str) -> None:
  machine = result["machine"]
  for field in ("date_utc", "command", "cpu_model", "cpu_count", "versions"):
    assert machine[field], field
  assert script in machine["command"]
  assert machine["versions"]["jax"] and machine["versions"]["python"]
  for row in result["rows"]:
    for field in ("images_per_s", "step_ms"):
      value = row[field]
      assert isinstance(value, float) and math.isfinite(value) and value > 0, (field, row)
    assert row["batch_size"] >= 1 and row["image_size"] >= 1 and row["repeats"] >= 1


def table_rows(stdout: str) -> list[str]:
  lines = [line for line in stdout.splitlines() if line.startswith("| ")]
  assert lines and lines[0].startswith("| framework | impl | mode |"), stdout
  return lines[1:]


def test_train_throughput_smoke(tmp_path, data_out):
  stdout, result = run_bench("train_throughput.py", tmp_path / "train.json",
                             "--data-out", str(data_out))
  check_record(result, "train_throughput.py")
  rows = result["rows"]
  modes = {(r["framework"], r["mode"]) for r in rows}
  assert {("jax", "compute"), ("jax", "end-to-end"), ("jax", "end-to-end, old loop")} <= modes
  jax_compute = next(r for r in rows if r["framework"] == "jax" and r["mode"] == "compute")
  assert jax_compute["gflops_per_step"] > 0 and jax_compute["compile_s"] > 0
  if common.torch_available():
    assert any(r["framework"] == "torch" and r["impl"] == "eager" for r in rows)
    assert result["reference"] == "eager"
  assert len(table_rows(stdout)) == len(rows)
  key = "bn-head 32px b2 fp32"
  assert result["ratios"][key]["end-to-end / compute"] > 0


def test_loader_throughput_smoke(tmp_path, data_out):
  stdout, result = run_bench("loader_throughput.py", tmp_path / "loader.json",
                             "--data-out", str(data_out))
  check_record(result, "loader_throughput.py")
  impls = [r["impl"] for r in result["rows"]]
  assert any(i.startswith("loader") for i in impls)
  assert {"TFDS source (ichflax's stored format)", "TFDS source (PNG, the format before 1.1.0)",
          "array_record PNG", "array_record raw uint8"} <= set(impls)
  assert len(table_rows(stdout)) == len(result["rows"])


def test_table_ratios_and_json_nan(tmp_path):
  rows = [common.Row("train", "torch", "eager", "compute", "bn-head", 32, 2, "fp32",
                     images_per_s=10.0, step_ms=200.0),
          common.Row("train", "jax", "ichflax step", "compute", "bn-head", 32, 2, "fp32",
                     images_per_s=25.0, step_ms=80.0)]
  assert common.ratios(rows, "eager") == [1.0, 2.5]
  table = common.format_table(rows, "eager")
  assert table.splitlines()[-1].endswith("| 2.50 |  |")
  common.write_json(tmp_path / "r.json", {"x": float("nan")}, rows)
  data = json.loads((tmp_path / "r.json").read_text())  # NaN written as null: strict JSON
  assert data["machine"]["x"] is None and data["rows"][0]["compile_s"] is None


def test_time_steps_reports_compile_apart():
  calls = []
  timing = common.time_steps(lambda: calls.append(1), lambda _: None, warmup=2, repeats=3,
                             steps_per_repeat=4)
  assert len(calls) == 1 + 2 + 3 * 4 and len(timing.times_s) == 3
  assert timing.median_s >= 0


def test_step_profile_census_on_a_tiny_bf16_program():
  import jax
  import jax.numpy as jnp

  from bench import step_profile

  def f(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.astype(jnp.float32).mean((0, 1, 2))  # a BatchNorm-style statistic in f32

  lowered = jax.jit(f).lower(jnp.ones((2, 8, 8, 3), jnp.bfloat16),
                             jnp.ones((3, 3, 3, 4), jnp.bfloat16))
  compiled = lowered.compile()
  census = step_profile.hlo_census(lowered, compiled)
  assert census["requested_convolutions"] == {"bf16": 1}
  assert census["requested_bn_stat_reduces"] == {"f32": 1}
  assert step_profile.costs(compiled)["gflops"] > 0


def test_op_profile_names_each_convolution_of_a_tiny_train_program():
  """--ops labels forward, input- and weight-gradient convolutions, and times them from a trace."""
  import jax
  import jax.numpy as jnp

  from bench import step_profile

  def loss(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.sin(y))

  args = (jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4)))
  compiled = jax.jit(jax.grad(loss, (0, 1))).lower(*args).compile()
  kinds = step_profile.hlo_op_kinds(compiled.as_text())
  named = {k.removesuffix(" (fused)") for k in kinds.values()}
  assert {"conv forward", "conv input-gradient", "conv weight-gradient"} <= named, named
  profile = step_profile.trace_ops(lambda: compiled(*args), jax.block_until_ready, 1, kinds)
  assert profile["step_ms"] > 0 and all(ms >= 0 for ms in profile["kinds"].values())
  assert any(k.startswith("conv") for k in profile["kinds"]), profile["kinds"]

def test_cpu_latency_smoke(tmp_path):
  """The serving latency benchmark: every case timed, the machine recorded, the table printed."""
  stdout, result = run_bench("cpu_latency.py", tmp_path / "latency.json")
  check_record(result, "cpu_latency.py")
  cases = {(row["framework"], row["what"]) for row in result["latency"]}
  assert ("jax", "DICOM -> probabilities + Grad-CAM + box") in cases, cases
  for row in result["latency"]:
    for field in ("p50_ms", "p90_ms", "min_ms"):
      assert math.isfinite(row[field]) and row[field] > 0, (field, row)
    assert row["p90_ms"] >= row["p50_ms"] >= row["min_ms"], row
  assert "| framework | impl | what | p50 ms |" in stdout


def test_series_throughput_smoke(tmp_path):
  """The series benchmark: every input format decoded to the same images, the table printed."""
  stdout, result = run_bench("series_throughput.py", tmp_path / "series.json")
  check_record(result, "series_throughput.py")
  formats = {row["format"] for row in result["series"]}
  assert {"DICOM uncompressed", "DICOM JPEG-LS lossless", "NIfTI .nii.gz"} <= formats, formats
  for row in result["series"]:
    for field in ("decode_s", "model_s", "end_to_end_slices_per_s"):
      assert math.isfinite(row[field]) and row[field] > 0, (field, row)
  assert "| input | MB | decode s |" in stdout
