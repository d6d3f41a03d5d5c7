"""Data parallelism: one mesh axis over every device, parameters replicated, batches split.

The same code runs on one CPU, eight GPUs or a TPU pod: XLA (GSPMD) inserts the gradient
all-reduce and computes BatchNorm statistics over the global batch, so a sharded step computes
what one device would.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"
# Set by the launchers of multi-host jobs (Slurm, Open MPI, TPU pod, jax's own coordinator).
_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                  "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed(force: bool = False) -> bool:
  """Joins a multi-host job when asked (`--distributed`) or when a launcher's env says so."""
  env = {k: os.environ[k] for k in _MULTIHOST_ENV if k in os.environ}
  single = env.get("SLURM_NTASKS") == "1" or env.get("OMPI_COMM_WORLD_SIZE") == "1"
  if not force and (not env or single):
    return False
  jax.distributed.initialize()
  return True


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every host)."""
  return Mesh(np.array(jax.devices() if devices is None else devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(AXIS))


def replicate(tree, mesh: Mesh):
  """Places every array of `tree` whole on every device (parameters, optimiser state)."""
  return jax.device_put(tree, replicated(mesh))


def host_slice(global_batch_size: int) -> slice:
  """The rows of a global batch this host loads and feeds (all of them on a single host)."""
  per_host = global_batch_size // jax.process_count()
  start = jax.process_index() * per_host
  return slice(start, start + per_host)


def shard_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's rows of a batch -> global arrays split along the batch axis of the mesh."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
