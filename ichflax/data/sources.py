"""Whatever a user hands over -> slices grouped into series: the one reader of the CLI and the app.

Files, folders (walked recursively, as PACS exports nest them), zips, single-slice and
multi-frame DICOM, NIfTI volumes and PNG/JPG pictures. `read` checks each file and notes where
its slices sit; pixels are decoded one batch at a time (`Series.batches`), so a 1,000-slice
series is never in memory at once. Nothing a file holds escapes as an exception: a file or a
slice that cannot be read becomes a `Problem` naming it and saying what to do, and the rest go on.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ichflax.data import archives, dicom, filetypes, image, inputs, nifti
from ichflax.data.items import InputError, Item, Problem, SliceGeometry

log = logging.getLogger("ichflax.sources")
Input = str | os.PathLike | Item
# Files in a folder that are never slices: a DICOMDIR is read as the index it is (and skipped).
_HIDDEN = (".", "__MACOSX")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One slice to be: its name, where it sits in its series, and how to decode it."""

  name: str
  geometry: SliceGeometry | None
  load: Callable[[], inputs.Slice]


@dataclasses.dataclass
class Series:
  """Slices of one series in position order; `summarise`: a study summary makes sense for it.

  Loose files given one by one form one batch with no summary; a folder, a zip or a volume
  holds series (by SeriesInstanceUID), each summarised.
  """

  source: str
  entries: list[Entry]
  summarise: bool

  def batches(self, size: int) -> Iterator[tuple[list[inputs.Slice], list[Problem]]]:
    """(slices, problems) for each run of `size` entries, decoded only when reached."""
    for start in range(0, len(self.entries), size):
      slices, problems = [], []
      for entry in self.entries[start:start + size]:
        try:
          slices.append(entry.load())
        except InputError as e:
          problems.append(Problem(e.source, e.reason))
        except Exception as e:  # noqa: BLE001  (one odd file must never stop a batch)
          problems.append(unexpected(entry.name, e))
      yield slices, problems


@dataclasses.dataclass
class Reading:
  """Every series found, and one problem per file (or slice limit) that gave nothing."""

  series: list[Series]
  problems: list[Problem]

  @property
  def slices(self) -> int:
    return sum(len(s.entries) for s in self.series)


def order_key(name: str, geometry: SliceGeometry | None) -> tuple:
  """Series order: ImagePositionPatient z (slices without one last), instance number, name."""
  g = geometry
  return (g is None or g.position_z is None, (g and g.position_z) or 0.0,
          (g and g.instance_number) or 0, name)


def unexpected(name: str, e: Exception) -> Problem:
  """A file that broke a reader in a way no check foresaw: one row, logged by type only."""
  log.warning("unexpected %s while reading a file; reported as a row, reading goes on",
              type(e).__name__)
  return Problem(name, f"could not be read ({type(e).__name__} in ichflax's reader); skipped. If "
                 "it opens in a DICOM viewer, please report it")


def read(sources: Iterable[Input], *, windows: Sequence[image.Window] = image.THREE_WINDOWS,
         stored_size: int = 256, max_slices: int | None = None) -> Reading:
  """Series and problems from paths (files, folders, zips) and in-memory items (uploads)."""
  reader = _Reader(windows, stored_size)
  for source in sources:
    if isinstance(source, Item):
      reader.add(source.name, source.data, None)
    elif Path(source).is_dir():
      root = Path(source)
      for path in sorted(root.rglob("*")):
        if path.is_file() and not any(p.startswith(_HIDDEN) for p in path.relative_to(root).parts):
          reader.add(str(path), path, str(root))
    else:
      reader.add(os.fspath(source), Path(source), None)
  return reader.finish(max_slices)


