"""Synthetic head CT from real anatomy and CT physics, with hemorrhages placed by anatomy.

Why: the head-unit phantom taught nothing that transfers to real scans. Here every series is a
new subject made SynthSeg-style from the MNI-derived atlas (`ichflax.data.anatomy`): random
pose (gantry tilt included), size, smooth elastic warp, atrophy, tissue HU drawn around
literature values, calcifications; bleeds are 3-D objects in that anatomy (epidural lenses
bounded by sutures, subdural crescents, sulcal/cisternal SAH, dependent IVH, IPH with oedema
and mass effect). Rendering follows the scanner: thick-slice partial volume, a kernel-shaped
noise power spectrum at random dose, bone beam hardening (streaks between dense bone), the
scan circle and a headrest. Labels per slice come from the blood actually in that slice.
Accuracy on these data says nothing about real scans by itself; they only replace the phantom.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from ichflax import parallel, tasks
from ichflax.data import anatomy as A  # noqa: N812  (the atlas labels read as A.ICV, A.FALX)
from ichflax.data import ct_writer, image, items, phantom

EPIDURAL, INTRAPARENCHYMAL, INTRAVENTRICULAR, SUBARACHNOID, SUBDURAL = range(5)
MASKS_DIR = "stage_2_masks"  # one compressed npz of per-slice subtype bitmasks per series
MIN_AREA_MM2 = 10.0  # blood of a subtype below this area in a slice is not labelled
# Subject-level subtype draw, RSNA 2019-like: SDH and SAH commonest, IPH common, IVH mostly
# with IPH, EDH rare and often with SDH; many positive studies have two or more subtypes. A
# convexity SDH spans ~2/3 of the series, so it is drawn less often than its RSNA study share to
# keep its slice share near RSNA's (measured: bench/synth_prevalence.py, docs/data.md).
_PRIMARY = np.array([0.1, 0.27, 0.12, 0.3, 0.21])
_WITH = {EPIDURAL: {SUBDURAL: 0.3, SUBARACHNOID: 0.3},
         INTRAPARENCHYMAL: {INTRAVENTRICULAR: 0.4, SUBARACHNOID: 0.35, SUBDURAL: 0.1},
         INTRAVENTRICULAR: {INTRAPARENCHYMAL: 0.5, SUBARACHNOID: 0.45},
         SUBARACHNOID: {SUBDURAL: 0.2, INTRAVENTRICULAR: 0.2, INTRAPARENCHYMAL: 0.2},
         SUBDURAL: {SUBARACHNOID: 0.35, INTRAPARENCHYMAL: 0.15, EPIDURAL: 0.05}}
# Share of slices labelled "any" in a positive subject's series (bench/synth_prevalence.py, 30
# subjects): converts a wanted slice-level positive share into a subject-level one.
IN_POSITIVE = 0.6


@dataclasses.dataclass(frozen=True)
class SynthSlice:
  """One slice: HU, the six RSNA labels, and a bitmask of where each subtype's blood is."""

  hu: np.ndarray  # float32 (S, S)
  labels: np.ndarray  # int32 (6,)
  subtypes: np.ndarray  # uint8 (S, S): bit i set where subtype i (tasks.SUBTYPES) is

  @property
  def mask(self) -> np.ndarray:
    """bool (S, S): any blood (as `phantom.PhantomSlice.mask`)."""
    return self.subtypes > 0


@dataclasses.dataclass(frozen=True)
class Scanner:
  """One series' acquisition and reconstruction."""

  fov_mm: float  # reconstruction field of view (square side)
  slice_mm: float  # thickness, also the spacing (contiguous slices)
  kernel: str  # "soft" or "bone"
  noise_hu: float  # noise SD in the brain at this dose, thickness and kernel
  nps_cutoff: float  # lp/mm where the kernel's window reaches zero
  sharpen: float  # bone kernel edge enhancement
  beam_hardening: float  # water-cm lost per (bone cm)^2 along a ray: dark streaks
  encoding: str  # ct_writer encoding

  @classmethod
  def sample(cls, rng: np.random.Generator, head_mm: float, wide: bool = False) -> Scanner:
    """Protocols of routine head CT; noise SD ~ 1/sqrt(thickness x dose), kernel-scaled.

    A soft kernel at 5 mm and routine dose gives 3-5 HU in the brain, 1 mm slices 7-12 HU;
    a bone kernel amplifies it ~5x (its passband reaches twice as far). `wide`: the held-out
    ranges a model trained on the routine ones is tested on (sim-to-sim): three times the bone
    kernels, 7 and 10 mm slices, sharper soft kernels, lower and higher dose, wider fields.
    """
    r = _WIDE if wide else _ROUTINE
    bone = rng.random() < r["bone"]
    slice_mm = float(rng.choice(r["slice_mm"], p=r["slice_p"]))
    dose = rng.uniform(*r["dose"])  # relative to a routine 300 mAs, 120 kVp head protocol
    noise = rng.uniform(3.3, 4.6) / np.sqrt(dose * slice_mm / 5.0)
    return cls(fov_mm=float(np.clip(rng.uniform(*r["fov"]), head_mm * 1.2, r["fov"][1])),
               slice_mm=slice_mm,
               kernel="bone" if bone else "soft",
               noise_hu=float(noise * (rng.uniform(4.0, 6.0) if bone else 1.0)),
               nps_cutoff=float(rng.uniform(1.6, 2.2) if bone else rng.uniform(*r["soft_cutoff"])),
               sharpen=float(rng.uniform(0.5, 1.2) if bone else 0.0),
               beam_hardening=float(rng.uniform(*r["beam_hardening"])),
               encoding=str(rng.choice(ct_writer.ENCODINGS, p=[0.75, 0.2, 0.05])))


