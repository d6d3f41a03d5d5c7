"""Uploads, read safely into memory and then deleted.

Why in memory: an uploaded DICOM carries patient tags (name, ID, dates, institution). Reading
each upload once into bytes and deleting it (and the folder Gradio made for it) at once means no
copy outlives the request, and nothing downstream ever sees a path a patient could be traced by.
Zips, volumes and series are opened by `ichflax.data.sources`, the reader the CLI uses too.

Why a ledger: Gradio stores an upload under a folder named by its content hash, so visitors who
send the same file at once share one path. Each upload the server answers is counted on its path
(`CountUploads`), each request releases its paths once read, and only the last release deletes.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ichflax.data.items import Item, Problem

# A zipped 600-slice 512x512 series is 150-300 MB; a NIfTI volume of it 100-300 MB.
MAX_UPLOAD_MB = 512
MAX_SLICES = 1000  # a thin-slice head CT series is 150-600 slices
UPLOAD_ROUTE = "/gradio_api/upload"


class Ledger:
  """How many answered uploads still wait to be read, per path under `root`.

  A path is deleted (with its per-upload folder) when its last user releases it. Deleting waits
  while an upload's body is fully received but not yet counted: Gradio may be moving that
  upload onto the very path about to go. That window is milliseconds (hashing and a rename),
  whatever the client's speed, since it opens only once the last byte has arrived.
  """

  def __init__(self, root: str | os.PathLike):
    self.root = Path(root).resolve()
    self._lock = threading.Lock()
    self._users: collections.Counter[Path] = collections.Counter()
    self._landing = 0  # uploads received but not yet counted
    self._unused: set[Path] = set()  # released while an upload was landing; deleted after

  def claim(self, paths: Iterable[str]) -> None:
    """One more user for each path (a path listed twice gets two)."""
    with self._lock:
      self._users.update(Path(p).resolve() for p in paths)

  def release(self, paths: Iterable[str]) -> None:
    """One user fewer for each path; a path nobody needs any more is deleted."""
    with self._lock:
      for p in paths:
        path = Path(p).resolve()
        self._users[path] -= 1
        if self._users[path] <= 0:
          del self._users[path]
          self._unused.add(path)
      self._delete_unused()

  def hold(self) -> None:
    """An upload has fully arrived: deletions wait until it is counted (`let_go`)."""
    with self._lock:
      self._landing += 1

  def let_go(self) -> None:
    with self._lock:
      self._landing -= 1
      self._delete_unused()

  def _delete_unused(self) -> None:
    """Under the lock, so no upload can land between the decision and the deletion."""
    if self._landing:
      return
    for path in self._unused - set(self._users):
      _remove(path, self.root)
    self._unused.clear()


class CountUploads:
  """ASGI middleware: counts every path Gradio's upload route answers in the ledger.

  The count is made before the client sees the answer, so no request can release a path first.
  Pass it to FastAPI as `Middleware(CountUploads, ledger=...)` (gradio's `app_kwargs`).
  """

  def __init__(self, app, ledger: Ledger):
    self.app = app
    self.ledger = ledger

  async def __call__(self, scope, receive, send) -> None:
    if (scope["type"] != "http" or scope["method"] != "POST"
        or not scope["path"].endswith(UPLOAD_ROUTE)):
      await self.app(scope, receive, send)
      return
    landing = False

    async def received():
      nonlocal landing
      message = await receive()
      if message["type"] == "http.request" and not message.get("more_body") and not landing:
        landing = True
        self.ledger.hold()
      return message

    start, body = {}, []

    async def answer(message):
      if message["type"] == "http.response.start":
        start.update(message)  # held back until the paths are counted
        return
      if message["type"] != "http.response.body":
        await send(message)
        return
      body.append(message.get("body", b""))
      if message.get("more_body"):
        return
      content = b"".join(body)
      if start["status"] == 200:
        self.ledger.claim(_paths(content))
      await send(start)
      await send({"type": "http.response.body", "body": content})

    try:
      await self.app(scope, received, answer)
    finally:
      if landing:
        self.ledger.let_go()


def _paths(content: bytes) -> list[str]:
  """The upload route's answer: a JSON list of the stored paths."""
  try:
    paths = json.loads(content)
  except ValueError:
    return []
  return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def _remove(path: Path, root: Path) -> None:
  """Deletes an upload and the per-upload folder Gradio made for it, never outside `root`."""
  try:
    if root not in path.parents:
      return
    path.unlink(missing_ok=True)
    if path.parent != root and not any(path.parent.iterdir()):
      path.parent.rmdir()
  except OSError:
    pass  # a fresh upload of other content under the same name shares the folder: it goes later


def read_uploads(paths: Iterable[str], ledger: Ledger) -> tuple[list[Item], list[Problem]]:
  """(items, problems): every upload read into memory and released (so deleted).

  Zips stay whole here: `ichflax.data.sources` opens them, as it does for the CLI.
  """
  items, problems = [], []
  paths = list(paths)  # read twice: once here, once to release
  try:
    for p in paths:
      path = Path(p)
      name = path.name
      try:
        size = path.stat().st_size
        if size > MAX_UPLOAD_MB * 2**20:
          problems.append(Problem(name, f"{size / 2**20:.0f} MB is over the {MAX_UPLOAD_MB} MB "
                                  "upload limit; upload fewer slices at a time"))
          continue
        items.append(Item(name, path.read_bytes()))
      except OSError as e:
        problems.append(Problem(name, f"cannot read the upload ({e.strerror or e}); upload it "
                                "again"))
  finally:
    ledger.release(paths)
  return items, problems
