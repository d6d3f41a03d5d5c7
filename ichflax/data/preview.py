"""Contact sheet of the anatomy-based synthetic CT (`python -m ichflax.data preview`).

Levels of a healthy subject (skull base, posterior fossa, ventricles, vertex) and the slice
with most blood of each subtype (epidural and subdural: of the supratentorial slices), brain
window 40/80; then one subdural window (80/200) and one bone window (600/2800).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ichflax import tasks
from ichflax.data import image, synth

SIZE = 512
EXTRA_AXIAL = (synth.EPIDURAL, synth.SUBDURAL)


def _scanner(rng) -> synth.Scanner:
  return synth.Scanner(230.0, 5.0, "soft", float(rng.uniform(3, 6)), 0.8, 0.0, 0.04, "int16")


def sheet(seed: int, size: int = SIZE) -> tuple[np.ndarray, float]:
  """(grey uint8 sheet, slices per second of the renders)."""
  rng = np.random.default_rng(seed)
  tiles, rendered, start = [], 0, time.perf_counter()
  healthy = synth.make_subject(rng, ())
  lo, hi = healthy.z_range
  for name, frac in (("skull base", 0.08), ("posterior fossa", 0.22), ("ventricles", 0.5),
                     ("vertex", 0.85)):
    s = synth.render_slice(healthy, _scanner(rng), lo + frac * (hi - lo), size, rng)
    tiles.append((name, image.window(s.hu, 40, 80)))
    rendered += 1
  for kind, name in enumerate(tasks.SUBTYPES):
    subject = synth.make_subject(rng, (kind,))
    slices, _ = synth.render_series(subject, _scanner(rng), size, rng)
    rendered += len(slices)
    # Extra-axial bleeds are read above the tentorium (the lowest 30 % is the skull base and
    # posterior fossa): the supratentorial slice with most of the bleed.
    pool = slices[int(0.3 * len(slices)):] if kind in EXTRA_AXIAL else slices
    best = max(pool, key=lambda s: ((s.subtypes >> kind) & 1).sum())
    tiles.append((name, image.window(best.hu, 40, 80)))
    if kind == synth.SUBDURAL:
      tiles.append(("subdural 80/200", image.window(best.hu, 80, 200)))
  base = synth.render_slice(healthy, _scanner(rng), lo + 0.1 * (hi - lo), size, rng)
  tiles.append(("bone 600/2800", image.window(base.hu, 600, 2800)))
  rendered += 1
  rate = rendered / (time.perf_counter() - start)
  images = []
  for name, grey in tiles:
    im = Image.fromarray(grey).resize((256, 256), Image.Resampling.BILINEAR)
    ImageDraw.Draw(im).text((4, 4), name, fill=255)
    images.append(np.asarray(im))
  images += [np.zeros_like(images[0])] * (-len(images) % 4)
  rows = [np.concatenate(images[i:i + 4], axis=1) for i in range(0, len(images), 4)]
  return np.concatenate(rows, axis=0), rate


def write(out: Path, seed: int = 0, size: int = SIZE) -> float:
  """Writes the sheet as a PNG; returns the renders' slices per second."""
  grey, rate = sheet(seed, size)
  out.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(grey).save(out)
  return rate
