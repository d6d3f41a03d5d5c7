"""One way to map a function over many items in worker processes, for data builds.

Spawned, not forked: the caller may hold JAX threads, which fork would copy mid-flight. Below a
few items the pool's start-up costs more than it saves, so those run in this process.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from typing import Callable, Sequence, TypeVar

import tqdm

T = TypeVar("T")
R = TypeVar("R")


def map_ordered(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None,
                serial_below: int = 2, chunksize: int = 1, desc: str = "",
                unit: str = "it") -> list[R]:
  """[fn(x) for x in items], in order, with a progress bar; in `workers` processes (default one
  per CPU core) unless there are fewer than `serial_below` items or one worker.

  `fn` must be a module-level function (or a partial of one) so that workers can import it.
  """
  workers = workers or os.cpu_count() or 1
  results = []
  with tqdm.tqdm(total=len(items), unit=unit, desc=desc, smoothing=0.1) as bar:
    if workers == 1 or len(items) < serial_below:
      for item in items:
        results.append(fn(item))
        bar.update()
    else:
      with concurrent.futures.ProcessPoolExecutor(
          workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(fn, items, chunksize=chunksize):
          results.append(result)
          bar.update()
  return results
