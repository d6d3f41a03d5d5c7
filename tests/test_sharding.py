"""Data parallelism: a step sharded over 8 CPU devices computes what one device computes.

The comparison runs in float64: at random init with 2 examples per device, BatchNorm's
backward pass in float32 amplifies summation-order rounding to a few percent of the gradient,
which would hide a real sharding bug behind a loose tolerance. Parameters stay float32, so
some 1e-5 of rounding remains; a sharding bug (e.g. per-device BatchNorm statistics) moves the
loss by far more than that.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from ichflax.training import sharding

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh process: the host device count is fixed when JAX starts.
SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np, optax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from flax import nnx
    from ichflax import models
    from ichflax.training import sharding, steps
    from ichflax.config import AugmentConfig

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    batches = [{"image": rng.integers(0, 255, (16, 48, 48, 1), dtype=np.uint8),
                "targets": rng.integers(0, 2, (16, 1)).astype(np.float32),
                "mask": np.ones(16, bool)} for _ in range(2)]

    def train(devices):
      mesh = sharding.make_mesh(devices)
      model = models.build_classifier("binary", "keras", 0.4, rngs=nnx.Rngs(0), dtype=jnp.float64)
      # SGD: the update is -lr * gradient, so equal params mean equal gradients.
      compiled, state, frozen = steps.make_steps(
          model, models.trainable_filter("all"), optax.sgd(0.05),
          steps.StepSpec("binary", 32, "keras", AugmentConfig(), jnp.float64))
      state, frozen = sharding.replicate((state, frozen), mesh)
      losses = []
      for i, batch in enumerate(batches):
        batch = sharding.shard_batch(batch, mesh)
        assert len(batch["image"].sharding.device_set) == len(devices)
        state, sums = compiled.train(state, frozen, batch, jax.random.key(0), i,
                                     steps.StepSums.zeros())
        losses.append(sums.read()["loss"] / 16)
      leaves = jax.tree.leaves((state.trainable, state.batch_stats))
      return losses, leaves

    one = train(jax.devices()[:1])
    eight = train(jax.devices())
    np.savez(sys.argv[1], loss1=one[0], loss8=eight[0],
             **{f"a{i}": x for i, x in enumerate(one[1])},
             **{f"b{i}": x for i, x in enumerate(eight[1])})
""")


# How a batch lies on 8 devices: split along the batch axis, each device its own rows. A batch
# copied whole to every device would also make 8 devices compute what 1 does, so the test
# above cannot see that; this one can.
LAYOUT_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import PartitionSpec
    from ichflax.training import sharding

    mesh = sharding.make_mesh()
    assert mesh.size == 8, jax.devices()
    local = {"image": np.arange(16 * 3 * 3).reshape(16, 3, 3, 1).astype(np.uint8),
             "mask": np.arange(16) % 3 > 0}
    batch = sharding.shard_batch(local, mesh)
    for name, array in batch.items():
      assert array.sharding.spec == PartitionSpec(sharding.AXIS), (name, array.sharding.spec)
      shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start)
      assert [s.device for s in shards] == list(mesh.devices), name
      for i, shard in enumerate(shards):
        assert shard.data.shape[0] == 2, (name, shard.data.shape)
        np.testing.assert_array_equal(np.asarray(shard.data), local[name][2 * i:2 * i + 2])
      np.testing.assert_array_equal(np.asarray(array), local[name])
    print("ok")
""")


def _run_on_eight_devices(script: str, *args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  proc = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_batch_is_split_over_devices_not_copied():
  assert _run_on_eight_devices(LAYOUT_SCRIPT).stdout.strip() == "ok"


def test_eight_devices_match_one(tmp_path):
  out = tmp_path / "result.npz"
  _run_on_eight_devices(SCRIPT, str(out))
  r = np.load(out)
  np.testing.assert_allclose(r["loss8"], r["loss1"], rtol=1e-4)
  n = sum(k.startswith("a") for k in r.files)
  assert n > 300  # every parameter and BatchNorm statistic of ResNet50 + head
  for i in range(n):
    np.testing.assert_allclose(r[f"b{i}"], r[f"a{i}"], rtol=1e-4, atol=1e-5, err_msg=f"leaf {i}")


def test_single_host_defaults():
  assert sharding.host_slice(16) == slice(0, 16)
  assert sharding.maybe_initialize_distributed() is False or "SLURM_NTASKS" in os.environ
  mesh = sharding.make_mesh()
  batch = sharding.shard_batch({"x": np.arange(mesh.size * 2)}, mesh)
  np.testing.assert_array_equal(batch["x"], np.arange(mesh.size * 2))
