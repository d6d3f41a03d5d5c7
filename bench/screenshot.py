"""Regenerate the README's screenshot from the running demo: `python bench/screenshot.py`.

Starts `python app.py` with the shipped weights on a free port, opens the page in headless
Debian Chromium (Playwright, no browser download), clicks one phantom example, waits for its
answer and writes the whole page to docs/screenshots/demo.png. So the picture always shows the
page as the code draws it (its limits, its answer panels), never an older one.

    python bench/screenshot.py [--example "Subdural (DICOM)"] [--out docs/screenshots/demo.png]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots" / "demo.png"
EXAMPLE = "Subdural (DICOM)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 1000}
TIMEOUT_MS = 120_000


def chromium() -> str:
  return os.environ.get("ICHFLAX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.contextmanager
def browser_page(profile: Path):
  """A page in headless Debian Chromium with a fresh profile (nothing cached from other runs)."""
  from playwright.sync_api import sync_playwright
  with sync_playwright() as p:
    context = p.chromium.launch_persistent_context(profile, executable_path=chromium(),
                                                   args=FLAGS, viewport=VIEWPORT)
    try:
      yield context.new_page()
    finally:
      context.close()


def shoot(page, url: str, out: Path, example: str = EXAMPLE) -> str:
  """Clicks `example` on the page at `url`, waits for its answer, writes the whole page to
  `out`; returns the page's text as shown."""
  page.goto(url)
  page.get_by_text(example, exact=True).click()
  page.locator("#message", has_text="Latency").wait_for(timeout=TIMEOUT_MS)
  out.parent.mkdir(parents=True, exist_ok=True)
  page.screenshot(path=str(out), full_page=True)
  return page.locator("body").inner_text()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--example", default=EXAMPLE, help=f"example button to click ({EXAMPLE!r})")
  p.add_argument("--out", type=Path, default=OUT, help="PNG to write (docs/screenshots/demo.png)")
  a = p.parse_args(argv)
  port = _free_port()
  env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
  server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env)
  try:
    url = f"http://127.0.0.1:{port}/"
    import httpx
    deadline = time.monotonic() + 300
    while True:
      try:
        if httpx.get(url, timeout=2).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      if server.poll() is not None or time.monotonic() > deadline:
        print("error: app.py did not start", file=sys.stderr)
        return 1
      time.sleep(0.5)
    with tempfile.TemporaryDirectory() as profile, browser_page(Path(profile)) as page:
      shoot(page, url, a.out, a.example)
  finally:
    server.terminate()
    server.wait(timeout=30)
  print(f"wrote {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
