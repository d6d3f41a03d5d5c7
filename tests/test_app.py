"""The demo as a real server on 127.0.0.1, called with gradio_client: good and bad uploads, the
upload limit, de-identification (nothing identifying in responses or the log, no file left).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from test_predictor import bad_files, shared, tiny_checkpoint, write_dicom  # noqa: F401

from demo import callbacks, summary, ui, uploads
from ichflax.data import phantom
from ichflax.trust import verdict

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "demo" / "examples"
SHIPPED = ROOT / "checkpoints" / "multilabel"
# What a real scan would carry; none of it may appear in a response or the server log.
IDENTITY = {"PatientName": "Doe^Jane^Identifiable", "PatientID": "PID-7781-SECRET",
            "PatientBirthDate": "19610203", "StudyDate": "20240511", "AccessionNumber": "ACC99812",
            "InstitutionName": "Saint Example Hospital", "ReferringPhysicianName": "Who^Doctor"}
STARTUP_S = 300
REAL_LIKE_SEED = 5


@dataclasses.dataclass
class Server:
  url: str
  uploads: Path
  log: Path
  process: subprocess.Popen

  def client(self) -> Client:
    return Client(self.url, verbose=False, download_files=False)

  def log_text(self) -> str:
    return self.log.read_text(errors="replace")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_server(checkpoint: Path, root: Path) -> Server:
  """`python app.py` as a user starts it, on a free port, serving `checkpoint`."""
  port, log = free_port(), root / "server.log"
  env = dict(os.environ, GRADIO_TEMP_DIR=str(root / "uploads"),
             GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
  env.pop("SPACE_ID", None)
  with open(log, "wb") as out:
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--checkpoint",
                             str(checkpoint)], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  deadline = time.monotonic() + STARTUP_S
  while True:
    if proc.poll() is not None:
      pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    try:
      if httpx.get(url, timeout=2).status_code == 200:
        return Server(url, root / "uploads", log, proc)
    except httpx.HTTPError:
      pass
    if time.monotonic() > deadline:
      proc.kill()
      pytest.fail(f"app.py did not serve within {STARTUP_S} s:\n{log.read_text()[-3000:]}")
    time.sleep(0.5)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
  """The app as a new user gets it: the shipped demo weights from checkpoints/."""
  s = shared("server", lambda: start_server(SHIPPED, tmp_path_factory.mktemp("server")))
  yield s
  if s.process.poll() is None:  # the first copy of this fixture torn down stops it
    s.process.terminate()
    s.process.wait(timeout=30)


@pytest.fixture(scope="module")
def identified_dicom(tmp_path_factory) -> Path:
  """A phantom subdural slice carrying a full set of (fake) identifying tags."""
  # 256 px like the shipped model's phantom DICOMs: a 128 px phantom's noise is not averaged
  # down to the stored size as training's was, and its texture is out of domain.
  hu = phantom.make_slice(np.random.default_rng(11), 256, (4,)).hu
  path = tmp_path_factory.mktemp("identified") / "scan_0001.dcm"
  return write_dicom(path, hu, **IDENTITY)


def analyze(server: Server, *paths: Path, client: Client | None = None,
            reveal: bool = False) -> dict:
  """Calls the upload endpoint; returns the outputs by name."""
  out = (client or server.client()).predict([handle_file(str(p)) for p in paths], reveal,
                                            api_name="/analyze")
  names = ["files", "message", "hemorrhage", "subtypes", "overlay", "brain", "subdural", "bone",
           "table", "slider", "plot"]
  return dict(zip(names, out))


def decode(image: dict) -> np.ndarray:
  """An inline image output (data: URL) as an array."""
  assert image["path"] is None and image["url"].startswith("data:image/png;base64,")
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(image["url"].split(",", 1)[1]))))


def test_dicom_upload_shows_probabilities_windows_and_gradcam(server, identified_dicom):
  r = analyze(server, identified_dicom)
  assert "Latency" in r["message"] and "scan_0001.dcm" in r["message"]
  labels = [c["label"] for c in r["hemorrhage"]["confidences"]]
  assert "no hemorrhage" in labels and any(x.startswith("hemorrhage: P ") for x in labels)
  assert len(r["subtypes"]["confidences"]) == 5
  overlay = decode(r["overlay"])
  assert overlay.shape == (256, 256, 3)
  windows = [decode(r[w]) for w in ("brain", "subdural", "bone")]
  assert all(w.shape == (256, 256) for w in windows)
  assert not np.array_equal(windows[0], windows[2])  # really three different windows
  assert r["files"] is None  # the upload box is cleared: the files are gone
  assert r["slider"]["visible"] is False


def test_png_upload(server, tmp_path):
  path = tmp_path / "slice.png"
  Image.open(EXAMPLES / "subdural.png").resize((300, 300)).save(path)
  r = analyze(server, path)
  assert "Latency" in r["message"]
  assert decode(r["overlay"]).shape == (300, 300, 3)
  assert r["subdural"] is None and r["bone"] is None  # a PNG has no HU: no other windows


def test_series_zip_gives_table_and_slider(server):
  client = server.client()
  r = analyze(server, EXAMPLES / "series.zip", client=client)
  rows = r["table"]["value"]["data"]
  assert len(rows) == 8 and r["slider"]["visible"] is True and r["slider"]["maximum"] == 8
  assert [row[3] for row in rows] == sorted(row[3] for row in rows)  # ordered by position
  assert {row[0] for row in rows} == {1} and "Series 2" not in r["message"]  # one series
  focus = r["slider"]["value"]
  probs = [row[5] if row[5] is not None else -1 for row in rows]
  assert probs[focus - 1] == max(probs)  # opens on the most suspicious judged slice
  plotted = r["plot"]["value"]["data"]  # P(hemorrhage), subtypes and the threshold along z
  outputs = {row[2] for row in plotted}
  assert "hemorrhage (any)" in outputs and summary.THRESHOLD_SERIES in outputs
  other = 1 if focus != 1 else 2
  shown = client.predict(other, api_name="/show_slice")
  assert not np.array_equal(decode(shown[4]), decode(r["brain"]))
  # Another session holds no series (as after the 15-minute expiry): it is told so, no blank image.
  expired = server.client().predict(other, api_name="/show_slice")
  assert "upload the series again" in expired[0] and expired[4] is None


def test_separate_dicoms_of_a_series_give_table_and_slider(server, tmp_path):
  with zipfile.ZipFile(EXAMPLES / "series.zip") as z:
    z.extractall(tmp_path)
  paths = sorted(tmp_path.rglob("*.dcm"))
  r = analyze(server, *paths)
  rows = r["table"]["value"]["data"]
  assert len(rows) == len(paths) == 8 and r["slider"]["visible"] is True
  assert [row[3] for row in rows] == sorted(row[3] for row in rows)  # ordered by position


def test_page_shows_the_shipped_model_card(server):
  config = httpx.get(server.url + "config", timeout=10).text
  assert "Loaded weights" in config and "multilabel" in config
  assert "synthetic phantom" in config and "not on patients" in config
  assert "not a medical device" in config


def test_bad_uploads_get_a_message_and_the_app_keeps_serving(server, bad_files, tmp_path,
                                                             identified_dicom):
  bomb = tmp_path / "bomb.zip"
  with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("slice.dcm", bytes(50 * 2**20))
  escape = tmp_path / "escape.zip"
  with zipfile.ZipFile(escape, "w") as zf:
    zf.writestr("../../outside.dcm", identified_dicom.read_bytes())
  cases = {"empty.dcm": "empty file", "notes.txt": "not a DICOM, NIfTI, PNG or JPG",
           "cut.dcm": "damaged or truncated", "huge.png": "10000x10000 pixels"}
  client = server.client()
  for name, expected in cases.items():
    r = analyze(server, bad_files / name, client=client)
    assert "Nothing could be analysed" in r["message"] and expected in r["message"], name
    assert r["overlay"] is None
  assert "zip bomb" in analyze(server, bomb, client=client)["message"]
  assert "unsafe path" in analyze(server, escape, client=client)["message"]
  mixed = analyze(server, identified_dicom, bad_files / "empty.dcm", client=client)
  assert "Latency" in mixed["message"] and "Skipped" in mixed["message"]
  assert "Traceback" not in server.log_text() and server.process.poll() is None


def test_upload_size_is_limited(server, tmp_path):
  big = tmp_path / "big.dcm"
  with open(big, "wb") as f:
    f.truncate((uploads.MAX_UPLOAD_MB + 1) * 2**20)  # sparse
  with pytest.raises(ValueError, match="exceeds the maximum file size"):
    server.client().predict([handle_file(str(big))], api_name="/analyze")
  with open(big, "rb") as f:  # a client that ignores the limit is stopped by the server
    response = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.dcm", f)},
                          timeout=120)
  assert response.status_code == 413
  assert not any(p.is_file() for p in server.uploads.rglob("*"))


def test_no_identifying_data_in_responses_log_or_disk(server, identified_dicom, tmp_path):
  zipped = tmp_path / "study.zip"
  with zipfile.ZipFile(zipped, "w") as zf:
    zf.write(identified_dicom, "a.dcm")
    zf.writestr("b.dcm", b"not dicom")
  texts = [str(analyze(server, p)) for p in (identified_dicom, zipped)]
  time.sleep(1)  # let the server flush its log
  haystack = "\n".join(texts + [server.log_text()])
  for tag, value in IDENTITY.items():
    for form in {value, value.replace("^", " ")}:
      assert form not in haystack, f"{tag} leaked"
  leftovers = [p for p in server.uploads.rglob("*") if p.is_file()]
  assert not leftovers, f"uploads left on disk: {leftovers}"


def test_app_without_weights_starts_and_says_so(tmp_path, identified_dicom):
  """No checkpoint: the page still serves, shows windows, and says how to get weights."""
  from gradio import utils

  import demo
  app, _ = demo.create_app([], utils.get_upload_folder())
  app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
             quiet=True)
  try:
    config = httpx.get(app.local_url + "config", timeout=10).text
    assert "No checkpoint found" in config and "not a medical device" in config
    out = Client(app.local_url, verbose=False, download_files=False).predict(
        [handle_file(str(identified_dicom))], api_name="/analyze")
    assert "No model weights are loaded" in out[1] and out[5]["url"].startswith("data:image")
  finally:
    app.close()


def test_examples_run_without_a_model_and_say_their_truth():
  result = callbacks.Demo(None, "/nonexistent").example("series.zip")
  assert result.slider == {"maximum": 7, "value": 0} and len(result.table) == 8
  assert "No model weights are loaded" in result.message
  assert result.message.startswith("**Truth (this synthetic example's own labels):** subdural")
  normal = callbacks.Demo(None, "/nonexistent").example("normal.dcm").message
  assert "labels):** no hemorrhage." in normal
  truth = json.loads((EXAMPLES / callbacks.TRUTH_FILE).read_text())
  assert set(truth) == {n for n, _ in ui.EXAMPLES}  # every example listed has its truth
  assert all((EXAMPLES / n).is_file() for n in truth)


def _series_zip(path: Path, series_uids: tuple[str, ...], per_series: int = 3) -> Path:
  rng = np.random.default_rng(40)
  with zipfile.ZipFile(path, "w") as zf:
    for uid in series_uids:
      for i in range(per_series):
        hu = phantom.make_slice(rng, 256, (4,) if i == 1 else ()).hu
        one = write_dicom(path.parent / f"{uid[-1]}{i}.dcm", hu, i, 5.0 * i, series=uid)
        zf.write(one, one.name)
  return path


def test_several_series_get_one_summary_each_never_one_across(server, tmp_path):
  r = analyze(server, _series_zip(tmp_path / "two.zip", ("ID_seriesA", "ID_seriesB")))
  rows = r["table"]["value"]["data"]
  assert [row[0] for row in rows] == [1, 1, 1, 2, 2, 2]  # grouped by SeriesInstanceUID
  assert "**Series 1** (3 slices)" in r["message"] and "**Series 2** (3 slices)" in r["message"]
  assert "ID_series" not in r["message"]  # UIDs are not shown


def test_out_of_scope_upload_is_not_judged_and_says_why(server, tmp_path):
  mr = write_dicom(tmp_path / "mr.dcm", phantom.make_slice(np.random.default_rng(3), 256).hu,
                   Modality="MR")
  r = analyze(server, mr)
  assert "not a head CT slice" in r["message"] and "Modality is MR" in r["message"]
  assert not r["hemorrhage"] and r["overlay"] is None and r["brain"] is not None


@pytest.fixture(scope="module")
def real_like(tmp_path_factory) -> Path:
  """A head CT slice unlike the phantom training data (bench/trust_rates.py: sharper noise,
  parenchymal texture, a wider field of view, beam-hardening streaks)."""
  from bench.trust_rates import towards_real
  rng = np.random.default_rng(REAL_LIKE_SEED)
  hu = towards_real(phantom.make_slice(rng, 256).hu, "real-like", rng)
  return write_dicom(tmp_path_factory.mktemp("real_like") / "real_like.dcm", hu)


def test_out_of_domain_upload_withholds_until_revealed(server, real_like):
  client = server.client()
  hidden = analyze(server, real_like, client=client)
  assert "Out of domain" in hidden["message"] and "synthetic phantom" in hidden["message"]
  assert not hidden["hemorrhage"] and hidden["overlay"] is None  # a gr.Label's None is {}
  shown = analyze(server, real_like, client=client, reveal=True)
  assert "unreliable" in shown["message"] and shown["hemorrhage"]["confidences"]
  # The checkbox re-renders the kept slice without a new upload.
  rerendered = client.predict(1, False, api_name="/reveal")
  assert not rerendered[1] and "withheld" in rerendered[0]


def test_env_var_selects_the_served_checkpoint(tiny_checkpoint, monkeypatch):
  """ICHFLAX_CHECKPOINT wins over what checkpoints/ holds (the Space's usual way)."""
  from demo import weights
  from ichflax.checkpoint import discover
  monkeypatch.setenv(discover.ENV, str(tiny_checkpoint))
  assert discover.requested(None) == [tiny_checkpoint] != discover.discover()
  assert discover.requested([str(SHIPPED)]) == [SHIPPED]  # the command line wins over both
  predictor, card = weights.load(discover.requested(None))
  assert predictor is not None and predictor.stored_size == 64  # the tiny run's, not shipped
  assert card.startswith("**Loaded weights.**")


def test_a_broken_checkpoint_gives_the_page_a_message(tmp_path):
  """A checkpoint whose weights cannot load: the app still builds, and its page says why."""
  import demo
  broken = tmp_path / "broken"
  shutil.copytree(SHIPPED, broken)
  shutil.rmtree(broken / "state")
  (broken / "state").mkdir()  # the layout is right, the weights are gone
  app, _ = demo.create_app([broken], tmp_path / "uploads")
  page = str(app.get_config_file())
  assert f"Could not load weights from `{broken}`" in page
  assert "runs without a model (windows only)" in page


@pytest.mark.parametrize("any_p, sub_p, headline", [
    (0.90, {"subdural": 0.60, "epidural": 0.70}, "subdural"),  # positive; argmax is epidural
    (0.10, {"subdural": 0.60, "epidural": 0.70}, "no hemorrhage"),  # negative
    (0.18, {"subdural": 0.05, "epidural": 0.30}, "subdural"),  # just over both thresholds
])
def test_headline_and_panels_give_one_answer(any_p, sub_p, headline):
  """The message, the two label panels and the table name the same thing (issue 26)."""
  points = {"any": 0.175, "subdural": 0.04, "epidural": 0.76, "intraparenchymal": 0.5,
            "intraventricular": 0.5, "subarachnoid": 0.5}
  probs = {"intraparenchymal": 0.01, "intraventricular": 0.01, "subarachnoid": 0.01, **sub_p,
           "any": any_p}
  label = verdict.decide(probs, points)
  assert label == headline
  view = callbacks.SliceView("s.dcm", None, np.zeros((64, 64), np.int16), None, None, probs,
                             label, None, thresholds=points)
  panels = callbacks.render(view)
  top = max(panels["hemorrhage"], key=panels["hemorrhage"].get)
  assert top.startswith("no hemorrhage" if label == verdict.NO_HEMORRHAGE else "hemorrhage: P")
  if label != verdict.NO_HEMORRHAGE:
    first = max(panels["subtypes"], key=panels["subtypes"].get)
    assert first.startswith(label.split(" + ")[0] + ":")
  text = summary.message([view], 0, points, "a phantom", False)
  assert f"**{label}**" in text and summary.table([view], False)[0][-1] == label
