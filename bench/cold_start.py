"""Cold start of the demo: `python app.py` to its first answered requests, first and warm start.

A first start has an empty XLA compile cache (a fresh Space, or one without persistent
storage); a warm start finds the programs the first start compiled (a restart with the cache on
persistent storage). Each start is timed from launching `python app.py` (shipped weights) to:
the page answering, a first single slice answered (the `/example` endpoint with a phantom DICOM),
then a first series (the 8-slice zip). The cache goes where `ICHFLAX_JAX_CACHE` says, as on a
Space with /data mounted. `imports_s` is `import demo` alone (gradio, jax, flax, orbax …), the
part of a start that no cache shortens. With JAX_LOG_COMPILES the app's log lists the model
programs compiled (`with_cam` / `plain`, by batch) in order: a batch listed twice, or one the
warm-up does not list, was compiled for a visitor's request.

    python bench/cold_start.py --json bench/results/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gradio_client import Client

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(cache: Path) -> dict:
  """One start of the app with `cache` as its compile cache; seconds from launch to each answer."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION", "JAX_PERS"))}
  env.update(ICHFLAX_JAX_CACHE=str(cache), GRADIO_ANALYTICS_ENABLED="False", JAX_PLATFORMS="cpu",
             JAX_LOG_COMPILES="1")
  log = cache.parent / f"{cache.name}-app.log"
  t0 = time.perf_counter()
  with log.open("w") as sink:
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=sink, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  try:
    while True:
      if proc.poll() is not None or time.perf_counter() - t0 > STARTUP_S:
        raise RuntimeError("the app did not start")
      try:
        urllib.request.urlopen(url, timeout=2).read()
        break
      except OSError:
        time.sleep(0.2)
    out = {"page_s": time.perf_counter() - t0}
    client = Client(url, verbose=False)
    for name, example in (("single", "subdural.dcm"), ("series", "series.zip")):
      sent = time.perf_counter()
      client.predict(example, api_name="/example")
      out[f"{name}_answered_s"] = time.perf_counter() - t0
      out[f"{name}_latency_s"] = time.perf_counter() - sent
    while "warm-up done" not in log.read_text() and time.perf_counter() - t0 < STARTUP_S:
      time.sleep(0.5)
    out["warm_up_done_s"] = time.perf_counter() - t0
  finally:
    proc.terminate()
    proc.wait(timeout=30)
  text = log.read_text()
  out["warm_up"] = " ".join(re.findall(r"warm-up done: (.*)", text))
  out["compiled"] = [f"{fn}[{batch}]" for fn, batch in re.findall(
      r"Compiling jit\((with_cam|plain)\).*?uint8\[(\d+)", text)]
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--json", type=Path, help="write the results here too")
  args = parser.parse_args()
  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory(prefix="ichflax-cold-start-") as tmp:
    cache = Path(tmp) / "jax"
    runs = {"first": start(cache), "warm": start(cache)}
  t0 = time.perf_counter()
  subprocess.run([sys.executable, "-c", "import demo"], cwd=ROOT, check=True)
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "load_before": load_before, "load_after": os.getloadavg(),
            "imports_s": time.perf_counter() - t0, "runs": runs}
  print(json.dumps(result, indent=1))
  if args.json:
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()
