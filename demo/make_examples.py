"""Writes demo/examples/: anatomy-based phantom slices as DICOM (one per subtype + a normal one),
a zipped series, two PNG exports (3-window RGB and a grey brain window), and `truth.json`, the
true labels the page shows beside the answer. `python -m demo.make_examples` — deterministic.

Made by ichflax's own generator (ichflax.data.synth) from subjects drawn with a seed the
training data never uses: held-out synthetic heads, no patient ever involved.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from demo.callbacks import EXAMPLES_DIR, TRUTH_FILE
from ichflax import tasks
from ichflax.data import ct_writer, image, items, synth

SIZE = 512
SEED = 2026  # training sets use write_rsna's [seed, series, 25] streams: never this one
SERIES = 8
_FIXED_TIME = (2026, 1, 1, 0, 0, 0)  # zip entries carry a date: pin it so files are reproducible
# Extra-axial bleeds are shown above the tentorium (the lowest 30 % of a series).
_SUPRATENTORIAL = {synth.EPIDURAL, synth.SUBDURAL}


def _scanner(rng) -> synth.Scanner:
  """A routine soft-kernel head protocol at 5 mm, as most RSNA series."""
  return synth.Scanner(230.0, 5.0, "soft", float(rng.uniform(3.5, 4.5)), 0.8, 0.0, 0.04, "int16")


def _names(labels: np.ndarray) -> list[str]:
  return [n for n, y in zip(tasks.SUBTYPES, labels[:5]) if y]


def _write(path: Path, s: synth.SynthSlice, index: int, study: str, scanner) -> None:
  geo = items.SliceGeometry(f"ID_{path.stem}", f"ID_{study}_study", f"ID_{study}_series",
                            index + 1, scanner.slice_mm * index)
  ct_writer.write_ct(path, s.hu, geo, patient_id="PHANTOM-EXAMPLE",
                     pixel_spacing=scanner.fov_mm / SIZE)


def _pick(slices: list[synth.SynthSlice], kind: int | None) -> int:
  """The slice with most of this subtype's blood (a mid-level slice for the normal one)."""
  if kind is None:
    return int(0.55 * len(slices))
  start = int(0.3 * len(slices)) if kind in _SUPRATENTORIAL else 0
  area = [((s.subtypes >> kind) & 1).sum() for s in slices[start:]]
  return start + int(np.argmax(area))


def write(out: Path = EXAMPLES_DIR) -> list[Path]:
  """Writes every example and the truth file; returns their paths."""
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(SEED)
  truth, written = {}, []
  for i, name in enumerate((*tasks.SUBTYPES, "normal")):
    kind = None if name == "normal" else tasks.SUBTYPES.index(name)
    subject = synth.make_subject(rng, () if kind is None else (kind,))
    scanner = _scanner(rng)
    slices, _ = synth.render_series(subject, scanner, SIZE, rng)
    s = slices[_pick(slices, kind)]
    path = out / f"{name}.dcm"
    _write(path, s, i, "examples", scanner)
    truth[path.name] = _names(s.labels)
    written.append(path)
    if name == "subdural":  # the same slice as pictures: the app's 3 windows, a grey screenshot
      for png, windows in (("subdural.png", image.THREE_WINDOWS),
                           ("subdural_grey.png", image.ONE_WINDOW)):
        pixels = image.slice_to_uint8(s.hu, windows, 256)
        Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(out / png)
        truth[png] = truth[path.name]
        written.append(out / png)
  series = out / "series.zip"
  truth[series.name] = _series(series, rng)
  written.append(series)
  (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n")
  return [*written, out / TRUTH_FILE]


def _series(path: Path, rng: np.random.Generator) -> list[str]:
  """8 contiguous slices through a subdural bleed, zipped out of order; the union of labels."""
  subject = synth.make_subject(rng, (synth.SUBDURAL,))
  scanner = _scanner(rng)
  slices, _ = synth.render_series(subject, scanner, SIZE, rng)
  centre = _pick(slices, synth.SUBDURAL)
  start = int(np.clip(centre - SERIES // 2, 0, len(slices) - SERIES))
  run = slices[start:start + SERIES]
  with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path, "w") as zf:
    for i in rng.permutation(SERIES):
      slice_path = Path(tmp) / f"slice_{i:02d}.dcm"
      _write(slice_path, run[i], int(i), "series", scanner)
      zf.writestr(zipfile.ZipInfo(slice_path.name, _FIXED_TIME), slice_path.read_bytes(),
                  zipfile.ZIP_DEFLATED)
  return _names(np.max([s.labels for s in run], axis=0))


if __name__ == "__main__":
  for p in write():
    print(p.relative_to(EXAMPLES_DIR.parent.parent))