class _Reader:
  """Gathers entries into series as files are checked."""

  def __init__(self, windows: Sequence[image.Window], stored_size: int):
    self.options = {"windows": tuple(windows), "stored_size": stored_size}
    self.groups: dict[tuple, Series] = {}
    self.problems: list[Problem] = []

  def add(self, name: str, source: Path | bytes, container: str | None) -> None:
    """One file (a path, or bytes in memory): its slices, or one problem.

    A path's bytes are read again when its batch comes rather than kept, so a folder of 10,000
    slices holds only their positions until then.
    """
    try:
      if isinstance(source, Path):
        data = _read_file(source, name)
        again = functools.partial(_read_file, source, name)
      else:
        data, again = source, lambda: source
      self._add(name, data, again, container)
    except InputError as e:
      self.problems.append(Problem(e.source, e.reason))
    except Exception as e:  # noqa: BLE001  (one odd file must never stop the others)
      self.problems.append(unexpected(name, e))

  def _add(self, name: str, data: bytes, again: Callable[[], bytes],
           container: str | None) -> None:
    if not data:
      raise InputError(name, "empty file (0 bytes); give a DICOM, NIfTI, PNG or JPG file")
    kind = filetypes.sniff(data)
    if kind == filetypes.ZIP:
      members, problems = archives.read_zip(name, data)
      self.problems += problems
      for member in members:
        self.add(member.name, member.data, container or name)
    elif kind in filetypes.PICTURES:
      inputs.check_picture(data, name)  # refused now if its header says so; decoded once, later

      def picture() -> inputs.Slice:
        return inputs.picture_slice(again(), name, **self.options)

      self._put(container, f"file:{name}", Entry(name, None, picture))
    elif kind == filetypes.DICOM:
      self._dicom(name, data, again, container)
    elif kind in (filetypes.NIFTI, filetypes.GZIP):
      self._volume(nifti.Volume(data, name), name, container, f"nifti:{name}")
    else:
      what = {filetypes.GIF: " (a GIF image)"}.get(kind, "")
      raise InputError(name, f"not a DICOM, NIfTI, PNG or JPG file{what}; give CT slices as "
                       "exported by the scanner or PACS (.dcm), a .nii/.nii.gz volume, PNG/JPG "
                       "images, or a zip or folder of them")

  def _dicom(self, name: str, data: bytes, again: Callable[[], bytes],
             container: str | None) -> None:
    dicom_file = dicom.open_image(_named(data, name))
    if dicom_file.frames > 1:
      self._volume(dicom_file, name, container, dicom_file.geometries[0].series_instance_uid)
      return
    geometry = dicom_file.geometries[0]

    def load() -> inputs.Slice:
      return inputs.from_hu(dicom.open_image(_named(again(), name)).hu(0), name,
                            geometry=geometry, **self.options)

    self._put(container, geometry.series_instance_uid, Entry(name, geometry, load))

  def _volume(self, volume: dicom.ImageFile | nifti.Volume, name: str, container: str | None,
              series: str) -> None:
    """A multi-frame DICOM or a NIfTI volume: a series in one file, summarised as one."""
    for index, geometry in enumerate(volume.geometries):
      def load(index=index, geometry=geometry) -> inputs.Slice:
        return inputs.from_hu(volume.hu(index), name, geometry=geometry, frame=index + 1,
                              **self.options)
      self._put(container or name, series, Entry(name, geometry, load))

  def _put(self, container: str | None, series: str, entry: Entry) -> None:
    key = ("", "") if container is None else (container, series)
    if key not in self.groups:
      self.groups[key] = Series(container or "", [], summarise=container is not None)
    self.groups[key].entries.append(entry)

  def finish(self, max_slices: int | None) -> Reading:
    out = []
    for series in self.groups.values():
      if series.summarise:  # loose files keep the order they were given in
        series.entries.sort(key=lambda e: order_key(e.name, e.geometry))
      out.append(series)
    total = sum(len(s.entries) for s in out)
    if max_slices is not None and total > max_slices:
      self.problems.append(Problem("upload", f"{total} slices found; only the first "
                                   f"{max_slices} were analysed: upload one series at a time"))
      left = max_slices
      for series in out:
        series.entries = series.entries[:left]
        left -= len(series.entries)
      out = [s for s in out if s.entries]
    return Reading(out, self.problems)


def _read_file(path: Path, name: str) -> bytes:
  try:
    data = path.read_bytes()
  except OSError as e:
    raise InputError(name, f"cannot read ({e.strerror or e}); check the path") from None
  return data


def _named(data: bytes, name: str) -> io.BytesIO:
  """Bytes as a file object whose name is the file's, so DicomError messages name it."""
  buffer = io.BytesIO(data)
  buffer.name = name
  return buffer
