"""fetch against a real HTTP server on 127.0.0.1: verify, refuse, resume, offline message."""

import hashlib
import http.server
import os
import socket
import threading
import typing

import numpy as np
import pytest

from ichflax.weights import SOURCES, FetchError, fetch
from ichflax.weights.__main__ import main

os.environ.setdefault("KERAS_BACKEND", "jax")  # before the reference test imports keras

PAYLOAD = np.random.default_rng(0).bytes(300_000)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves PAYLOAD with Range support; the first `drops` responses stop half-way."""

  drops = 0
  ranges: typing.ClassVar[list[str | None]] = []

  def do_GET(self):
    rng = self.headers.get("Range")
    type(self).ranges.append(rng)
    start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
    body = PAYLOAD[start:]
    self.send_response(206 if rng else 200)
    if rng:
      self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if type(self).drops > 0:
      type(self).drops -= 1
      self.wfile.write(body[:len(body) // 2])
      self.wfile.flush()
      self.connection.shutdown(socket.SHUT_RDWR)  # drop the connection mid-file
      return
    self.wfile.write(body)

  def log_message(self, *args):
    pass


@pytest.fixture
def server():
  _Handler.drops, _Handler.ranges = 0, []
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield _Handler, f"http://127.0.0.1:{httpd.server_address[1]}/weights/resnet50-test.pth"
  httpd.shutdown()
  httpd.server_close()


def test_checksum_ok(server, tmp_path):
  _, url = server
  path = fetch("torchvision", tmp_path, url=url, sha256=SHA256)
  assert path == tmp_path / "resnet50-test.pth" and path.read_bytes() == PAYLOAD
  assert fetch("torchvision", path, url=url, md5=MD5, sha256=SHA256[:8]) == path  # verified again


def test_checksum_wrong_is_refused(server, tmp_path):
  _, url = server
  with pytest.raises(FetchError, match=f"sha256 is {SHA256}, expected 0000"):
    fetch("keras", tmp_path / "w.h5", url=url, sha256="0" * 64)
  assert list(tmp_path.iterdir()) == [], "a refused download must leave no file behind"


def test_interrupted_download_resumes_with_range(server, tmp_path):
  handler, url = server
  handler.drops = 1
  path = fetch("torchvision", tmp_path, url=url, sha256=SHA256)
  assert path.read_bytes() == PAYLOAD
  half = len(PAYLOAD) // 2
  assert handler.ranges == [None, f"bytes={half}-"], handler.ranges


def test_resume_across_runs(server, tmp_path):
  handler, url = server
  handler.drops = 1
  with pytest.raises(FetchError, match="run the same command again to resume"):
    fetch("torchvision", tmp_path, url=url, sha256=SHA256, attempts=1)
  part = tmp_path / "resnet50-test.pth.part"
  assert part.stat().st_size == len(PAYLOAD) // 2
  assert not (tmp_path / "resnet50-test.pth").exists()
  path = fetch("torchvision", tmp_path, url=url, sha256=SHA256)
  assert path.read_bytes() == PAYLOAD and not part.exists()
  assert handler.ranges[-1] == f"bytes={len(PAYLOAD) // 2}-"


def test_server_down_prints_url(tmp_path, capsys):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]  # closed again: nothing listens there
  url = f"http://127.0.0.1:{port}/resnet50_notop.h5"
  to = str(tmp_path / "new") + "/"  # a directory that does not exist yet
  assert main(["fetch", "keras", "--to", to, "--url", url, "--md5", MD5]) == 1
  err = capsys.readouterr().err
  assert url in err and "by hand" in err
  assert f"convert {tmp_path / 'new' / 'resnet50_notop.h5'} --out" in err
  assert not any(tmp_path.rglob("*.h5*"))


def test_sources_match_the_reference_libraries():
  """URLs and checksums are the ones Keras and torch.hub themselves use, not invented."""
  from keras.src.applications import resnet
  from torch.hub import HASH_REGEX
  from torchvision.models import ResNet50_Weights
  notop = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
  assert SOURCES["keras"].url == resnet.BASE_WEIGHTS_PATH + notop
  assert SOURCES["keras"].md5 == resnet.WEIGHTS_HASHES["resnet50"][1]
  tv_url = ResNet50_Weights.IMAGENET1K_V1.url
  assert SOURCES["torchvision"].url == tv_url
  assert SOURCES["torchvision"].sha256 == HASH_REGEX.search(tv_url.rsplit("/", 1)[1]).group(1)


def test_custom_url_needs_a_checksum(tmp_path):
  with pytest.raises(FetchError, match="--sha256"):
    fetch("keras", tmp_path, url="http://127.0.0.1:9/x.h5")
