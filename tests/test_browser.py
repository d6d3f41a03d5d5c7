"""End to end in real headless Chromium: open the page, upload a DICOM, wait for the result.

Debian's chromium (`/usr/bin/chromium`, or $ICHFLAX_CHROMIUM) driven by Playwright for Python
through `executable_path`: no browser download. The screenshot goes to docs/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_app import IDENTITY, ROOT, SHIPPED, identified_dicom, real_like, server  # noqa: F401
from test_dicom import _gdcm
from test_predictor import bad_files, write_dicom  # noqa: F401
from test_sources import enhanced_ct, phantom_volume, write_nifti

from bench import pictures, screenshot
from demo import uploads

pytest.importorskip("playwright.sync_api")

CHROMIUM = screenshot.chromium()
SCREENSHOT = ROOT / "docs" / "screenshots" / "e2e_latest.png"
RESULT_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def page(tmp_path_factory):
  if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package "
                "(apt-get install -y chromium) or set ICHFLAX_CHROMIUM to a Chromium binary")
  with screenshot.browser_page(tmp_path_factory.mktemp("profile")) as page:
    yield page


def test_upload_dicom_and_see_the_result(server, page, identified_dicom, bad_files):
  page.goto(server.url)
  assert "not a medical device" in page.locator("#notice").inner_text()
  page.locator("#upload input[type=file]").set_input_files(str(identified_dicom))
  page.locator("#message", has_text="Latency").wait_for(timeout=RESULT_TIMEOUT_MS)
  assert "hemorrhage" in page.locator("#hemorrhage").inner_text()
  for panel in ("overlay", "window-brain", "window-subdural", "window-bone"):
    src = page.locator(f"#{panel} img").first.get_attribute("src")
    assert src and src.startswith("data:image/png;base64,"), panel
  body = page.locator("body").inner_text()
  assert not [tag for tag, value in IDENTITY.items() if value in body]  # tags never shown
  SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
  page.screenshot(path=str(SCREENSHOT), full_page=True)
  # A bad file afterwards: a message in the page, and the page keeps working.
  page.locator("#upload input[type=file]").set_input_files(str(bad_files / "notes.txt"))
  page.locator("#message", has_text="Nothing could be analysed").wait_for(
      timeout=RESULT_TIMEOUT_MS)
  assert "Traceback" not in page.locator("body").inner_text()


def test_example_is_one_click_away(server, page):
  page.goto(server.url)
  page.get_by_text("A series of 8 slices (zip)").click()
  page.locator("#message", has_text="slice").wait_for(timeout=RESULT_TIMEOUT_MS)
  page.locator("#table").wait_for(state="visible", timeout=RESULT_TIMEOUT_MS)
  assert page.locator("#table").get_by_text("slice_07.dcm").count() == 1


def test_compressed_multiframe_and_nifti_uploads_work(server, page, tmp_path):
  """JPEG Lossless SV1 (the commonest PACS export), an Enhanced CT multi-frame, a .nii.gz."""
  volume = phantom_volume(size=128)
  plain = write_dicom(tmp_path / "plain.dcm", volume[0])
  uploads = {"sv1.dcm": _gdcm("JPEGLosslessProcess14_1")(plain, tmp_path / "sv1.dcm"),
             "enhanced.dcm": enhanced_ct(tmp_path / "enhanced.dcm", volume),
             "head.nii.gz": write_nifti(tmp_path / "head.nii.gz", volume)}
  page.goto(server.url)
  for name, path in uploads.items():
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.locator("#message", has_text=name).wait_for(timeout=RESULT_TIMEOUT_MS)
    text = page.locator("#message").inner_text()
    assert "Latency" in text and "Skipped" not in text, name
    assert page.locator("#window-brain img").first.get_attribute("src").startswith("data:image")
    if name != "sv1.dcm":  # a volume is a series: the table lists its slices
      assert page.locator("#table").get_by_text(f"{name} [slice 4]").count() == 1, name


def test_out_of_domain_upload_is_withheld_then_revealed_on_request(server, page, real_like):
  page.goto(server.url)
  page.locator("#upload input[type=file]").set_input_files(str(real_like))
  message = page.locator("#message", has_text="Out of domain")
  message.wait_for(timeout=RESULT_TIMEOUT_MS)
  assert "synthetic phantom" in message.inner_text() and "withheld" in message.inner_text()
  assert "%" not in page.locator("#hemorrhage").inner_text()  # no probability on the page
  page.locator("#reveal input[type=checkbox]").check()
  page.locator("#message", has_text="unreliable").wait_for(timeout=RESULT_TIMEOUT_MS)
  page.locator("#hemorrhage", has_text="%").wait_for(timeout=RESULT_TIMEOUT_MS)


@pytest.fixture(scope="module")
def three_cases(tmp_path_factory) -> dict[str, Path]:
  """Fresh phantom DICOM slices the shipped model judges (status ok): the most likely bleed,
  the least likely, and the one just over its hemorrhage threshold (the smallest margin)."""
  from ichflax.serving import predictor as predictor_lib
  from ichflax.trust import verdict
  out = tmp_path_factory.mktemp("cases")
  paths = [write_dicom(out / f"case_{i:02d}.dcm", hu, i) for i, hu in
           enumerate(pictures.phantom_hu(seed=77, subjects=5, levels=5, size=256))]
  p = predictor_lib.Predictor.from_checkpoint(SHIPPED)
  t = p.thresholds["any"]
  judged = [(r.probabilities["any"], path) for r, path in zip(p.predict(paths, gradcam_on=False),
                                                             paths) if r.status == verdict.OK]
  over = [j for j in judged if j[0] >= t]
  assert over and len(over) < len(judged), (t, judged)  # both answers among them
  return {"positive": max(judged)[1], "negative": min(judged)[1], "just over": min(over)[1]}


PANEL_LINE = re.compile(r"^(hemorrhage|[a-z]+): P (\d\.\d\d) (≥|<) (?:threshold )?(\d\.\d\d)$")


def _panel(text: str) -> dict[str, tuple[float, bool]]:
  """{output: (probability, over its threshold)} from a panel's lines."""
  out = {}
  for line in text.splitlines():
    m = PANEL_LINE.match(line.strip())
    if m:
      out[m[1]] = (float(m[2]), m[3] == "≥")
  return out


