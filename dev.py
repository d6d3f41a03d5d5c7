"""One-command set-up: `python3 dev.py demo` or `python3 dev.py test`.

Needs only Python 3.11 and git. Creates `.venv/` beside this file, installs the requirements
(again only when a requirements file changed), then runs the demo or the whole test suite.
Extra arguments after the verb are passed on (to `app.py` or to pytest).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
REQUIREMENTS = {"demo": "requirements.txt", "test": "requirements-dev.txt"}


def _digest(req: str) -> str:
  """Hash of the requirements file and the files it includes, to skip a no-op reinstall."""
  h = hashlib.sha256()
  for name in sorted({req, "requirements.txt"}):
    h.update((ROOT / name).read_bytes())
  return h.hexdigest()


def _venv_works() -> bool:
  """The venv's Python runs and has pip (a venv made without ensurepip has neither)."""
  try:
    return subprocess.call([str(PY), "-m", "pip", "--version"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) == 0
  except OSError:
    return False


def ensure_venv(req: str) -> None:
  if sys.version_info < (3, 11):  # noqa: UP036  (dev.py runs under whatever python3 is)
    sys.exit(f"ichflax needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
  if not _venv_works():
    print(f"[dev] creating {VENV}", flush=True)
    shutil.rmtree(VENV, ignore_errors=True)  # a half-made venv (no pip) is worse than none
    if subprocess.call([sys.executable, "-m", "venv", str(VENV)]):
      shutil.rmtree(VENV, ignore_errors=True)
      sys.exit("[dev] could not create a virtual environment: on Debian/Ubuntu install the "
               "python3.11-venv package (apt-get install python3.11-venv), then run this again.")
    subprocess.check_call([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"])
  stamp = VENV / f".installed-{Path(req).stem}"
  digest = _digest(req)
  if stamp.exists() and stamp.read_text() == digest:
    return
  print(f"[dev] installing {req} (first run takes a few minutes)", flush=True)
  subprocess.check_call([str(PY), "-m", "pip", "install", "-q", "-r", str(ROOT / req)])
  stamp.write_text(digest)


def ensure_browser() -> None:
  """The browser test drives Debian's Chromium; install it when we can (root + apt)."""
  if shutil.which("chromium") or os.environ.get("ICHFLAX_CHROMIUM"):
    return
  if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
    print("[dev] installing Debian chromium for the browser test", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.check_call(["apt-get", "update", "-qq"], env=env)
    subprocess.check_call(["apt-get", "install", "-y", "-qq", "chromium"], env=env)
  else:
    print("[dev] chromium not found and cannot be installed here (needs root + apt-get): "
          "the browser test will be skipped. Install Debian's `chromium` package, or set "
          "ICHFLAX_CHROMIUM to a Chromium binary, to run it.", flush=True)


def main(argv: list[str]) -> int:
  if not argv or argv[0] not in REQUIREMENTS:
    print(__doc__)
    return 2
  verb, rest = argv[0], argv[1:]
  ensure_venv(REQUIREMENTS[verb])
  if verb == "demo":
    cmd = [str(PY), str(ROOT / "app.py"), *rest]
  else:
    ensure_browser()
    cmd = [str(PY), "-m", "pytest", *(rest or ["tests"])]
  env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
  return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
