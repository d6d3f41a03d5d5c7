"""A process-wide budget for the slice views the page keeps so a visitor can slide through a
series: without one, each upload's views stay for 15 minutes per visitor, unbounded in sum
(~1.4 MB a slice: ten visitors at the 1,000-slice limit held ~14 GB, more than a 16 GB Space).

Uploads are held oldest first; when a new one would pass the budget, the oldest uploads' views
are released (their pixels dropped in place) and their page says to upload again to browse.
The newest upload is always kept, whatever its size. A session that expires (gr.State's TTL)
frees its share as soon as its views are collected.

Freeing is not enough on glibc: an analysis allocates and frees hundreds of MB in ~1 MB pieces
(decoded slices, model batches) from several threads' heaps, and glibc keeps the freed pages.
Measured in one process (shipped model, 200-slice 512 px uploads, 300 MiB budget): RSS rose
1,331 -> 2,117 MB over six uploads although the held views stayed at 300 MiB; with
`return_memory()` after each upload it stayed at 1,141-1,151 MB over eight.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import os
import threading
import weakref

BUDGET_ENV = "ICHFLAX_VIEW_BUDGET_MB"
# A CPU-basic Space has 16 GB: the model, the app and a burst of analyses need ~4 GB of it.
DEFAULT_BUDGET_MB = 6000


def budget_bytes() -> int:
  """The budget from ICHFLAX_VIEW_BUDGET_MB (MiB), default 6000."""
  value = os.environ.get(BUDGET_ENV, "")
  try:
    mb = float(value) if value else DEFAULT_BUDGET_MB
  except ValueError:
    raise ValueError(f"{BUDGET_ENV}={value!r} is not a number of MiB (e.g. 6000)") from None
  if mb <= 0:
    raise ValueError(f"{BUDGET_ENV} must be positive, got {value}")
  return int(mb * 2**20)


def _malloc_trim():
  """glibc's malloc_trim, or None where the C library has none (macOS, musl, Windows)."""
  name = ctypes.util.find_library("c")
  try:
    return ctypes.CDLL(name).malloc_trim if name else None
  except (OSError, AttributeError):
    return None


_TRIM = _malloc_trim()


def return_memory() -> None:
  """Hands the C heap's free pages back to the system, so RSS follows what is really held."""
  if _TRIM is not None:
    _TRIM(0)


class Budget:
  """Holds uploads' views (lists of objects with `nbytes` and `release()`), oldest out first."""

  def __init__(self, limit: int | None = None):
    self.limit = budget_bytes() if limit is None else limit
    self._held: collections.OrderedDict[int, tuple[list, int]] = collections.OrderedDict()
    self._lock = threading.Lock()
    self._next = 0

  @property
  def held_bytes(self) -> int:
    with self._lock:
      return sum(size for _, size in self._held.values())

  def hold(self, views: list) -> None:
    """Registers one upload's views; releases the oldest ones while the sum is over budget."""
    if not views:
      return
    size = sum(v.nbytes for v in views)
    refs = [weakref.ref(v) for v in views]
    with self._lock:
      key, self._next = self._next, self._next + 1
      self._held[key] = (refs, size)
      # The session may expire first: its views are collected, and its share freed with them.
      weakref.finalize(views[0], self._forget, key)
      total = sum(s for _, s in self._held.values())
      while total > self.limit and len(self._held) > 1:
        _, (old, old_size) = self._held.popitem(last=False)
        for ref in old:
          view = ref()
          if view is not None:
            view.release()
        total -= old_size

  def _forget(self, key: int) -> None:
    with self._lock:
      self._held.pop(key, None)
