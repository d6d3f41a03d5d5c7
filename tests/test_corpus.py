"""A peer's corpus: every file of pydicom's own test set, through the CLI and through the app.

The files ship inside the pydicom wheel (`pydicom/data/test_files`, found from the installed
package; never `get_testdata_file`, which may download): odd transfer syntaxes, big endian, no
meta, colour, RT objects, malformed values. Each must end as a row (a prediction, or a status with
a reason naming the file and saying what to do), and one bad file must never stop the others.

Slow (about a minute each on 2 cores): ~140 slices through the shipped ResNet50; kept in CI
because it is the only end-to-end guard over real-world odd files.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom
import pytest
from test_app import ROOT, SHIPPED, analyze, server  # noqa: F401

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file())
# Every reason ends by saying what to do: one of these verbs after the "; ".
ACTION = re.compile(r"; .*\b(give|export|re-export|upload|install|copy|convert|zip|report)\b")

pytestmark = pytest.mark.slow


def _counts(rows: list[dict]) -> dict:
  """Rows by status, errors also by the first words of their reason (docs/data.md's counts)."""
  out = collections.Counter()
  for r in rows:
    if "file" not in r:
      continue  # a series summary
    out[r["status"]] += 1
    if r["status"] == "error":
      reason = r["reason"].split(": ", 1)[1]
      out["error: " + " ".join(reason.split()[:4])] += 1
  return dict(out)


def test_every_file_of_the_pydicom_corpus_gets_a_row_from_the_cli():
  assert len(FILES) > 80  # the wheel's test files, not an empty or moved directory
  run = subprocess.run([sys.executable, "-m", "ichflax.predict", str(CORPUS), "--checkpoint",
                        str(SHIPPED), "--batch-size", "16"], capture_output=True, text=True,
                       cwd=ROOT, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "Traceback" not in run.stderr
  rows = [json.loads(line) for line in run.stdout.splitlines()]
  per_file = [r for r in rows if "file" in r]
  by_file = collections.defaultdict(list)
  for r in per_file:
    by_file[r["file"]].append(r)
  assert set(by_file) == {str(f) for f in FILES}
  for file, got in by_file.items():
    frames = [r.get("frame") for r in got]
    if frames == [None]:
      continue  # one file, one row
    assert sorted(frames) == list(range(1, len(got) + 1)), file  # a volume: one row per frame
  for r in per_file:
    assert r["status"] in ("ok", "out_of_scope", "out_of_domain", "error"), r
    assert (r["status"] == "ok") == ("probabilities" in r), r  # withheld unless judged
    if r["status"] != "ok":
      assert r["reason"], r
    if r["status"] == "error":
      assert set(r) == {"type", "file", "status", "reason"} and r["type"] == "error"
      assert r["reason"].startswith(r["file"] + ": ") and ACTION.search(r["reason"]), r
      assert "ichflax's reader" not in r["reason"], r  # every failure foreseen, none a catch-all
  counts = _counts(rows)
  print(json.dumps(counts, indent=1))
  # Decoded and judged (ok, or refused by the scope or domain check with a reason): the files
  # pydicom can decode, ~99 slices; none of them is a head CT like the phantom's, so few are ok.
  assert len(per_file) - counts.get("error", 0) >= 60


def test_the_corpus_zipped_through_the_app_lists_every_file(server, tmp_path):
  zipped = tmp_path / "corpus.zip"
  with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
    for f in FILES:
      zf.write(f, f.relative_to(CORPUS).as_posix())
  r = analyze(server, zipped)
  assert "Something went wrong" not in r["message"] and "Latency" in r["message"]
  table = r["table"]["value"]
  column = table["headers"].index("file")
  shown = r["message"] + "\n" + "\n".join(str(row[column]) for row in table["data"])
  missing = [f for f in FILES if f"corpus.zip/{f.relative_to(CORPUS).as_posix()}" not in shown]
  assert not missing
  assert "Traceback" not in server.log_text() and server.process.poll() is None