_ROUTINE = {"bone": 0.1, "slice_mm": [1.0, 2.0, 2.5, 3.0, 5.0], "slice_p": [.05, .05, .1, .2, .6],
            "dose": (0.6, 1.4), "fov": (180, 260), "soft_cutoff": (0.6, 1.0),
            "beam_hardening": (0.02, 0.06)}
_WIDE = {"bone": 0.3, "slice_mm": [1.0, 5.0, 7.0, 10.0], "slice_p": [.15, .35, .25, .25],
         "dose": (0.3, 2.0), "fov": (160, 320), "soft_cutoff": (0.5, 1.3),
         "beam_hardening": (0.01, 0.09)}


@dataclasses.dataclass(frozen=True)
class Subject:
  """A rendered head in the atlas grid, and its pose in the scanner: one cache per series."""

  hu: np.ndarray  # float32 atlas grid
  blood: np.ndarray  # uint8 atlas grid, bit i: subtype i
  to_atlas: np.ndarray  # (3, 4): scanner mm (x image right, y image down, z up) -> atlas voxel
  warp: np.ndarray  # float32 (3, gx, gy, gz): elastic displacement (voxels), on a 24 mm grid
  pushes: tuple[tuple[np.ndarray, float, float], ...]  # mass effect: (centre voxel, amp, radius)
  z_range: tuple[float, float]  # scanner z of the skull base and the vertex
  head_mm: float  # head width
  subtypes: tuple[int, ...]


_WARP_MM = 24.0


def _hu_table(rng: np.random.Generator) -> np.ndarray:
  """Per-subject HU of each atlas label (brain labels get GM/WM/CSF mixtures instead)."""
  hu = np.zeros(len(A.LABEL_NAMES), np.float32)
  cortical = rng.uniform(1300, 1900)
  hu[A.AIR] = -1000
  hu[A.SKIN] = rng.uniform(35, 55)
  hu[A.FAT] = rng.uniform(-100, -60)
  hu[A.MUSCLE] = rng.uniform(35, 55)
  hu[A.OUTER_TABLE] = hu[A.INNER_TABLE] = cortical
  hu[A.DIPLOE] = rng.uniform(500, 900)
  hu[A.SUTURE] = rng.uniform(150, 500)  # fibrous, partly fused in adults
  hu[A.PETROUS] = rng.uniform(1600, 1950)
  hu[A.SINUS_AIR] = -1000
  hu[A.MASTOID] = rng.uniform(-600, -300)  # air cells with thin bony septa, averaged
  hu[A.ORBIT_FAT] = rng.uniform(-100, -70)
  hu[A.GLOBE] = rng.uniform(5, 15)
  hu[A.FACE_BONE] = rng.uniform(600, 1100)  # thin walls: cortex in partial volume
  hu[A.FALX] = rng.uniform(45, 70)
  hu[A.TENTORIUM] = rng.uniform(40, 60)
  hu[A.VENOUS_SINUS] = rng.uniform(40, 60)
  return hu


@functools.cache
def _atlas() -> A.Atlas:
  return A.load_atlas()


def _box(center: np.ndarray, radius: float, shape) -> tuple[slice, ...]:
  return tuple(slice(max(int(c - radius), 0), min(int(c + radius) + 2, n))
               for c, n in zip(center, shape))


def _grid(box: tuple[slice, ...]) -> tuple[np.ndarray, ...]:
  return np.ogrid[tuple(slice(b.start, b.stop) for b in box)]


def _smooth_noise(rng, shape, sigma: float) -> np.ndarray:
  """Zero-mean unit-SD smooth random field (for irregular edges and patchy blood)."""
  n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
  return n / (n.std() + 1e-6)


def _pick(rng, mask: np.ndarray) -> np.ndarray:
  idx = np.flatnonzero(mask)
  return np.array(np.unravel_index(idx[rng.integers(idx.size)], mask.shape), np.float64)


def _blood_hu(rng, density: str) -> float:
  return float({"acute": rng.uniform(55, 88), "subacute": rng.uniform(30, 45),
                "chronic": rng.uniform(5, 25)}[density])


