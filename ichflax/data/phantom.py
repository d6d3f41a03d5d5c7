"""Synthetic head-CT slices in Hounsfield units, with hemorrhages drawn by subtype.

Why: the RSNA data cannot be downloaded here, so the whole real path (DICOM -> HU -> windows ->
TFDS -> training -> serving) runs on RSNA-format files we generate. To make a model look at shape
and place rather than brightness, fresh blood (50-90 HU) overlaps grey matter plus noise, and
normal slices carry their own bright structures (falx, venous sinus, calcifications, a thin
partial-volume band under the skull). Accuracy on phantom data says nothing about real scans.

Geometry works in "head units": rho = 1 at the inner table of the skull, phi the angle around
the head centre; image y grows towards the back of a supine patient, so blood layers at large y.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ichflax import parallel, tasks
from ichflax.data import ct_writer, image
from ichflax.data.items import SliceGeometry

EPIDURAL, INTRAPARENCHYMAL, INTRAVENTRICULAR, SUBARACHNOID, SUBDURAL = range(5)
FIELD_OF_VIEW_MM = 230.0
SLICE_MM = 5.0
IMAGES_DIR = "stage_2_train"
CSV_NAME = "stage_2_train.csv"
# The seed's source set (Kaggle "rsna_stage1_png_128"): grey 128 px PNGs beside the stage 1 CSV.
PNG_IMAGES_DIR = "stage_1_train_images"
PNG_CSV_NAME = "stage_1_train.csv"
PNG_SIZE = 128
# Written beside the data so every dataset built from it says it is synthetic.
MARKER = "SYNTHETIC_PHANTOM.txt"
# Hemorrhage pairs that occur together in real scans, for slices with two subtypes.
_SECOND = {EPIDURAL: (SUBDURAL, SUBARACHNOID), INTRAPARENCHYMAL: (INTRAVENTRICULAR, SUBARACHNOID),
           INTRAVENTRICULAR: (INTRAPARENCHYMAL, SUBARACHNOID), SUBARACHNOID: (SUBDURAL,
           INTRAPARENCHYMAL), SUBDURAL: (SUBARACHNOID, EPIDURAL)}


@dataclasses.dataclass(frozen=True)
class Anatomy:
  """One synthetic patient's head: shared by every slice of a study."""

  center: tuple[float, float]  # image coords in [-1, 1]
  angle: float  # in-plane rotation, radians
  half_axes: tuple[float, float]  # inner-table semi-axes (left-right, front-back), image units
  harmonics: np.ndarray  # (3, 2): amplitude and phase of shape harmonics k = 2, 3, 4
  skull: float  # skull thickness in head units
  sulci: int  # number of sulci around the brain
  sulcus_phase: float
  ventricle: float  # lateral ventricle scale (atrophy widens it)
  noise: float  # HU standard deviation
  falx_hu: float  # the falx is dense dura: a bright midline line in normal slices
  calcified: bool  # choroid plexus / pineal calcification

  @classmethod
  def sample(cls, rng: np.random.Generator) -> Anatomy:
    return cls(
        center=tuple(rng.uniform(-0.08, 0.08, 2)),
        angle=float(rng.uniform(-0.3, 0.3)),
        half_axes=(float(rng.uniform(0.58, 0.7)), float(rng.uniform(0.72, 0.84))),
        harmonics=np.stack([rng.uniform(0, 0.03, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1),
        skull=float(rng.uniform(0.06, 0.1)),
        sulci=int(rng.integers(14, 24)),
        sulcus_phase=float(rng.uniform(0, 2 * np.pi)),
        ventricle=float(rng.uniform(0.8, 1.4)),
        noise=float(rng.uniform(3.0, 7.0)),
        falx_hu=float(rng.uniform(45.0, 75.0)),
        calcified=bool(rng.random() < 0.5))


@dataclasses.dataclass(frozen=True)
class PhantomSlice:
  """One slice: HU image, the six RSNA labels, and where the blood is (for Grad-CAM tests)."""

  hu: np.ndarray  # float32 (S, S)
  labels: np.ndarray  # int32 (6,)
  mask: np.ndarray  # bool (S, S): planted blood


@dataclasses.dataclass
class _Frame:
  """Per-pixel head coordinates of one slice."""

  y: np.ndarray  # image y in [-1, 1] (towards the back of the head: gravity)
  u: np.ndarray  # head left-right, head units
  v: np.ndarray  # head front-back, head units
  rho: np.ndarray  # 1 at the inner table
  phi: np.ndarray
  px: float  # one pixel in head units
  anatomy: Anatomy

  def box(self, cu: float, cv: float, radius: float) -> tuple[slice, slice]:
    """Pixel rows/columns that hold everything within `radius` head units of (cu, cv)."""
    a, size = self.anatomy, self.rho.shape[0]
    c, s = np.cos(a.angle), np.sin(a.angle)
    pu, pv = cu * a.half_axes[0], cv * a.half_axes[1]
    x, y = a.center[0] + c * pu - s * pv, a.center[1] + s * pu + c * pv
    r = radius * max(a.half_axes) + 4.0 / size
    def to_px(t):
      return int(np.clip(np.round((t + 1) / 2 * (size - 1)), 0, size))
    return slice(to_px(y - r), to_px(y + r) + 1), slice(to_px(x - r), to_px(x + r) + 1)


def _frame(size: int, a: Anatomy) -> _Frame:
  lin = np.linspace(-1, 1, size, dtype=np.float32)
  y, x = np.meshgrid(lin, lin, indexing="ij")
  dx, dy = x - a.center[0], y - a.center[1]
  c, s = np.cos(a.angle), np.sin(a.angle)
  u = (c * dx + s * dy) / a.half_axes[0]
  v = (-s * dx + c * dy) / a.half_axes[1]
  phi = np.arctan2(v, u)
  wobble = sum(amp * np.cos(k * phi + ph) for k, (amp, ph) in zip((2, 3, 4), a.harmonics))
  return _Frame(y, u, v, np.hypot(u, v) / (1 + wobble), phi, 2.0 / size / min(a.half_axes), a)


def _ramp(d: np.ndarray, px: float) -> np.ndarray:
  """Soft inside-ness of a signed distance d (> 0 inside): partial volume over ~1.5 pixels."""
  return np.clip(d / (1.5 * px) + 0.5, 0.0, 1.0)


def _angle_to(phi: np.ndarray, phi0: float) -> np.ndarray:
  return (phi - phi0 + np.pi) % (2 * np.pi) - np.pi


def _ellipse(f: _Frame, cu: float, cv: float, ru: float, rv: float, tilt: float) -> np.ndarray:
  c, s = np.cos(tilt), np.sin(tilt)
  rows, cols = f.box(cu, cv, max(ru, rv))
  du, dv = f.u[rows, cols] - cu, f.v[rows, cols] - cv
  q = np.hypot((c * du + s * dv) / ru, (-s * du + c * dv) / rv)
  out = np.zeros_like(f.rho)
  out[rows, cols] = _ramp((1 - q) * min(ru, rv), f.px)
  return out


def _ventricles(f: _Frame, a: Anatomy, level: float) -> np.ndarray:
  """Lateral ventricles (frontal horns and atria, diverging forwards and backwards), third."""
  scale = a.ventricle * (0.35 + 0.65 * np.sin(np.pi * level))
  out = _ellipse(f, 0.0, 0.08 * scale, 0.018 * scale, 0.07 * scale, 0.0)
  for side in (-1, 1):
    out = np.maximum(out, _ellipse(f, side * 0.1 * scale, -0.12 * scale, 0.04 * scale,
                                   0.16 * scale, side * 0.35))
    out = np.maximum(out, _ellipse(f, side * 0.14 * scale, 0.16 * scale, 0.045 * scale,
                                   0.15 * scale, -side * 0.4))
  return out


def _normal(f: _Frame, a: Anatomy, level: float, rng: np.random.Generator):
  """A normal slice in HU, plus the sulcal CSF and ventricle masks that bleeds fill."""
  rho, phi, px = f.rho, f.phi, f.px
  hu = np.full(rho.shape, -1000.0, np.float32)
  outer = 1 + a.skull
  scalp = _ramp(outer + 0.09 - rho, px)
  fat = _ramp(0.01 - np.abs(rho - outer - 0.04), px)  # skin and muscle around subcutaneous fat
  hu += scalp * (1000 + rng.uniform(20, 50) - 130 * fat)
  depth = np.clip((rho - 1) / a.skull, 0, 1)
  bone = 1500 - 900 * np.sin(np.pi * depth) ** 2  # dense tables, softer diploe
  skull = _ramp(outer - rho, px) * _ramp(rho - 1, px)
  hu = hu * (1 - skull) + bone * skull
  # Brain: grey matter cortex folding into white matter, CSF rim under the skull.
  inside = _ramp(1 - rho, px)
  gm_depth = 0.84 + 0.03 * np.sin(a.sulci * phi + a.sulcus_phase)
  white = _ramp(gm_depth - rho, px)
  brain = 36.0 + rng.uniform(-3, 3) - (8.0 + rng.uniform(-2, 2)) * white
  csf = np.float32(rng.uniform(2, 10))
  rim = _ramp(rho - 0.975, px)
  # Sulci: radial grooves at irregular angles and of varied depth.
  warped = phi + 0.12 * np.sin(3 * phi + a.sulcus_phase) + 0.015 * np.sin(12 * rho + 3 * phi)
  half_n = 0.5 * a.sulci  # sin(m * phi) is zero every pi / m: arc distance ~ rho |sin| / m
  depth = 0.8 + 0.05 * np.cos(7 * phi + a.sulcus_phase) + 0.04 * np.sin(11 * phi)
  sulci = _ramp(0.012 - np.abs(np.sin(half_n * warped)) * rho / half_n, px) * _ramp(rho - depth, px)
  fissure = _ramp(0.015 - np.abs(f.u), px) * _ramp(np.abs(f.v) - 0.35, px)
  csf_mask = np.maximum(np.maximum(rim, sulci), fissure) * inside
  ventricles = _ventricles(f, a, level) * inside
  tissue = brain * (1 - csf_mask) + csf * csf_mask
  tissue = tissue * (1 - ventricles) + csf * ventricles
  # Normal hyperdense structures: falx, superior sagittal sinus, calcifications, partial volume.
  falx = _ramp(0.005 - np.abs(f.u), px) * _ramp(np.abs(f.v) - 0.4, px)
  tissue = tissue * (1 - falx) + a.falx_hu * falx
  sinus = _ellipse(f, 0.0, 0.95, 0.05, 0.04, 0.0)
  tissue = tissue * (1 - sinus) + rng.uniform(50, 70) * sinus
  if a.calcified:
    scale = a.ventricle * (0.35 + 0.65 * np.sin(np.pi * level))
    for side in (-1, 1):  # choroid plexus in the atria, pineal behind the third ventricle
      if rng.random() < 0.8:
        dot = _ellipse(f, side * 0.14 * scale, 0.22 * scale, 0.02, 0.03, side * 0.5)
        tissue = tissue * (1 - dot) + rng.uniform(90, 250) * dot
    pineal = _ellipse(f, 0.0, 0.2 * scale, 0.018, 0.018, 0.0)
    tissue = tissue * (1 - pineal) + rng.uniform(100, 300) * pineal
  if rng.random() < 0.4:
    band = _ramp(rho - 0.985, px) * (np.cos(_angle_to(phi, rng.uniform(-np.pi, np.pi))) > 0.6)
    tissue = tissue + band * inside * rng.uniform(20, 50)
  hu = hu * (1 - inside) + tissue * inside
  return hu, sulci * inside, ventricles


def _blood(rng: np.random.Generator) -> float:
  return float(rng.uniform(50, 90))


def _epidural(f: _Frame, rng) -> np.ndarray:
  """Biconvex lens against the inner table, bounded (it does not cross sutures)."""
  half = rng.uniform(0.25, 0.5)
  t = rng.uniform(0.08, 0.17) * np.clip(1 - (_angle_to(f.phi, rng.uniform(-np.pi, np.pi))
                                              / half) ** 2, 0, None)
  return _ramp(f.rho - (1 - t), f.px) * _ramp(1 - f.rho, f.px) * (t > 0)


def _subdural(f: _Frame, rng) -> np.ndarray:
  """Crescent along the inner table: long and thin, concave towards the brain."""
  half = rng.uniform(0.7, 1.4)
  d = np.abs(_angle_to(f.phi, rng.uniform(-np.pi, np.pi))) / half
  t = rng.uniform(0.025, 0.07) * np.sqrt(np.clip(1 - d ** 3, 0, None))
  return _ramp(f.rho - (1 - t), f.px) * _ramp(1 - f.rho, f.px) * (t > 0)


def _subarachnoid(f: _Frame, sulci: np.ndarray, rng) -> np.ndarray:
  """Thin hyperdense streaks: blood in the sulci of one or two sectors, sometimes the fissure."""
  sector = np.zeros_like(f.rho)
  for _ in range(int(rng.integers(1, 3))):
    sector = np.maximum(sector, np.cos(_angle_to(f.phi, rng.uniform(-np.pi, np.pi)))
                        > np.cos(rng.uniform(0.5, 1.1)))
  out = sulci * sector
  if rng.random() < 0.4:
    side = rng.choice((-1, 1))
    bend = 0.15 * (np.abs(f.u) - 0.3) ** 2 * rng.uniform(-3, 3)
    out = np.maximum(out, _ramp(0.008 - np.abs(f.v + bend), f.px) * _ramp(np.abs(f.u) - 0.35, f.px)
                     * _ramp(0.8 - np.abs(f.u), f.px) * (side * f.u > 0))  # sylvian fissure
  return out


def _intraparenchymal(f: _Frame, ventricles: np.ndarray, rng):
  """Irregular blob in the parenchyma, sometimes with a hypodense rim of oedema."""
  for _ in range(20):
    r0, p0 = rng.uniform(0.2, 0.65), rng.uniform(-np.pi, np.pi)
    cu, cv = r0 * np.cos(p0), r0 * np.sin(p0)
    size = rng.uniform(0.07, 0.17)
    du, dv = f.u - cu, f.v - cv
    theta = np.arctan2(dv, du)
    edge = size * (1 + sum(rng.uniform(0, 0.18) * np.cos(k * theta + rng.uniform(0, 6.3))
                           for k in (2, 3, 5)))
    dist = np.hypot(du, dv)
    blob = _ramp(edge - dist, f.px)
    if (blob * ventricles).sum() < 0.1 * blob.sum():
      break
  oedema = _ramp(edge * rng.uniform(1.3, 1.7) - dist, f.px) * (rng.random() < 0.6)
  return blob, oedema


def _intraventricular(f: _Frame, ventricles: np.ndarray, rng) -> np.ndarray:
  """Blood in the ventricles, layering under gravity: a horizontal fluid level in the image."""
  ys = f.y[ventricles > 0.5]
  level = np.quantile(ys, rng.uniform(0.0, 0.7)) if ys.size else 0.0
  return ventricles * _ramp(f.y - level, f.px * 0.5)


def sample_subtypes(rng: np.random.Generator, normal_fraction: float = 1 / 3,
                    second_fraction: float = 0.2) -> tuple[int, ...]:
  """Subtypes of one slice: none, one, or sometimes two that occur together in real scans."""
  if rng.random() < normal_fraction:
    return ()
  first = int(rng.integers(5))
  if rng.random() < second_fraction:
    return (first, int(rng.choice(_SECOND[first])))
  return (first,)


def make_slice(rng: np.random.Generator, size: int = 256, subtypes: tuple[int, ...] = (),
               anatomy: Anatomy | None = None, level: float | None = None) -> PhantomSlice:
  """One synthetic axial slice with the given subtypes (indices into tasks.SUBTYPES)."""
  a = anatomy or Anatomy.sample(rng)
  level = rng.uniform(0.25, 0.85) if level is None else level
  if INTRAVENTRICULAR in subtypes:
    level = max(level, 0.35)  # keep the ventricles large enough to hold blood
  f = _frame(size, a)
  hu, sulci, ventricles = _normal(f, a, level, rng)
  blood = np.zeros_like(hu)
  for kind in subtypes:
    if kind == EPIDURAL:
      alpha = _epidural(f, rng)
    elif kind == SUBDURAL:
      alpha = _subdural(f, rng)
    elif kind == SUBARACHNOID:
      alpha = _subarachnoid(f, sulci, rng)
    elif kind == INTRAVENTRICULAR:
      alpha = _intraventricular(f, ventricles, rng)
    elif kind == INTRAPARENCHYMAL:
      alpha, oedema = _intraparenchymal(f, ventricles, rng)
      hu = hu - 12 * oedema * (1 - alpha)
    else:
      raise ValueError(f"unknown subtype index {kind}: use 0..4 ({', '.join(tasks.SUBTYPES)})")
    hu = hu * (1 - alpha) + _blood(rng) * alpha
    blood = np.maximum(blood, alpha)
  noise = rng.standard_normal(hu.shape).astype(np.float32)
  noise = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1)) / np.sqrt(3)  # scanner texture
  hu = np.clip(hu + a.noise * noise, -1024, 3071).astype(np.float32)
  labels = np.zeros(6, np.int32)
  labels[list(subtypes)] = 1
  labels[tasks.ANY] = int(bool(subtypes))
  return PhantomSlice(hu, labels, blood > 0.5)


