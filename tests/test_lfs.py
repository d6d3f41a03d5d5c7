"""The repository stays pushable to a Hugging Face Space: every binary or large file goes via LFS.

The Hub refuses a push that carries a binary file, or any file over 10 MiB, outside LFS/Xet;
`.gitattributes` routes them. This test fails as soon as a new checkpoint, example or image is
added (committed or not) that no LFS rule covers, before a deploy finds out.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1 << 20  # stricter than the Hub's 10 MiB: large text files belong in LFS too
SNIFF = 8000  # bytes git itself reads to decide that a file is binary


def _git(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
  return subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True,
                        check=True).stdout


def needs_lfs(path: Path) -> bool:
  """Binary (a NUL byte, or not UTF-8, in git's sniff window) or over LIMIT bytes."""
  if path.stat().st_size > LIMIT:
    return True
  head = path.read_bytes()[:SNIFF]
  if b"\0" in head:
    return True
  try:
    head.decode("utf-8")
  except UnicodeDecodeError as e:
    return e.start < len(head) - 3  # a multi-byte character cut by the window is still text
  return False


def uncovered(root: Path) -> list[str]:
  """Tracked or addable files that need LFS but match no `filter=lfs` rule."""
  listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
  files = [f for f in dict.fromkeys(listed.decode().split("\0")) if f and (root / f).is_file()]
  if not files:
    return []
  out = _git(root, "check-attr", "-z", "filter", "--stdin", "-z",
             stdin="\0".join(files).encode() + b"\0").decode().split("\0")
  lfs = {path for path, _, value in zip(out[0::3], out[1::3], out[2::3]) if value == "lfs"}
  return sorted(f for f in files if f not in lfs and needs_lfs(root / f))


@pytest.fixture
def git_repo(tmp_path):
  if shutil.which("git") is None:
    pytest.skip("git is not installed")
  _git(tmp_path, "init", "-q")
  return tmp_path


def test_repository_binaries_all_go_through_lfs():
  if shutil.which("git") is None or not (ROOT / ".git").exists():
    pytest.skip("not a git checkout")
  offenders = uncovered(ROOT)
  assert not offenders, (
      "these files would make the Hugging Face Hub refuse a push: add a `filter=lfs diff=lfs "
      f"merge=lfs -text` rule for them to .gitattributes: {offenders}")


def test_the_check_sees_binaries_large_files_and_rules(git_repo):
  (git_repo / "notes.md").write_text("plain text, ünïcode\n")
  (git_repo / "weights").write_bytes(b"\x00\x01binary payload")
  (git_repo / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
  (git_repo / "big.json").write_text("[" + "0," * LIMIT + "0]")
  (git_repo / "slice.dcm").write_bytes(b"\x00" * 200)
  assert uncovered(git_repo) == ["big.json", "latin1.txt", "slice.dcm", "weights"]
  (git_repo / ".gitattributes").write_text(
      "*.dcm filter=lfs diff=lfs merge=lfs -text\nweights filter=lfs -text\n")
  assert uncovered(git_repo) == ["big.json", "latin1.txt"]


def test_shipped_checkpoint_and_examples_are_covered():
  """The files the issue names: orbax data files without extension, examples, screenshots."""
  if shutil.which("git") is None or not (ROOT / ".git").exists():
    pytest.skip("not a git checkout")
  paths = ["checkpoints/multilabel/state/ocdbt.process_0/d/839d6cc77b6579717d9fdbb865598bd8",
           "demo/examples/series.zip", "demo/examples/normal.dcm", "docs/screenshots/demo.png"]
  out = _git(ROOT, "check-attr", "filter", "--", *paths).decode().splitlines()
  assert out == [f"{p}: filter: lfs" for p in paths]
