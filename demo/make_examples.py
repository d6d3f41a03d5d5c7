"""Writes demo/examples/: phantom slices as DICOM (one per subtype + a normal one), a zipped
series, and one PNG. `python -m demo.make_examples` — deterministic, so a re-run changes nothing.

Made by the project's own phantom (ichflax.data.phantom): synthetic, no patient ever involved.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from demo.callbacks import EXAMPLES_DIR
from ichflax import tasks
from ichflax.data import ct_writer, image, items, phantom

SIZE = 256
SEED = 2026
SERIES = 8
_FIXED_TIME = (2026, 1, 1, 0, 0, 0)  # zip entries carry a date: pin it so files are reproducible


def _geometry(name: str, index: int, study: str) -> items.SliceGeometry:
  return items.SliceGeometry(f"ID_{name}", f"ID_{study}_study", f"ID_{study}_series", index + 1,
                             phantom.SLICE_MM * index)


def write(out: Path = EXAMPLES_DIR) -> list[Path]:
  """Writes every example; returns their paths."""
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(SEED)
  anatomy = phantom.Anatomy.sample(rng)
  written = []
  for i, name in enumerate((*tasks.SUBTYPES, "normal")):
    subtypes = () if name == "normal" else (tasks.SUBTYPES.index(name),)
    s = phantom.make_slice(rng, SIZE, subtypes, anatomy, level=0.55)
    path = out / f"{name}.dcm"
    ct_writer.write_ct(path, s.hu, _geometry(name, i, "examples"), patient_id="PHANTOM-EXAMPLE",
                       pixel_spacing=phantom.FIELD_OF_VIEW_MM / SIZE)
    written.append(path)
    if name == "subdural":
      png = out / "subdural.png"
      Image.fromarray(image.slice_to_uint8(s.hu, image.THREE_WINDOWS, SIZE)).save(png)
      written.append(png)
  written.append(_series(out / "series.zip", rng))
  return written


def _series(path: Path, rng: np.random.Generator) -> Path:
  """A small study: a subdural bleed on the middle slices, slices zipped out of order."""
  anatomy = phantom.Anatomy.sample(rng)
  with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path, "w") as zf:
    for i in rng.permutation(SERIES):
      subtypes = (tasks.SUBTYPES.index("subdural"),) if 2 <= i < 6 else ()
      s = phantom.make_slice(rng, SIZE, subtypes, anatomy, level=(i + 0.5) / SERIES)
      slice_path = Path(tmp) / f"slice_{i:02d}.dcm"
      ct_writer.write_ct(slice_path, s.hu, _geometry(f"series{i:02d}", int(i), "series"),
                         patient_id="PHANTOM-EXAMPLE",
                         pixel_spacing=phantom.FIELD_OF_VIEW_MM / SIZE)
      zf.writestr(zipfile.ZipInfo(slice_path.name, _FIXED_TIME), slice_path.read_bytes(),
                  zipfile.ZIP_DEFLATED)
  return path


if __name__ == "__main__":
  for p in write():
    print(p.relative_to(EXAMPLES_DIR.parent.parent))