@pytest.mark.parametrize("case", ["positive", "negative", "just over"])
def test_headline_and_panels_give_one_answer(server, page, three_cases, case):
  """What the headline says is what the bars say: hemorrhage when its bar is over its
  threshold, every subtype whose bar is over named, the same probability in both."""
  page.goto(server.url)
  page.locator("#upload input[type=file]").set_input_files(str(three_cases[case]))
  page.locator("#message", has_text="Latency").wait_for(timeout=RESULT_TIMEOUT_MS)
  headline = page.locator("#message").inner_text().splitlines()[0]
  bleed = _panel(page.locator("#hemorrhage").inner_text())
  subtypes = _panel(page.locator("#subtypes").inner_text())
  (p, over), = bleed.values()
  assert f"hemorrhage probability {p:.2f}" in headline, (headline, bleed)
  label = re.match(r"^(.+?) — hemorrhage probability", headline)[1]
  if not over:
    assert label == "no hemorrhage", (case, headline, bleed)
    return
  named = {k for k, (_, o) in subtypes.items() if o}
  assert set(label.split(" + ")) == (named or {"hemorrhage"}), (case, headline, subtypes)


def test_screenshot_command_draws_the_limits_the_code_enforces(server, page, tmp_path):
  """bench/screenshot.py regenerates the README's picture; the limit the page states is the
  one the upload code and Gradio's server enforce."""
  import httpx
  from PIL import Image
  out = tmp_path / "demo.png"
  text = screenshot.shoot(page, server.url, out)
  assert Image.open(out).size[0] == screenshot.VIEWPORT["width"]
  assert f"{uploads.MAX_SLICES:,} slices, {uploads.MAX_UPLOAD_MB} MB per file" in text
  assert httpx.get(server.url + "config").json()["max_file_size"] == uploads.MAX_UPLOAD_MB * 2**20
