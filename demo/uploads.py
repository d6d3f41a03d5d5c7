"""Uploads, read safely into memory and then deleted.

Why in memory: an uploaded DICOM carries patient tags (name, ID, dates, institution). Reading
each upload once into bytes and deleting it (and the folder Gradio made for it) at once means no
copy outlives the request, and nothing downstream ever sees a path a patient could be traced by.
A zip is read member by member without extracting, so path traversal cannot write anywhere, and
size checks on what is actually decompressed stop a zip bomb.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from ichflax.data import filetypes

MAX_UPLOAD_MB = 64  # a 512x512 slice is ~0.5 MB; a zipped series of 100 slices fits easily
MAX_SLICES = 200  # one head CT series is 30-60 slices at 5 mm
MAX_UNZIPPED_MB = 512
MAX_ZIP_RATIO = 100  # CT slices compress 2-4x; 100x is a bomb, not a scan


@dataclasses.dataclass(frozen=True)
class Item:
  """One uploaded file (or zip member), held in memory only."""

  name: str
  data: bytes


def _remove(path: Path, root: Path) -> None:
  """Deletes an upload and the per-upload folder Gradio made for it, never outside `root`."""
  try:
    path = path.resolve()
    if root not in path.parents:
      return
    path.unlink(missing_ok=True)
    if path.parent != root and not any(path.parent.iterdir()):
      path.parent.rmdir()
  except OSError:
    pass  # another request may share the folder (same content hash); it removes it later


def read_uploads(paths: Iterable[str], upload_root: str | os.PathLike) -> tuple[list[Item], list[str]]:
  """(items, problems): every file read into memory and deleted; zips opened member by member.

  `problems` holds one message per file or member that was skipped, naming it and saying why.
  """
  root = Path(upload_root).resolve()
  items, problems = [], []
  paths = list(paths or [])
  try:
    for p in paths:
      path = Path(p)
      name = path.name
      try:
        size = path.stat().st_size
        if size > MAX_UPLOAD_MB * 2**20:
          problems.append(f"{name}: {size / 2**20:.0f} MB is over the {MAX_UPLOAD_MB} MB upload "
                          "limit; upload fewer slices at a time")
          continue
        data = path.read_bytes()
      except OSError as e:
        problems.append(f"{name}: cannot read the upload ({e.strerror or e}); upload it again")
        continue
      more, bad = items_from_bytes(name, data)
      items.extend(more)
      problems.extend(bad)
  finally:
    for p in paths:
      _remove(Path(p), root)
  if len(items) > MAX_SLICES:
    problems.append(f"{len(items)} files uploaded; only the first {MAX_SLICES} were analysed "
                    "(one series at a time)")
    items = items[:MAX_SLICES]
  return items, problems


def items_from_bytes(name: str, data: bytes) -> tuple[list[Item], list[str]]:
  """One file, or the members of a zip, as items (and problems, for a zip)."""
  if filetypes.sniff(data) == filetypes.ZIP:
    return _read_zip(name, data)
  return [Item(name, data)], []


def _read_zip(name: str, data: bytes) -> tuple[list[Item], list[str]]:
  """Members of a zip of slices, refusing bombs, nested archives and unsafe paths."""
  try:
    archive = zipfile.ZipFile(io.BytesIO(data))
    infos = [i for i in archive.infolist() if not i.is_dir()]
  except (zipfile.BadZipFile, ValueError, OSError) as e:
    return [], [f"{name}: damaged zip archive ({e}); zip the slices again"]
  if len(infos) > MAX_SLICES:
    return [], [f"{name}: {len(infos)} files in the zip, more than the {MAX_SLICES}-slice limit; "
                "zip one series at a time"]
  declared = sum(i.file_size for i in infos)
  if declared > MAX_UNZIPPED_MB * 2**20:
    return [], [f"{name}: unzips to {declared / 2**20:.0f} MB, over the {MAX_UNZIPPED_MB} MB "
                "limit; zip one series at a time"]
  items, problems, budget = [], [], MAX_UNZIPPED_MB * 2**20
  for info in infos:
    member = PurePosixPath(info.filename)
    label = f"{name}/{info.filename}"
    if member.is_absolute() or ".." in member.parts or "\\" in info.filename:
      problems.append(f"{label}: unsafe path in the zip, skipped")
      continue
    if member.name.startswith(".") or "__MACOSX" in member.parts:
      continue  # Finder metadata, not slices
    if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
      return [], [f"{name}: compression ratio over {MAX_ZIP_RATIO}:1 (a zip bomb?); refused"]
    try:
      with archive.open(info) as fh:
        content = fh.read(min(budget, info.file_size) + 1)  # the header may lie about sizes
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as e:
      problems.append(f"{label}: cannot unzip ({e}), skipped")
      continue
    if len(content) > info.file_size or len(content) > budget:
      return [], [f"{name}: a member unzips to more than it declares (a zip bomb?); refused"]
    budget -= len(content)
    if filetypes.sniff(content) == filetypes.ZIP:
      problems.append(f"{label}: a zip inside the zip; upload the inner zip itself, skipped")
      continue
    items.append(Item(member.name, content))
  return items, problems
