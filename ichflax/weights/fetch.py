"""Download the official ImageNet ResNet50 weights: the one place in ichflax that downloads.

Downloads go to `<file>.part`, resume with an HTTP Range request after a broken connection, and
become the final file only after the checksum the reference library itself checks has matched
(Keras: md5 `file_hash`; torch.hub: the SHA-256 prefix in the file name), plus an optional full
SHA-256 pin.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Source:
  """A canonical weights file and the checksums its reference library verifies."""

  url: str
  md5: str | None = None
  sha256: str | None = None  # full hex digest or a prefix (torch.hub convention)


SOURCES = {
    # keras/src/applications/resnet.py: BASE_WEIGHTS_PATH + notop file, WEIGHTS_HASHES[1] (md5).
    "keras": Source(
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="4d473c1dd8becc155b73f8504c6f6626"),
    # torchvision ResNet50_Weights.IMAGENET1K_V1; torch.hub checks the name's SHA-256 prefix.
    "torchvision": Source("https://download.pytorch.org/models/resnet50-0676ba61.pth",
                          sha256="0676ba61"),
    # EfficientNet_B0_Weights.IMAGENET1K_V1 and ConvNeXt_Tiny_Weights.IMAGENET1K_V1.
    "efficientnet_b0": Source(
        "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
        sha256="7f5810bc"),
    "convnext_tiny": Source("https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
                            sha256="983f1562"),
}
DEFAULT_DIR = Path(os.environ.get("ICHFLAX_CACHE", Path.home() / ".cache" / "ichflax")) / "weights"
_CHUNK = 1 << 20


class FetchError(RuntimeError):
  """A download failed or did not verify; the message says what to do."""


def _destination(url: str, to: str | os.PathLike | None) -> Path:
  name = Path(urllib.parse.urlparse(url).path).name
  if to is None:
    return DEFAULT_DIR / name
  as_dir = Path(to).is_dir() or os.fspath(to).endswith(("/", os.sep))
  return Path(to) / name if as_dir else Path(to)


def _by_hand(url: str, dest: Path) -> str:
  return (f"To fetch it by hand (e.g. on an offline machine): download\n  {url}\n"
          f"save it as {dest}, then run\n  python -m ichflax.weights convert {dest} --out DIR")


def _verify(path: Path, md5: str | None, sha256: str | None) -> None:
  for algo, want in (("md5", md5), ("sha256", sha256)):
    if not want:
      continue
    with open(path, "rb") as f:
      got = hashlib.file_digest(f, algo).hexdigest()
    if not got.startswith(want.lower()):
      more = "..." if len(want) < len(got) else ""  # a prefix, as torch.hub checks
      raise FetchError(f"{path.name}: {algo} is {got}, expected {want}{more}")


def _download_once(url: str, part: Path, timeout: float) -> tuple[int, int | None]:
  """Append what the server sends to `part` (resuming by Range); returns (size, expected)."""
  offset = part.stat().st_size if part.exists() else 0
  headers = {"Range": f"bytes={offset}-"} if offset else {}
  try:
    resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
  except urllib.error.HTTPError as e:
    if e.code == 416 and offset:  # nothing left to send: the part is complete
      return offset, offset
    raise FetchError(f"{url} answered HTTP {e.code} {e.reason}") from None
  with resp:
    if resp.status != 206:
      offset = 0  # the server ignored the Range header: start over
    length = resp.headers.get("Content-Length")
    expected = offset + int(length) if length is not None else None
    with open(part, "ab" if offset else "wb") as f:
      try:
        for chunk in iter(lambda: resp.read(_CHUNK), b""):
          f.write(chunk)
      except (http.client.IncompleteRead, ConnectionError, TimeoutError):
        pass  # keep what arrived; the caller resumes from it
  return part.stat().st_size, expected


def fetch(name: str, to: str | os.PathLike | None = None, *, url: str | None = None,
          md5: str | None = None, sha256: str | None = None, attempts: int = 3,
          timeout: float = 60.0) -> Path:
  """Download weights `name` ("keras" | "torchvision") and return the verified file's path.

  The reference checksums apply to the canonical URL; a custom `url` (a mirror, a test server)
  needs its own `md5` or `sha256`. `sha256` may also pin the canonical file's full digest.
  """
  if name not in SOURCES:
    raise FetchError(f"unknown weights {name!r}: choose one of {', '.join(SOURCES)}")
  source = SOURCES[name]
  if url is None:
    url, md5, sha256 = source.url, md5 or source.md5, sha256 or source.sha256
  if not (md5 or sha256):
    raise FetchError(f"no checksum to verify {url} against: pass --sha256 (or --md5)")
  if sha256 and len(sha256) < 8:
    raise FetchError(f"sha256 {sha256!r} is too short to mean anything: give at least 8 hex digits")
  dest = _destination(url, to)
  if dest.exists():
    try:
      _verify(dest, md5, sha256)
    except FetchError as e:
      raise FetchError(f"{e}: {dest} is not the expected file; delete it and fetch again") from None
    return dest
  dest.parent.mkdir(parents=True, exist_ok=True)
  part = dest.with_name(dest.name + ".part")
  for _ in range(attempts):
    try:
      size, expected = _download_once(url, part, timeout)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
      reason = getattr(e, "reason", e)
      raise FetchError(f"could not download {url}: {reason}\n{_by_hand(url, dest)}") from None
    if expected is None or size >= expected:
      break
  else:
    raise FetchError(f"download of {url} broke off at {size} of {expected} bytes after "
                     f"{attempts} tries; run the same command again to resume from {part}")
  try:
    _verify(part, md5, sha256)
  except FetchError as e:
    part.unlink()
    raise FetchError(f"{e}; the download was deleted.\n{_by_hand(url, dest)}") from None
  os.replace(part, dest)
  return dest