def _uid(*parts) -> str:
  """A stable RSNA-style identifier, 'ID_' + hex, from the generator's seed and position."""
  return "ID_" + hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=5).hexdigest()


def _write_study(out: Path, seed: int, size: int, png_size: int | None,
                 job: tuple[int, int]) -> list[tuple]:
  """Generate and write one study (index, slice count); returns (image_id, labels) CSV rows.

  png_size: write each slice as a grey PNG of that side (the brain window) instead of a DICOM.
  """
  study, count = job
  rng = np.random.default_rng([seed, study])
  a = Anatomy.sample(rng)
  encoding = rng.choice(ct_writer.ENCODINGS, p=[0.75, 0.2, 0.05])
  study_uid, series_uid = _uid(seed, study, "study"), _uid(seed, study, "series")
  patient = _uid(seed, study, "patient")
  scan_circle = np.hypot(*np.meshgrid(*2 * [np.linspace(-1, 1, size)])) > 1.0
  rows = []
  for i in range(count):
    s = make_slice(rng, size, sample_subtypes(rng), a, level=(i + 0.5) / count)
    image_id = _uid(seed, study, i)[:12]
    rows.append((image_id, s.labels))
    if png_size:
      grey = image.slice_to_uint8(np.where(scan_circle, image.AIR_FILL_HU, s.hu),
                                  image.ONE_WINDOW, png_size)
      Image.fromarray(grey[..., 0]).save(out / f"{image_id}.png")
      continue
    geo = SliceGeometry(image_id, study_uid, series_uid, i + 1, SLICE_MM * i)
    ct_writer.write_ct(out / f"{image_id}.dcm", s.hu, geo, patient_id=patient,
                       pixel_spacing=FIELD_OF_VIEW_MM / size, encoding=str(encoding),
                       padding=scan_circle)
  return rows