class _Builder:
  """Places bleeds in one subject's atlas-frame volume (HU and subtype bits)."""

  def __init__(self, atlas: A.Atlas, hu: np.ndarray, csf: np.ndarray, grey: float,
               gravity: np.ndarray, rng):
    self.a, self.hu, self.csf, self.grey, self.g, self.rng = atlas, hu, csf, grey, gravity, rng
    self.blood = np.zeros(hu.shape, np.uint8)
    self.pushes: list[tuple[np.ndarray, float, float]] = []
    self.shift = np.zeros(3)

  def paint(self, kind: int, box, frac: np.ndarray, value, threshold: float = 0.5) -> None:
    h = self.hu[box]
    self.hu[box] = h * (1 - frac) + value * frac
    self.blood[box] |= np.where(frac > threshold, np.uint8(1 << kind), np.uint8(0))

  def _density(self, box, frac, base: str | None = None):
    """HU field of an extra-axial collection: acute, subacute, chronic or mixed (hematocrit)."""
    density = base or self.rng.choice(["acute", "subacute", "chronic", "mixed"],
                                      p=[0.6, 0.15, 0.12, 0.13])
    if density != "mixed":
      return np.float32(_blood_hu(self.rng, density))
    gi, gj, gk = _grid(box)
    dep = gi * self.g[0] + gj * self.g[1] + gk * self.g[2]  # along gravity (to the back)
    level = np.quantile(dep[frac > 0.5] if (frac > 0.5).any() else dep, self.rng.uniform(.3, .8))
    return np.where(dep > level, _blood_hu(self.rng, "acute"),
                    _blood_hu(self.rng, "chronic")).astype(np.float32)

  def _push(self, box, thick: np.ndarray) -> None:
    """Displace the brain under an extra-axial collection `thick` mm deep, inward.

    Brain at depth d in [0, D] moves to T + d (D - T) / D, D = T + 20 mm: the cortex is pressed
    away from the inner table and its sulci effaced (their CSF squeezed out toward cortex HU).
    Blood already placed (SAH, IPH) moves with it.
    """
    a = self.a
    depth = a.depth[box].astype(np.float32)
    zone = np.isin(a.label[box], A.INTRACRANIAL) & (thick > 0.5) & (depth < thick + 20)
    if not zone.any():
      return
    inward = np.stack(np.gradient(ndimage.gaussian_filter(depth, 1.5)))
    inward /= np.sqrt((inward ** 2).sum(0)) + 1e-6
    reach = thick + 20.0
    source = np.clip((depth - thick) * reach / np.maximum(reach - thick, 1e-3), 0, None)
    shift = np.where(zone, depth - source, 0.0)  # mm to look back outward
    grid = np.stack(np.meshgrid(*(np.arange(b.start, b.stop) for b in box), indexing="ij"))
    q = (grid - shift * inward)[:, zone]
    hu = ndimage.map_coordinates(self.hu, q, order=1)
    squeeze = (np.clip(thick / 8.0, 0, 1) * np.clip(1 - (depth - thick) / 20.0, 0, 1))[zone]
    hu += 0.8 * squeeze * np.clip(self.grey - hu, 0, 40) * (hu > -50)
    self.hu[box][zone] = hu
    self.blood[box][zone] = ndimage.map_coordinates(self.blood, q, order=0)

  def _mass(self, center, radius: float, thickness: float) -> None:
    if thickness > 8:
      side = np.sign(center[0] + self.a.origin[0]) or 1.0
      self.shift[0] += side * min(0.5 * (thickness - 8), 8.0)  # midline shift away

  def epidural(self) -> None:
    """Biconvex lens between the inner table and the dura, stopped by the sutures."""
    a, rng = self.a, self.rng
    temporal = rng.random() < 0.5
    plate = rng.choice([5, 6]) if temporal else rng.choice([1, 2, 3, 4])
    c = _pick(rng, (a.depth == 1) & (a.plate == plate) & (a.label == A.ICV))
    radius, thick = rng.uniform(18, 40), rng.uniform(5, 30)
    box = _box(c, radius + 1, a.label.shape)
    i, j, k = _grid(box)
    r2 = ((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2) / radius ** 2
    inside = (a.depth[box] > 0) & (a.plate[box] == plate)
    lens = np.clip(thick * (1 - r2), 0, None) * inside
    self._push(box, lens)
    frac = np.clip(lens - a.depth[box] + 1.0, 0, 1) * inside
    self.paint(EPIDURAL, box, frac, self._density(box, frac, "acute"))
    self._mass(c, radius, thick)

  def subdural(self) -> None:
    """Crescent over the convexity (crosses sutures, not the midline); or along falx/tentorium."""
    a, rng = self.a, self.rng
    where = rng.choice(["convexity", "falx", "tentorium"], p=[0.75, 0.15, 0.1])
    side = rng.choice([-1, 1])
    x = np.arange(a.label.shape[0])[:, None, None] + a.origin[0]
    if where == "convexity":
      c = _pick(rng, (a.depth == 1) & (a.label == A.ICV) & (side * (
          np.arange(a.label.shape[0]) + a.origin[0]) > 20)[:, None, None]
                    & (np.arange(a.label.shape[2]) + a.origin[2] > -20)[None, None, :])
      radius, thick = rng.uniform(40, 85), rng.uniform(3, 20)
      box = _box(c, radius + 1, a.label.shape)
      i, j, k = _grid(box)
      r2 = ((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2) / radius ** 2
      profile = thick * np.sqrt(np.clip(1 - r2, 0, 1))
      ok = (a.depth[box] > 0) & (side * x[box[0]] > 1.5)
      self._push(box, profile * ok)
      frac = np.clip(profile - a.depth[box] + 1.0, 0, 1) * ok
    else:
      c = _pick(rng, a.label == (A.FALX if where == "falx" else A.TENTORIUM))
      radius, thick = rng.uniform(20, 45), rng.uniform(2, 6)
      box = _box(c, radius + thick + 1, a.label.shape)
      i, j, k = _grid(box)
      r2 = ((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2) / radius ** 2
      sheet = ndimage.distance_transform_edt(~np.isin(a.label[box], (A.FALX, A.TENTORIUM)))
      ok = np.isin(a.label[box], (A.ICV, A.CEREBELLUM, A.FALX, A.TENTORIUM)) & (r2 < 1)
      if where == "falx":
        ok &= side * x[box[0]] > 0.6
      frac = np.clip(thick * np.sqrt(np.clip(1 - r2, 0, 1)) - sheet + 0.5, 0, 1) * ok
    self.paint(SUBDURAL, box, frac, self._density(box, frac))
    self._mass(c, radius, thick)

  def subarachnoid(self) -> None:
    """Blood in sulcal or cisternal CSF: patchy, from one to three regions."""
    a, rng = self.a, self.rng
    for _ in range(int(rng.integers(1, 4))):
      where = rng.choice(["sulci", "basal", "sylvian"], p=[0.5, 0.3, 0.2])
      if where == "sulci":
        c, radius = _pick(rng, (a.depth > 2) & (a.depth < 8) & (a.label == A.ICV)), \
            rng.uniform(15, 40)
      elif where == "basal":
        c, radius = np.array([0, -8, -14]) - a.origin, rng.uniform(15, 30)
      else:
        c, radius = np.array([rng.choice([-40, 40]), 2, -6]) - a.origin, rng.uniform(15, 28)
      box = _box(c, radius, a.label.shape)
      i, j, k = _grid(box)
      r2 = ((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2) / radius ** 2
      csf = self.csf[box] * (a.label[box] == A.ICV)
      patch = (r2 < 1) & (_smooth_noise(rng, r2.shape, 3.0) > rng.uniform(-0.8, 0.3))
      frac = np.clip(csf * rng.uniform(0.8, 1.0), 0, 1) * patch
      self.paint(SUBARACHNOID, box, frac, np.float32(rng.uniform(45, 70)), threshold=0.35)

  def intraventricular(self) -> None:
    """Blood layering in the dependent (posterior) horns under a fluid level, or a cast."""
    a, rng = self.a, self.rng
    vent = np.isin(a.label, A.VENTRICLES)
    if rng.random() < 0.3:
      which = rng.choice([A.LATERAL_VENTRICLE, A.THIRD_VENTRICLE, A.FOURTH_VENTRICLE])
      frac = (np.isin(a.label, (which, A.CHOROID)) if which == A.LATERAL_VENTRICLE
              else a.label == which).astype(np.float32)
    else:
      i, j, k = np.ogrid[tuple(slice(0, n) for n in a.label.shape)]
      dep = i * self.g[0] + j * self.g[1] + k * self.g[2]
      level = np.quantile(np.broadcast_to(dep, vent.shape)[vent], rng.uniform(0.4, 0.9))
      frac = (vent & (dep > level)).astype(np.float32)
    box = tuple(slice(None) for _ in range(3))
    self.paint(INTRAVENTRICULAR, box, frac, np.float32(rng.uniform(50, 85)))

  def intraparenchymal(self) -> None:
    """Irregular lobar, deep (basal ganglia / thalamus) or cerebellar clot with oedema."""
    a, rng = self.a, self.rng
    where = rng.choice(["lobar", "deep", "cerebellar"], p=[0.5, 0.4, 0.1])
    if where == "lobar":
      c = _pick(rng, (a.label == A.ICV) & (a.depth > 12) & (a.wm > 128))
    elif where == "deep":
      c = _pick(rng, np.isin(a.label, (A.DEEP_GREY, A.PALLIDUM)))
    else:
      c = _pick(rng, (a.label == A.CEREBELLUM) & (a.depth > 8))
    radius = rng.uniform(4, 12 if where == "cerebellar" else 24)
    box = _box(c, radius * 1.8, a.label.shape)
    i, j, k = _grid(box)
    r = np.sqrt((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2) / radius
    rough = r + 0.18 * _smooth_noise(rng, r.shape, radius / 4)
    brain = np.isin(a.label[box], (A.ICV, A.DEEP_GREY, A.PALLIDUM, A.CEREBELLUM))
    frac = np.clip((1 - rough) * radius, 0, 1) * brain
    if rng.random() < 0.7:
      halo = np.clip((rng.uniform(1.25, 1.6) - rough) * radius, 0, 1) * brain * (1 - frac)
      self.hu[box] -= halo * rng.uniform(8, 16)
    self.paint(INTRAPARENCHYMAL, box, frac, np.float32(rng.uniform(55, 85)))
    if radius > 12:
      self.pushes.append((c, 0.3 * radius, 1.8 * radius))
      self._mass(c, radius, radius - 4)


def sample_subtypes(rng: np.random.Generator, positive: float = 0.6) -> tuple[int, ...]:
  """A subject's subtypes: none (healthy), or a primary one with its usual companions."""
  if rng.random() >= positive:
    return ()
  first = int(rng.choice(5, p=_PRIMARY))
  return tuple(sorted({first} | {k for k, p in _WITH[first].items() if rng.random() < p}))


@functools.cache
def _csf_ridges(atlas: A.Atlas) -> np.ndarray:
  """CSF fraction with its sheets and lines enhanced (minus 3x its Laplacian of Gaussian).

  Why: the template averages 152 brains, so sulcal CSF is smeared to 0.1-0.2 across the cortex,
  which then renders as one grey mush (cortex ~ white matter). The ridges of that mean CSF are
  the average brain's sulci, fissures and cisterns; thresholding them gives dark lines.
  """
  gm = atlas.gm.astype(np.float32) / 255
  wm = atlas.wm.astype(np.float32) / 255
  csf = np.where(np.isin(atlas.label, A.INTRACRANIAL), 1 - gm - wm, 0).astype(np.float32)
  return csf - 3.0 * ndimage.gaussian_laplace(csf, 1.2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 1 / (1 + np.exp(-x))


def _render_brain(atlas: A.Atlas, rng) -> tuple[np.ndarray, np.ndarray, float]:
  """Atlas-frame HU, CSF fraction and cortex HU of one subject: atrophy (wider sulci), calcium.

  CSF is the thresholded sulcal ridge map (threshold lower with atrophy: wider sulci) and the
  grey share of the tissue a sigmoid of the template's, so that cortex, white matter and deep
  nuclei have the sharp boundaries of one brain rather than the blur of an average.
  """
  gm = atlas.gm.astype(np.float32) / 255
  wm = atlas.wm.astype(np.float32) / 255
  icv = np.isin(atlas.label, A.INTRACRANIAL)
  atrophy = rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15])
  threshold = (0.32, 0.24, 0.17)[atrophy] + rng.uniform(-0.03, 0.03)
  csf = _sigmoid((_csf_ridges(atlas) - threshold) / 0.06)
  csf = np.where(icv, np.maximum(csf, np.where(gm + wm < 0.5, 1 - gm - wm, 0)), 0)
  share = _sigmoid((gm / np.maximum(gm + wm, 1e-3) - 0.5) / 0.12)
  gm, wm = (1 - csf) * share, (1 - csf) * (1 - share)
  grey = rng.uniform(35, 44)
  white = max(grey - rng.uniform(7, 12), 22.0)
  table = _hu_table(rng)
  hu = table[atlas.label]
  brain = grey * gm + white * wm + rng.uniform(2, 10) * csf
  brain += (atlas.label == A.DEEP_GREY) * gm * rng.uniform(-4, 1)  # nuclei a touch below cortex
  sheets = np.isin(atlas.label, (A.FALX, A.TENTORIUM, A.VENOUS_SINUS))
  hu = np.where(icv & ~sheets, brain, hu).astype(np.float32)
  # Physiological calcifications: pineal, choroid glomus, falx plaques, pallidum.
  for site, chance, hu_range, r in ((A.PINEAL, 0.6, (100, 400), 2.5), (A.CHOROID, 0.65,
                                    (90, 300), 3.0), (A.FALX, 0.15, (150, 400), 2.0),
                                    (A.PALLIDUM, 0.07, (80, 200), 3.0)):
    if rng.random() < chance:
      for side in (-1, 1) if site in (A.CHOROID, A.PALLIDUM) else (0,):
        x = np.arange(atlas.label.shape[0])[:, None, None] + atlas.origin[0]
        mask = (atlas.label == site) & ((side * x > 0) if side else True)
        if not mask.any():
          continue
        c = _pick(rng, mask)
        box = _box(c, r + 1, hu.shape)
        i, j, k = _grid(box)
        d = np.sqrt((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2)
        f = np.clip(r * rng.uniform(0.6, 1.0) - d + 0.5, 0, 1)
        hu[box] = hu[box] * (1 - f) + rng.uniform(*hu_range) * f
  return hu, csf, grey


def make_subject(rng: np.random.Generator, subtypes: tuple[int, ...] | None = None,
                 atlas: A.Atlas | None = None) -> Subject:
  """A new subject: pose, warp, tissue HU and bleeds, rendered once in the atlas grid."""
  atlas = atlas or _atlas()
  subtypes = sample_subtypes(rng) if subtypes is None else tuple(subtypes)
  # Pose: yaw and roll small, pitch = gantry tilt; size +-15 %; radiological view (LPS).
  angles = np.radians([rng.uniform(-15, 15), rng.uniform(-6, 6), rng.uniform(-8, 8)])
  cx, cy, cz = np.cos(angles)
  sx, sy, sz = np.sin(angles)
  pitch = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
  roll = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  yaw = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
  scale = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
  to_scanner = np.diag([-1.0, -1.0, 1.0]) @ yaw @ roll @ pitch @ np.diag(scale)
  centre = np.array([0.0, -18.0, 10.0]) - atlas.origin  # atlas voxel at the scanner origin
  shift = np.array([rng.uniform(-8, 8), rng.uniform(-4, 12), 0.0])
  inverse = np.linalg.inv(to_scanner)
  to_atlas = np.concatenate([inverse, (centre - inverse @ shift)[:, None]], axis=1)
  gravity = inverse @ np.array([0.0, 1.0, 0.0])  # image down = posterior of a supine head
  gravity /= np.linalg.norm(gravity)

  hu, csf, grey = _render_brain(atlas, rng)
  builder = _Builder(atlas, hu, csf, grey, gravity, rng)
  for kind in subtypes:
    getattr(builder, tasks.SUBTYPES[kind])()
  warp_shape = tuple(int(np.ceil(n / _WARP_MM)) + 2 for n in atlas.label.shape)
  warp = rng.normal(0, rng.uniform(1.0, 3.0), (3, *warp_shape)).astype(np.float32)
  warp[0] += builder.shift[0] * _midline_profile(warp_shape, atlas)

  corners = np.argwhere(atlas.label[::4, ::4, ::4] != A.AIR) * 4
  zs = (to_scanner @ (corners - centre).T)[2] + shift[2]
  base = (to_scanner @ (np.array([0.0, -20.0, rng.uniform(-68, -44)]) - atlas.origin - centre))
  xs = (to_scanner @ (corners - centre).T)[0]
  return Subject(hu, builder.blood, to_atlas, warp, tuple(builder.pushes),
                 (float(base[2]), float(zs.max())), float(xs.max() - xs.min()), subtypes)


def _midline_profile(shape, atlas: A.Atlas) -> np.ndarray:
  """Weight of a midline shift on the warp grid: 1 at the deep midline, ~0 at the skull."""
  c = (np.array([0.0, -18.0, 10.0]) - atlas.origin) / _WARP_MM
  i, j, k = np.ogrid[tuple(slice(0, n) for n in shape)]
  d2 = ((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2) * _WARP_MM ** 2
  return np.exp(-d2 / (2 * 35.0 ** 2)).astype(np.float32)


def _atlas_points(subject: Subject, pts: np.ndarray) -> np.ndarray:
  """Atlas voxel coordinates (3, N) of scanner points (3, N): pose, elastic warp, mass effect."""
  q = subject.to_atlas[:, :3] @ pts + subject.to_atlas[:, 3:]
  grid = q / _WARP_MM
  q = q + np.stack([ndimage.map_coordinates(w, grid, order=1, mode="nearest")
                    for w in subject.warp])
  for c, amp, radius in subject.pushes:  # sample nearer the centre: the clot's region swells
    d = q - c[:, None]
    r = np.sqrt((d ** 2).sum(0)) + 1e-3
    q = q - d / r * amp * np.exp(-(r / radius) ** 2) * np.minimum(r / 3.0, 1.0)
  return q


def _nps_filter(size: int, pixel_mm: float, cutoff: float) -> np.ndarray:
  """sqrt of a ramp x Hann noise power spectrum (filtered backprojection noise), rfft layout."""
  fy = np.fft.fftfreq(size, pixel_mm)[:, None]
  fx = np.fft.rfftfreq(size, pixel_mm)[None, :]
  f = np.sqrt(fx ** 2 + fy ** 2)
  window = np.where(f < cutoff, 0.5 * (1 + np.cos(np.pi * f / cutoff)), 0.0)
  return np.sqrt(f * window ** 2)


def _beam_hardening(hu: np.ndarray, pixel_mm: float, strength: float) -> np.ndarray:
  """HU error of the bone nonlinearity: projections lose ~strength * (bone path)^2, then FBP.

  Rays through two dense bones (petrous ridges, occipital protuberance) lose most: dark streaks
  and bands between them, as after a water-only beam-hardening correction.
  """
  step = max(hu.shape[0] // 64, 1)  # BH error is smooth but for streaks: ~64 px, 100 views
  small = hu[::step, ::step]
  n = small.shape[0]
  cm = pixel_mm * step / 10
  bone = np.clip(small - 200.0, 0, None) / 1000.0 * cm  # bone cm per pixel
  angles = np.linspace(0, 180, 100, endpoint=False)
  ramp = np.abs(np.fft.fftfreq(n))
  image = np.zeros_like(bone)
  for angle in angles:
    p = ndimage.rotate(bone, angle, reshape=False, order=1).sum(axis=0)
    err = -strength * p ** 2
    filtered = np.real(np.fft.ifft(np.fft.fft(err) * ramp))
    image += ndimage.rotate(np.broadcast_to(filtered, (n, n)), -angle, reshape=False, order=1)
  image *= np.pi / len(angles) * 1000.0 / cm  # back to HU of water per cm
  soft = (small > -50) & (small < 100)
  if soft.any():  # the scanner is calibrated on water: soft tissue keeps its HU on average
    image -= np.median(image[soft])
  # Upsampling would smear the large error inside bone over the adjacent cortex (a dark rim
  # that hides thin subdurals): tissue takes the error of tissue, filled in under bone.
  tissue = (small < 200).astype(np.float32)
  weight = ndimage.gaussian_filter(tissue, 1.0)
  filled = np.where(tissue > 0, image,
                    ndimage.gaussian_filter(image * tissue, 1.0) / np.maximum(weight, 1e-3))
  up = [ndimage.zoom(v, step, order=1)[:hu.shape[0], :hu.shape[1]] for v in (image, filled)]
  return np.where(hu > 200, up[0], up[1])


def render_slice(subject: Subject, scanner: Scanner, z_mm: float, size: int,
                 rng: np.random.Generator) -> SynthSlice:
  """One reconstructed slice centred at scanner z: partial volume, physics, noise, labels."""
  half = size // 2
  pixel = scanner.fov_mm / size
  coarse = pixel * 2  # anatomy at half the matrix (1 mm atlas), noise at the full matrix
  axis = (np.arange(half) + 0.5 - half / 2) * coarse
  yy, xx = np.meshgrid(axis, axis, indexing="ij")
  subs = max(round(scanner.slice_mm), 1)
  hu = np.zeros((half, half), np.float32)
  bits = np.zeros((5, half, half), np.float32)
  for s in range(subs):
    z = z_mm + ((s + 0.5) / subs - 0.5) * scanner.slice_mm
    pts = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)])
    q = _atlas_points(subject, pts)
    hu += ndimage.map_coordinates(subject.hu, q, order=1, cval=-1000.0).reshape(half, half)
    b = ndimage.map_coordinates(subject.blood, q, order=0, cval=0).reshape(half, half)
    bits += (b[None] >> np.arange(5, dtype=np.uint8)[:, None, None]) & 1
  hu /= subs
  present = bits / subs >= 0.5
  hu = ndimage.zoom(hu, 2, order=1)
  present = np.repeat(np.repeat(present, 2, axis=1), 2, axis=2)
  hu = hu + _headrest(subject, size, pixel, rng)
  hu = hu + _beam_hardening(hu, pixel, scanner.beam_hardening)
  if scanner.sharpen:
    hu = hu + scanner.sharpen * (hu - ndimage.gaussian_filter(hu, 1.0))
  white = np.fft.rfft2(rng.standard_normal((size, size)))
  noise = np.fft.irfft2(white * _nps_filter(size, pixel, scanner.nps_cutoff), s=(size, size))
  noise /= noise.std() + 1e-9
  # More bone than a supratentorial slice (~6 % of the FOV): fewer photons, more noise.
  bone_load = max(float(np.mean(hu > 300)) - 0.06, 0.0)
  hu = hu + noise * scanner.noise_hu * (1 + 3 * bone_load)
  r = np.hypot(*np.meshgrid(*2 * [np.arange(size) + 0.5 - size / 2], indexing="ij"))
  hu = np.where(r > size / 2, image.AIR_FILL_HU, np.clip(hu, -1024, 3071)).astype(np.float32)
  subtypes = sum((p.astype(np.uint8) << i) for i, p in enumerate(present)).astype(np.uint8)
  area = present.reshape(5, -1).sum(1) * pixel * pixel
  labels = np.zeros(6, np.int32)
  labels[:5] = area >= MIN_AREA_MM2
  labels[tasks.ANY] = labels[:5].any()
  return SynthSlice(hu, labels, subtypes)


def _headrest(subject: Subject, size: int, pixel: float, rng) -> np.ndarray:
  """Additive HU of the head holder: a curved carbon shell and a foam pad under the occiput."""
  c = (np.arange(size) + 0.5 - size / 2) * pixel
  y, x = np.meshgrid(c, c, indexing="ij")
  radius = subject.head_mm / 2 + 8.0
  r = np.hypot(x, y - 10.0)
  behind = (y > 25.0) & (np.abs(x) < 0.8 * radius)
  shell = behind & (r > radius + 6) & (r < radius + 9)
  pad = behind & (r > radius - 2) & (r <= radius + 6)
  out = np.zeros((size, size), np.float32)
  out[shell] = 1000 + 250.0  # replaces air (-1000) with ~250 HU
  out[pad] = 1000 - 850.0
  return out


def render_series(subject: Subject, scanner: Scanner, size: int, rng: np.random.Generator,
                  limit: int | None = None) -> tuple[list[SynthSlice], np.ndarray]:
  """Axial slices from the skull base to the vertex; returns the slices and their scanner z.

  `limit`: at most this many, a contiguous run drawn before rendering (a partial scan), so a
  long thin-slice series costs only the slices kept.
  """
  lo, hi = subject.z_range
  zs = np.arange(lo, hi - scanner.slice_mm / 2, scanner.slice_mm)
  if limit is not None and len(zs) > limit:
    start = int(rng.integers(len(zs) - limit + 1))
    zs = zs[start:start + limit]
  return [render_slice(subject, scanner, float(z), size, rng) for z in zs], zs


def write_series(out: Path, slices: list[SynthSlice], zs: np.ndarray, scanner: Scanner,
                 uid: functools.partial) -> list[tuple]:
  """Write one series as RSNA-style DICOMs + its mask npz under `out`; returns CSV rows.

  `uid(part)` names the study, series, patient and each slice ("ID_" + hex, as RSNA).
  """
  size = slices[0].hu.shape[0]
  study, series, patient = uid("study"), uid("series"), uid("patient")
  scan_circle = np.hypot(*np.meshgrid(*2 * [np.arange(size) + 0.5 - size / 2])) > size / 2
  rows = []
  for n, (s, z) in enumerate(zip(slices, zs)):
    image_id = uid(n)[:12]
    geo = items.SliceGeometry(image_id, study, series, n + 1, float(z))
    ct_writer.write_ct(out / phantom.IMAGES_DIR / f"{image_id}.dcm", s.hu, geo,
                       patient_id=patient, pixel_spacing=scanner.fov_mm / size,
                       encoding=scanner.encoding, padding=scan_circle)
    rows.append((image_id, s.labels))
  np.savez_compressed(out / MASKS_DIR / f"{series}.npz", ids=np.array([r[0] for r in rows]),
                      subtypes=np.stack([s.subtypes for s in slices]))
  return rows


def _write_subject(out: Path, seed: int, size: int, positive: float, wide: bool,
                   job: tuple[int, int]) -> list[tuple]:
  """Generate and write one series (index, at most this many slices); returns CSV rows."""
  index, limit = job
  rng = np.random.default_rng([seed, index, 25])
  subject = make_subject(rng, sample_subtypes(rng, positive))
  scanner = Scanner.sample(rng, subject.head_mm, wide)
  slices, zs = render_series(subject, scanner, size, rng, limit)
  uid = functools.partial(phantom._uid, "synth", seed, index)  # noqa: SLF001
  return write_series(out, slices, zs, scanner, uid)


def write_rsna(out: str | os.PathLike, num: int, seed: int = 0, size: int = 512,
               workers: int | None = None, per_series: int = 40, positive: float = 0.45,
               wide: bool = False) -> Path:
  """Write `num` slices as RSNA-format series, drop-in for `phantom.write_rsna`.

  `positive` is the expected share of slices labelled "any" (RSNA's is ~0.14; ~0.45 balances
  training): subjects bleed with probability positive / IN_POSITIVE, at most 0.6.

  Layout: `stage_2_train/*.dcm`, `stage_2_train.csv` (Kaggle rows `ID_<sop>_<subtype>,Label`),
  the synthetic MARKER, and `stage_2_masks/<series>.npz` (ids, uint8 subtype bitmasks). A
  series keeps at most `per_series` contiguous slices (long thin-slice series are cut, as a
  partial scan); series are added until `num` slices exist, the last one cut short.
  Deterministic for a seed whatever the number of workers. `wide`: the held-out scanner
  ranges (`Scanner.sample`).
  """
  if num < 1:
    raise ValueError(f"--num must be at least 1, got {num}")
  if not 0 <= positive <= IN_POSITIVE:
    raise ValueError(f"positive slice share must be in [0, {IN_POSITIVE}], got {positive}")
  out = Path(out)
  for d in (phantom.IMAGES_DIR, MASKS_DIR):
    (out / d).mkdir(parents=True, exist_ok=True)
  write = functools.partial(_write_subject, out, seed, size, positive / IN_POSITIVE, wide)
  rows: list[tuple] = []
  index = 0
  while len(rows) < num:  # each round plans whole series for what is missing
    missing = num - len(rows)
    count = -(-missing // per_series)
    jobs = [(index + i, min(per_series, missing - i * per_series)) for i in range(count)]
    index += count
    for series in parallel.map_ordered(write, jobs, workers=workers, desc="synth",
                                       unit="series"):
      rows.extend(series)
  (out / phantom.MARKER).write_text(
      f"Synthetic head CT made by ichflax.data.synth from the MNI ICBM152 2009 atlas (seed "
      f"{seed}, {len(rows)} slices, {size} px, {'wide' if wide else 'routine'} scanner "
      "ranges). No real patient data.\n")
  with open(out / phantom.CSV_NAME, "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(("ID", "Label"))
    for image_id, labels in rows:
      w.writerows((f"{image_id}_{name}", int(y)) for name, y in zip(tasks.LABELS, labels))
  return out
