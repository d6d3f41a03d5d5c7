"""Zip guards (`ichflax.data.archives`, shared by CLI and app), server-free, on real archives;
the app's upload cut and Finder metadata.

The zips are real archives; where a guard needs a header that lies (declared sizes), the bytes
of a real archive are edited the way a crafted file would be.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest

from demo import uploads
from ichflax.data import archives

DICOM_HEAD = b"\0" * 128 + b"DICM"  # enough for the signature table: a DICOM-looking member


def zip_bytes(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", method) as zf:
    for name, data in members:
      zf.writestr(name, data)
  return buf.getvalue()


def declare(data: bytes, size: int, crc: int | None = None) -> bytes:
  """The archive with its (single) member's uncompressed size, and CRC, rewritten in both the
  local header (offsets 14 and 22) and the central directory (offsets 16 and 24)."""
  out = bytearray(data)
  for signature, crc_at, size_at in ((b"PK\x03\x04", 14, 22), (b"PK\x01\x02", 16, 24)):
    i = out.find(signature)
    struct.pack_into("<I", out, i + size_at, size)
    if crc is not None:
      struct.pack_into("<I", out, i + crc_at, crc)
  return bytes(out)


def test_a_plain_zip_gives_its_members():
  items, problems = archives.read_zip("s.zip", zip_bytes(
      [("series/a.dcm", DICOM_HEAD + b"a"), ("series/b.dcm", DICOM_HEAD + b"b")]))
  assert [(i.name, i.data) for i in items] == [("s.zip/series/a.dcm", DICOM_HEAD + b"a"),
                                               ("s.zip/series/b.dcm", DICOM_HEAD + b"b")]
  assert not problems


def test_per_zip_slice_limit():
  members = [(f"{i}.dcm", DICOM_HEAD) for i in range(archives.MAX_MEMBERS + 1)]
  items, problems = archives.read_zip("big.zip", zip_bytes(members, zipfile.ZIP_STORED))
  assert not items
  assert list(map(str, problems)) == [
      f"big.zip: {archives.MAX_MEMBERS + 1} files in the zip, more than the "
      f"{archives.MAX_MEMBERS}-file limit; zip one series at a time"]


def test_declared_size_limit_refuses_before_reading():
  too_big = archives.MAX_UNZIPPED_MB * 2**20 + 1
  data = declare(zip_bytes([("a.dcm", DICOM_HEAD)], zipfile.ZIP_STORED), too_big)
  items, problems = archives.read_zip("huge.zip", data)
  assert not items and len(problems) == 1
  assert str(problems[0]).startswith("huge.zip: unzips to") and "limit" in str(problems[0])


@pytest.mark.parametrize("member", ["/etc/a.dcm", "../a.dcm", "series/../../a.dcm",
                                    "series\\..\\a.dcm", "C:\\a.dcm"])
def test_unsafe_member_paths_are_skipped(member):
  items, problems = archives.read_zip("s.zip", zip_bytes(
      [(member, DICOM_HEAD), ("ok.dcm", DICOM_HEAD)]))
  assert [i.name for i in items] == ["s.zip/ok.dcm"]
  assert list(map(str, problems)) == [
      f"s.zip/{member}: unsafe path in the zip (absolute or with '..'), skipped"]


def test_a_member_that_lies_about_its_size_is_never_read_past_it():
  """Declared 10 bytes, holds 4 kB: refused, skipped, or cut at 10 bytes, never read whole."""
  content = DICOM_HEAD + bytes(range(256)) * 16
  for crc in (None, zlib.crc32(content[:10])):  # a wrong CRC, and one made to match the lie
    items, problems = archives.read_zip("lie.zip", declare(zip_bytes([("a.dcm", content)]),
                                                           10, crc))
    assert all(len(i.data) <= 10 for i in items)
    assert items or problems


def test_compression_ratio_guard():
  items, problems = archives.read_zip("bomb.zip", zip_bytes(
      [("a.dcm", DICOM_HEAD + b"\0" * 2**20)]))
  assert not items and "zip bomb" in str(problems[0])


def test_nested_zip_is_skipped_not_opened():
  inner = zip_bytes([("deep.dcm", DICOM_HEAD)])
  items, problems = archives.read_zip("outer.zip", zip_bytes(
      [("inner.zip", inner), ("a.dcm", DICOM_HEAD)]))
  assert [i.name for i in items] == ["outer.zip/a.dcm"]
  assert list(map(str, problems)) == [
      "outer.zip/inner.zip: a zip inside the zip; upload the inner zip itself, skipped"]


def test_finder_metadata_is_skipped_silently():
  items, problems = archives.read_zip("mac.zip", zip_bytes([
      ("series/a.dcm", DICOM_HEAD), ("__MACOSX/series/._a.dcm", b"\0\5\26\7 resource fork"),
      ("__MACOSX/series/b.dcm", DICOM_HEAD), ("series/.DS_Store", b"Bud1")]))
  assert [i.name for i in items] == ["mac.zip/series/a.dcm"] and not problems


def test_damaged_zip_says_so():
  data = zip_bytes([("a.dcm", DICOM_HEAD)])
  items, problems = archives.read_zip("bad.zip", data[:30])
  assert not items and "damaged zip archive" in str(problems[0])


def test_every_upload_is_read_once_and_deleted(tmp_path):
  """The app reads each upload into memory and deletes it; cutting a long upload at
  `uploads.MAX_SLICES` slices is the reader's job (`sources.read(max_slices=...)`)."""
  root = tmp_path / "uploads"
  root.mkdir()
  paths = []
  for i in range(5):
    path = root / f"{i:04d}.dcm"
    path.write_bytes(DICOM_HEAD + str(i).encode())
    paths.append(str(path))
  items, problems = uploads.read_uploads(paths, uploads.Ledger(root))
  assert [(i.name, i.data) for i in items] == [(f"{i:04d}.dcm", DICOM_HEAD + str(i).encode())
                                               for i in range(5)]
  assert not problems
  assert not any(root.iterdir())  # every upload deleted once read