def write_rsna(out: str | os.PathLike, num: int, seed: int = 0, size: int = 256,
               workers: int | None = None, png_size: int | None = None) -> Path:
  """Write `num` slices as RSNA-format data: `stage_2_train/*.dcm` and `stage_2_train.csv`.

  png_size (e.g. 128): the seed's PNG layout instead, `stage_1_train_images/ID_*.png` (grey,
  brain window, png_size px) and `stage_1_train.csv`, as the paper's code read it.

  Slices come in synthetic studies of 4-12 slices (one patient each), so a split by study is
  a real split. Deterministic for a given seed whatever the number of workers.
  """
  if num < 1:
    raise ValueError(f"--num must be at least 1, got {num}")
  out = Path(out)
  images, csv_name = (PNG_IMAGES_DIR, PNG_CSV_NAME) if png_size else (IMAGES_DIR, CSV_NAME)
  (out / images).mkdir(parents=True, exist_ok=True)
  sizes = []
  rng = np.random.default_rng(seed)
  while sum(sizes) < num:
    sizes.append(int(min(rng.integers(4, 13), num - sum(sizes))))
  write = functools.partial(_write_study, out / images, seed, size, png_size)
  studies = parallel.map_ordered(write, list(enumerate(sizes)), workers=workers, desc="phantom",
                                 unit="studies")
  rows = [row for study in studies for row in study]
  (out / MARKER).write_text(f"Synthetic head-CT phantom made by ichflax.data.phantom (seed "
                            f"{seed}, {num} slices, {size} px). No real patient data.\n")
  with open(out / csv_name, "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(("ID", "Label"))
    for image_id, labels in rows:
      w.writerows((f"{image_id}_{name}", int(y)) for name, y in zip(tasks.LABELS, labels))
  return out
