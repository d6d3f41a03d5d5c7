"""A zip's members read safely into files in memory (`items.Item`): the CLI and the app share it.

A zip is read member by member without extracting, so path traversal cannot write anywhere, and
size checks on what is actually decompressed (not what the headers declare) stop a zip bomb.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath

from ichflax.data import filetypes
from ichflax.data.items import Item, Problem

MAX_MEMBERS = 1000  # files in one zip: a thin-slice head CT series is 150-600 slices
MAX_UNZIPPED_MB = 1024  # 1,000 uncompressed 512x512 slices are 500 MB
MAX_ZIP_RATIO = 100  # CT slices compress 2-4x; 100x is a bomb, not a scan


def read_zip(name: str, data: bytes, *, max_members: int = MAX_MEMBERS,
             max_unzipped_mb: int = MAX_UNZIPPED_MB) -> tuple[list[Item], list[Problem]]:
  """Members of a zip of slices, refusing bombs, nested archives and unsafe paths."""
  try:
    archive = zipfile.ZipFile(io.BytesIO(data))
    infos = [i for i in archive.infolist() if not i.is_dir()]
  except (zipfile.BadZipFile, ValueError, OSError):
    return [], [Problem(name, "damaged zip archive (its index cannot be read); zip the slices "
                        "again")]
  if len(infos) > max_members:
    return [], [Problem(name, f"{len(infos)} files in the zip, more than the {max_members}-file "
                        "limit; zip one series at a time")]
  budget = max_unzipped_mb * 2**20
  declared = sum(i.file_size for i in infos)
  if declared > budget:
    return [], [Problem(name, f"unzips to {declared / 2**20:.0f} MB, over the {max_unzipped_mb} "
                        "MB limit; zip one series at a time")]
  items, problems = [], []
  for info in infos:
    member = PurePosixPath(info.filename)
    label = f"{name}/{info.filename}"
    if member.is_absolute() or ".." in member.parts or "\\" in info.filename:
      problems.append(Problem(label, "unsafe path in the zip (absolute or with '..'), skipped"))
      continue
    if member.name.startswith(".") or "__MACOSX" in member.parts:
      continue  # Finder metadata, not slices
    if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
      return [], [Problem(name, f"compression ratio over {MAX_ZIP_RATIO}:1 (a zip bomb?); refused")]
    try:
      with archive.open(info) as fh:
        content = fh.read(min(budget, info.file_size) + 1)  # the header may lie about sizes
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError):
      problems.append(Problem(label, "cannot be unzipped (damaged, encrypted or an unsupported "
                              "compression method); zip it again without a password"))
      continue
    if len(content) > info.file_size or len(content) > budget:
      return [], [Problem(name, "a member unzips to more than it declares (a zip bomb?); refused")]
    budget -= len(content)
    if filetypes.sniff(content) == filetypes.ZIP:
      problems.append(Problem(label, "a zip inside the zip; upload the inner zip itself, skipped"))
      continue
    items.append(Item(label, content))
  return items, problems
