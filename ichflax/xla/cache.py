"""XLA's persistent compile cache: one policy for every entry point (train, predict, app).

Building and compiling ResNet50 costs tens of seconds on a CPU; with the cache a resumed run, a
second CLI call or an app restart skips it. Process-wide, so only entry points call `enable`.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV = "ICHFLAX_JAX_CACHE"  # a folder, or "" to turn the cache off
DEFAULT = Path.home() / ".cache" / "ichflax" / "jax"


def enable(path: str | os.PathLike | None = None) -> None:
  """Caches every compiled program under `path`, else $ICHFLAX_JAX_CACHE, else ~/.cache.

  When JAX_COMPILATION_CACHE_DIR is set, JAX has already read its own settings: leave them.
  """
  if path is None:
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
      return
    path = os.environ.get(ENV, str(DEFAULT))
  if not str(path):
    return
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
