"""Zip guards (`ichflax.data.archives`, shared by CLI and app), server-free, on real archives;
the app's upload cut and Finder metadata; the upload ledger and the middleware that counts.

The zips are real archives; where a guard needs a header that lies (declared sizes), the bytes
of a real archive are edited the way a crafted file would be.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
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
  assert not items and list(map(str, problems)) == [
      f"bomb.zip: compression ratio over {archives.MAX_ZIP_RATIO}:1 (a zip bomb?); refused"]
  # The limit itself is allowed: a stored member declared at exactly 100 times its size.
  stored = zip_bytes([("a.dcm", DICOM_HEAD)], zipfile.ZIP_STORED)
  at_limit = declare(stored, archives.MAX_ZIP_RATIO * len(DICOM_HEAD))
  assert [i.data for i in archives.read_zip("s.zip", at_limit)[0]] == [DICOM_HEAD]
  over = declare(stored, archives.MAX_ZIP_RATIO * len(DICOM_HEAD) + 1)
  assert "compression ratio" in str(archives.read_zip("s.zip", over)[1][0])


def test_nested_zip_is_skipped_not_opened():
  inner = zip_bytes([("deep.dcm", DICOM_HEAD)])
  items, problems = archives.read_zip("outer.zip", zip_bytes(
      [("inner.zip", inner), ("a.dcm", DICOM_HEAD)]))
  assert [i.name for i in items] == ["outer.zip/a.dcm"]
  assert list(map(str, problems)) == [
      "outer.zip/inner.zip: a zip inside the zip; upload the inner zip itself, skipped"]


def test_finder_metadata_is_skipped_silently():
  items, problems = archives.read_zip("mac.zip", zip_bytes([
      ("__MACOSX/series/._a.dcm", b"\0\5\26\7 resource fork"), ("series/.DS_Store", b"Bud1"),
      ("__MACOSX/series/b.dcm", DICOM_HEAD), ("series/a.dcm", DICOM_HEAD)]))
  assert [i.name for i in items] == ["mac.zip/series/a.dcm"] and not problems


def test_member_limit_is_inclusive():
  members = [(f"{i}.dcm", DICOM_HEAD) for i in range(3)]
  assert len(archives.read_zip("s.zip", zip_bytes(members[:2]), max_members=2)[0]) == 2
  items, problems = archives.read_zip("s.zip", zip_bytes(members), max_members=2)
  assert not items and "3 files in the zip, more than the 2-file limit" in str(problems[0])


def test_unzipped_size_limit_is_inclusive_and_says_the_size():
  """A zip of exactly the limit is read whole; one byte more is refused, naming both sizes."""
  full = DICOM_HEAD + np.random.default_rng(0).bytes(2**20 - len(DICOM_HEAD))  # incompressible
  items, problems = archives.read_zip("s.zip", zip_bytes([("a.dcm", full)], zipfile.ZIP_STORED),
                                      max_unzipped_mb=1)
  assert [i.data for i in items] == [full] and not problems
  data = declare(zip_bytes([("a.dcm", DICOM_HEAD)], zipfile.ZIP_STORED), 3 * 2**20)
  items, problems = archives.read_zip("s.zip", data, max_unzipped_mb=1)
  assert not items and list(map(str, problems)) == [
      "s.zip: unzips to 3 MB, over the 1 MB limit; zip one series at a time"]


def test_members_of_different_sizes_are_read_whole():
  small, large = DICOM_HEAD + b"s", DICOM_HEAD + bytes(range(256))
  items, problems = archives.read_zip("s.zip", zip_bytes([("a.dcm", small), ("b.dcm", large)]))
  assert [i.data for i in items] == [small, large] and not problems


def test_an_empty_member_is_an_empty_item():
  """Stored empty, it compresses to 0 bytes: no ratio to take, and the reader says what it is."""
  items, problems = archives.read_zip("s.zip", zip_bytes([("empty.dcm", b"")], zipfile.ZIP_STORED))
  assert [(i.name, i.data) for i in items] == [("s.zip/empty.dcm", b"")] and not problems


def test_an_encrypted_member_is_skipped_with_its_reason():
  """The encryption flag set on the first member, as a password-protected zip has it."""
  data = bytearray(zip_bytes([("a.dcm", DICOM_HEAD), ("b.dcm", DICOM_HEAD + b"b")]))
  for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
    data[data.find(signature) + flags_at] |= 1
  items, problems = archives.read_zip("s.zip", bytes(data))
  assert [i.name for i in items] == ["s.zip/b.dcm"]
  assert list(map(str, problems)) == [
      "s.zip/a.dcm: cannot be unzipped (damaged, encrypted or an unsupported compression "
      "method); zip it again without a password"]


def test_damaged_zip_says_so():
  data = zip_bytes([("a.dcm", DICOM_HEAD)])
  items, problems = archives.read_zip("bad.zip", data[:30])
  assert not items and list(map(str, problems)) == [
      "bad.zip: damaged zip archive (its index cannot be read); zip the slices again"]


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


def test_uploads_are_deleted_and_nothing_outside_the_upload_dir(tmp_path):
  root = tmp_path / "uploads"
  (root / "abc").mkdir(parents=True)
  inside = root / "abc" / "x.dcm"
  inside.write_bytes(b"data")
  outside = tmp_path / "keep.dcm"
  outside.write_bytes(b"mine")
  items, problems = uploads.read_uploads([str(inside), str(outside)], uploads.Ledger(root))
  assert [i.data for i in items] == [b"data", b"mine"] and not problems
  assert not (root / "abc").exists() and outside.exists()


def test_an_upload_shared_by_requests_goes_with_the_last_one(tmp_path):
  """Two visitors sent the same file (one path): the first to finish must not delete it."""
  ledger = uploads.Ledger(tmp_path)
  shared_path = tmp_path / "0123abcd" / "slice.dcm"
  shared_path.parent.mkdir()
  shared_path.write_bytes(b"slice")
  ledger.claim([str(shared_path)] * 2)
  assert uploads.read_uploads([str(shared_path)], ledger)[0][0].data == b"slice"
  assert shared_path.exists()
  ledger.hold()  # a third copy has arrived and is not yet counted: nothing may go meanwhile
  assert uploads.read_uploads([str(shared_path)], ledger)[0][0].data == b"slice"
  assert shared_path.exists()
  ledger.claim([str(shared_path)])
  ledger.let_go()
  assert shared_path.exists()
  uploads.read_uploads([str(shared_path)], ledger)
  assert not shared_path.parent.exists()


def upload_route(root: Path, while_landing: Callable[[], None] = lambda: None):
  """Gradio's upload route as `CountUploads` sees it, for any path: the body stored under a
  folder named by its content hash, answered with the JSON list of stored paths (the real one
  runs behind a real server in test_app.py). `while_landing` runs once the body has arrived.
  The answer comes in two chunks and an empty last message, as ASGI allows."""
  async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = b""
    while True:
      message = await receive()
      body += message.get("body", b"")
      if not message.get("more_body"):
        break
    path = root / hashlib.sha256(body).hexdigest()[:16] / "slice.dcm"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(body)
    while_landing()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    answer = json.dumps([str(path)]).encode()
    for chunk in (answer[:5], answer[5:]):
      await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body"})
  return app


def post(app, ledger: uploads.Ledger, data, route: str = uploads.UPLOAD_ROUTE,
         method: str = "POST") -> Path:
  """One request through `CountUploads`, as the browser sends it; the stored path. `data`:
  bytes, or an async iterator of chunks for a body that arrives over time."""
  async def send() -> httpx.Response:
    transport = httpx.ASGITransport(app=uploads.CountUploads(app, ledger))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
      return await client.request(method, route, content=data)
  response = asyncio.run(send())
  assert response.status_code == 200
  [path] = response.json()
  return Path(path)


def test_the_same_file_uploaded_twice_goes_with_its_second_reader(tmp_path):
  """Gradio gives both uploads one path: each answer is counted, so the first read keeps it."""
  ledger = uploads.Ledger(tmp_path)
  app = upload_route(tmp_path)
  first, second = post(app, ledger, DICOM_HEAD), post(app, ledger, DICOM_HEAD)
  assert first == second
  assert uploads.read_uploads([str(first)], ledger)[0][0].data == DICOM_HEAD
  assert first.exists()
  uploads.read_uploads([str(first)], ledger)
  assert not first.parent.exists()


def test_other_routes_are_not_counted(tmp_path):
  """Only the upload route's answers are counted: a path in any other answer must not keep an
  upload on disk after its reader has released it."""
  ledger = uploads.Ledger(tmp_path)
  app = upload_route(tmp_path)
  path = post(app, ledger, DICOM_HEAD, "/gradio_api/queue/join")
  assert post(app, ledger, DICOM_HEAD, "/gradio_api/queue/join") == path
  assert post(app, ledger, DICOM_HEAD, method="PUT") == path
  assert post(app, ledger, DICOM_HEAD, method="PUT") == path
  uploads.read_uploads([str(path)], ledger)
  assert not path.exists()


def test_nothing_is_deleted_while_an_upload_is_landing(tmp_path):
  """An upload arrived but not yet counted may be landing on a path about to go: a release
  meanwhile deletes nothing until the answer is counted."""
  ledger = uploads.Ledger(tmp_path)
  old = post(upload_route(tmp_path), ledger, DICOM_HEAD + b"old")

  def read_old():
    uploads.read_uploads([str(old)], ledger)
    assert old.exists()

  new = post(upload_route(tmp_path, read_old), ledger, DICOM_HEAD + b"new")
  assert not old.exists() and new.exists()


def test_a_body_still_arriving_holds_nothing_back(tmp_path):
  """Deletions wait only once the last byte is in (milliseconds), not while a slow client is
  still sending: a release between two chunks deletes at once."""
  ledger = uploads.Ledger(tmp_path)
  old = post(upload_route(tmp_path), ledger, DICOM_HEAD + b"old")

  async def slow_body():
    yield DICOM_HEAD
    uploads.read_uploads([str(old)], ledger)
    assert not old.exists()
    yield b"rest"

  assert post(upload_route(tmp_path), ledger, slow_body()).read_bytes() == DICOM_HEAD + b"rest"


def test_deletions_wait_for_every_upload_landing(tmp_path):
  """Two uploads land at once: the first counted does not let deletions go ahead."""
  ledger = uploads.Ledger(tmp_path)
  upload = tmp_path / "0123abcd" / "slice.dcm"
  upload.parent.mkdir()
  upload.write_bytes(DICOM_HEAD)
  ledger.hold()
  ledger.hold()
  uploads.read_uploads([str(upload)], ledger)
  ledger.let_go()
  assert upload.exists()
  ledger.let_go()
  assert not upload.parent.exists()


@pytest.mark.parametrize("answer,paths", [
    (b'["/up/a.dcm", "/up/b.dcm"]', ["/up/a.dcm", "/up/b.dcm"]),
    (b'["/up/a.dcm", 3, null]', ["/up/a.dcm"]),
    (b'{"detail": "/up/a.dcm"}', []),  # an error object, not the list of stored paths
    (b"<html>Internal Server Error</html>", []),
])
def test_only_the_stored_paths_of_an_answer_are_counted(answer, paths):
  assert uploads._paths(answer) == paths


def test_an_upload_over_the_limit_or_gone_is_a_problem_and_still_released(tmp_path):
  big, gone, ok = tmp_path / "big.dcm", tmp_path / "g" / "gone.dcm", tmp_path / "ok.dcm"
  with open(big, "wb") as f:
    f.truncate((uploads.MAX_UPLOAD_MB + 2) * 2**20)  # sparse: never read
  gone.parent.mkdir()  # its folder is still there
  slice_bytes = DICOM_HEAD + bytes(512 * 512 * 2)  # one uncompressed 512x512 CT slice
  ok.write_bytes(slice_bytes)
  items, problems = uploads.read_uploads([str(big), str(gone), str(ok)], uploads.Ledger(tmp_path))
  assert [(i.name, i.data) for i in items] == [("ok.dcm", slice_bytes)]
  assert list(map(str, problems)) == [
      f"big.dcm: {uploads.MAX_UPLOAD_MB + 2} MB is over the {uploads.MAX_UPLOAD_MB} MB upload "
      "limit; upload fewer slices at a time",
      "gone.dcm: cannot read the upload (No such file or directory); upload it again"]
  assert not any(tmp_path.iterdir())
