"""A head atlas for synthetic CT: the MNI ICBM152 2009 brain plus what CT sees around it.

Why: a phantom drawn in "head units" taught a model nothing about real scans (AUC 0.52). Real
brain anatomy (gyri, grey/white matter, ventricles, cisterns, deep nuclei) comes from the MNI
ICBM152 2009 symmetric template that nilearn ships; the template is skull-stripped, so the
dura, falx, tentorium, skull (tables, diploe, sutures), skull base, sinuses, orbits, mastoids
and scalp are built here from published adult anatomy. `ichflax.data.synth` deforms and renders
it per subject. The derived atlas is shipped (`assets/head_atlas.npz`, notice in
`assets/NOTICE`) so that generating data needs no nilearn; `build_atlas` rebuilds it.

Coordinates: 1 mm voxels, axes (x right, y anterior, z superior) = MNI RAS; `origin` is the MNI
position of voxel (0, 0, 0).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

ASSET = Path(__file__).with_name("assets") / "head_atlas.npz"
# Tissue labels of the atlas `label` volume. Brain voxels (ICV and above) also carry grey and
# white matter fractions; CSF is what the ICV holds besides them.
AIR, SKIN, FAT, MUSCLE, OUTER_TABLE, DIPLOE, INNER_TABLE, SUTURE, PETROUS, SINUS_AIR, \
    MASTOID, ORBIT_FAT, GLOBE, FACE_BONE, ICV, LATERAL_VENTRICLE, THIRD_VENTRICLE, \
    FOURTH_VENTRICLE, DEEP_GREY, CEREBELLUM, FALX, TENTORIUM, VENOUS_SINUS, CHOROID, \
    PINEAL, PALLIDUM = range(26)
LABEL_NAMES = ("air", "skin", "fat", "muscle", "outer_table", "diploe", "inner_table", "suture",
               "petrous", "sinus_air", "mastoid", "orbit_fat", "globe", "face_bone", "icv",
               "lateral_ventricle", "third_ventricle", "fourth_ventricle", "deep_grey",
               "cerebellum", "falx", "tentorium", "venous_sinus", "choroid", "pineal", "pallidum")
VENTRICLES = (LATERAL_VENTRICLE, THIRD_VENTRICLE, FOURTH_VENTRICLE, CHOROID)
INTRACRANIAL = tuple(range(ICV, PALLIDUM + 1))
BONE = (OUTER_TABLE, DIPLOE, INNER_TABLE, SUTURE, PETROUS, FACE_BONE, MASTOID)
# Skull plates (the `plate` volume): sutures separate them, so an epidural bleed stays in one.
PLATE_NAMES = ("none", "frontal", "parietal_right", "parietal_left", "occipital",
               "temporal_right", "temporal_left")
# The template grid: 197 x 233 x 189 at 1 mm, voxel (0, 0, 0) at MNI (-98, -134, -72).
_TEMPLATE_ORIGIN = np.array([-98.0, -134.0, -72.0])
# Atlas crop in template voxels (x, y, z); z starts 16 mm below the template for the skull base.
_CROP = ((4, 194), (4, 230), (-16, 176))
_SCALE = 255  # fractions stored as uint8 / 255

NOTICE = """\
The head atlas (head_atlas.npz) is derived from the MNI ICBM152 2009 symmetric template
(mni_icbm152_t1/gm/wm_tal_nlin_sym_09a, as shipped by nilearn) by ichflax.data.anatomy.

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package.

References: Fonov V. et al., NeuroImage 54:313-327 (2011); Fonov V. et al., NeuroImage 47:S102
(2009); Collins D. L. et al., NeuroImage 9:S53 (1999).
"""


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: maps derived are cached
class Atlas:
  """The derived head: uint8 label, grey/white fractions and skull plates on a 1 mm grid."""

  label: np.ndarray  # uint8 (X, Y, Z): LABEL_NAMES
  gm: np.ndarray  # uint8 grey matter fraction * 255 (0 outside the ICV)
  wm: np.ndarray  # uint8 white matter fraction * 255
  plate: np.ndarray  # uint8 PLATE_NAMES index of the skull plate nearest each voxel
  depth: np.ndarray  # uint8 mm inside the ICV (distance to the inner table, capped at 255)
  origin: np.ndarray  # float64 (3,): MNI mm of voxel (0, 0, 0)

  def mni(self, *axes: np.ndarray) -> tuple[np.ndarray, ...]:
    """MNI mm of voxel indices (i, j, k)."""
    return tuple(a + o for a, o in zip(axes, self.origin))

  def arrays(self) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _ball_close(mask: np.ndarray, radius: float) -> np.ndarray:
  """Morphological closing with a ball (distance transforms: exact and fast at any radius)."""
  grown = ndimage.distance_transform_edt(~mask) <= radius
  return ndimage.distance_transform_edt(grown) > radius


def _ellipsoid(x, y, z, center, radii) -> np.ndarray:
  return sum(((a - c) / r) ** 2 for a, c, r in zip((x, y, z), center, radii)) <= 1.0


def _tentorium_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Height (MNI z) of the tentorium: a tent peaked at the straight sinus, sloping to the sides.

  Read off the template: the cerebellar cortex tops out near z = -17 at |x| = 30 and -21 at
  |x| = 45, the vermis near z = 0 behind the tectum; the straight sinus descends backwards.
  """
  ax = np.abs(x)
  return (0.1 * np.minimum(y + 55.0, 0.0) - 16.0 * np.minimum(ax, 30.0) / 30.0
          - 0.15 * np.maximum(ax - 30.0, 0.0))


def _tentorium_domain(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Where the tentorium exists: behind the incisura (midbrain) and the petrous ridges."""
  return y < -50.0 + 0.5 * np.maximum(np.abs(x) - 10.0, 0.0)


def _skull_thickness(x, y, z) -> np.ndarray:
  """Adult calvarial thickness (mm) by direction from the head centre.

  Parietal ~6 mm, frontal ~7, occipital ~8 with the internal occipital protuberance (~12), the
  temporal squama thin (~2.5 mm): Lynnerup 2005, Moreira-Gonzalez 2006.
  """
  c = (0.0, -18.0, 8.0)
  dx, dy, dz = x - c[0], y - c[1], z - c[2]
  r = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
  ux, uy, uz = dx / r, dy / r, dz / r
  t = 6.0 + 1.2 * np.maximum(uy, 0.0) + 2.0 * np.maximum(-uy, 0.0) ** 2
  t += 4.0 * np.exp(-((ux / 0.15) ** 2 + ((uy + 0.95) / 0.2) ** 2 + ((uz + 0.15) / 0.25) ** 2))
  temporal = (np.clip((np.abs(ux) - 0.55) / 0.25, 0, 1) * np.clip((0.45 - uz) / 0.3, 0, 1)
              * np.clip((0.5 - np.abs(uy + 0.05)) / 0.25, 0, 1))
  return t * (1 - temporal) + 2.5 * temporal


def _suture_planes(x, y, z) -> dict[str, np.ndarray]:
  """Signed distances (mm) to the calvarial sutures, as smooth surfaces in MNI space.

  Bregma ~(0, 5, 78), lambda ~(0, -82, 48), pterion ~(+-52, 12, 0), asterion ~(+-52, -68, -18).
  """
  coronal = y - (5.0 + 0.1 * (78.0 - z) - 0.002 * x * x)
  lambdoid = y - (-82.0 + 0.45 * (48.0 - z) + 0.004 * x * x)
  squamous = z - (22.0 - 30.0 * ((y + 25.0) / 38.0) ** 2)
  return {"coronal": coronal, "lambdoid": lambdoid, "squamous": squamous, "sagittal": x}


def skull_plates(x, y, z) -> np.ndarray:
  """PLATE_NAMES index of the calvarial bone at MNI (x, y, z), split along the sutures."""
  s = _suture_planes(x, y, z)
  plate = np.where(x >= 0, 2, 3)
  plate = np.where(s["coronal"] > 0, 1, plate)
  plate = np.where(s["lambdoid"] < 0, 4, plate)
  temporal = (s["squamous"] < 0) & (np.abs(x) > 30) & (s["coronal"] < 0) & (s["lambdoid"] > 0)
  plate = np.where(temporal, np.where(x >= 0, 5, 6), plate)
  return plate.astype(np.uint8)


def _quantise(fraction: np.ndarray) -> np.ndarray:
  return np.rint(np.clip(fraction, 0, 1) * _SCALE).astype(np.uint8)


def build_volumes(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> Atlas:
  """The atlas from the template's T1, GM and WM maps (197 x 233 x 189, 1 mm, values 0-1)."""
  (x0, x1), (y0, y1), (z0, z1) = _CROP
  pad = [(max(-a, 0), max(b - n, 0)) for (a, b), n in zip(_CROP, t1.shape)]

  def crop(v):
    v = np.pad(v.astype(np.float32), pad)
    return v[x0 + pad[0][0]:x1 + pad[0][0], y0 + pad[1][0]:y1 + pad[1][0],
             z0 + pad[2][0]:z1 + pad[2][0]]

  t1, gm, wm = crop(t1), crop(gm), crop(wm)
  origin = _TEMPLATE_ORIGIN + np.array([x0, y0, z0], np.float64)
  i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in t1.shape), indexing="ij")
  x, y, z = i + origin[0], j + origin[1], k + origin[2]
  tissue = np.clip(gm + wm, 0, 1)

  # Intracranial volume: the brain closed over its sulci, plus 1.5 mm of subarachnoid space.
  brain = (t1 > 0.2) | (tissue > 0.3)
  icv = ndimage.binary_fill_holes(_ball_close(brain, 4.0))
  icv = ndimage.distance_transform_edt(~icv) <= 1.5
  depth = ndimage.distance_transform_edt(icv)
  outside = ndimage.distance_transform_edt(~icv)
  over = np.clip(gm + wm, 1, None)  # the maps overlap slightly: keep their sum at most 1
  gm, wm = np.where(icv, gm / over, 0), np.where(icv, wm / over, 0)
  csf = np.where(icv, 1 - gm - wm, 0)

  label = np.full(t1.shape, AIR, np.uint8)
  label[icv] = ICV
  # Ventricles: deep CSF, the laterals as one connected body; third and fourth by position.
  deep_csf = icv & (csf > 0.5) & (depth > 8)
  comps, n = ndimage.label(deep_csf)
  lateral_zone = deep_csf & (np.abs(x) > 5) & (np.abs(x) < 30) & (z > 5) & (z < 30)
  counts = np.bincount(comps[lateral_zone], minlength=n + 1)
  counts[0] = 0
  label[comps == counts.argmax()] = LATERAL_VENTRICLE
  third = deep_csf & (np.abs(x) < 5) & (y > -28) & (y < 4) & (z > -10) & (z < 14)
  label[third & (label == ICV)] = THIRD_VENTRICLE
  fourth = (icv & (csf > 0.4) & (np.abs(x) < 10) & (y > -58) & (y < -35) & (z > -45)
            & (z < -18) & (depth > 10))
  label[fourth & (label == ICV)] = FOURTH_VENTRICLE
  # Choroid plexus glomus in each trigone, pineal behind the third ventricle: calcify in adults.
  for side in (-1, 1):
    lat = label == LATERAL_VENTRICLE
    near = _ellipsoid(x, y, z, (side * 28.0, -42.0, 14.0), (9.0, 9.0, 7.0)) & lat
    label[near] = CHOROID
  label[_ellipsoid(x, y, z, (0.0, -33.0, 2.0), (3.5, 4.5, 3.5)) & icv] = PINEAL

  # Tentorium (a 1.5 mm sheet) and the cerebellum beneath it; deep grey nuclei inside the hull.
  zt = _tentorium_z(x, y)
  domain = _tentorium_domain(x, y) & icv
  below = domain & (z < zt)
  label[below & (label == ICV)] = CEREBELLUM
  label[domain & (np.abs(z - zt) < 0.75) & np.isin(label, (ICV, CEREBELLUM))] = TENTORIUM
  deep = ((label == ICV) & (gm > 0.5) & (depth > 16) & (z > -12) & (z < 26) & (np.abs(x) < 32)
          & (y > -40) & (y < 28))
  label[deep] = DEEP_GREY
  pallidum = _ellipsoid(np.abs(x), y, z, (19.0, -4.0, 0.0), (4.0, 7.0, 4.0))
  label[pallidum & np.isin(label, (ICV, DEEP_GREY))] = PALLIDUM

  # Falx: the midline sheet of the interhemispheric fissure, above the corpus callosum.
  mid = np.abs(x) < 0.6
  callosum_top = np.where(mid & (wm > 0.5) & (z > -5) & (z < 40), z, -np.inf).max(axis=(0, 2))
  above_cc = z > callosum_top[None, :, None] + 2
  falx = (mid & (label == ICV) & (tissue < 0.6) & (above_cc | (y > 30) | (y < -45))
          & (z > zt + 1))
  label[falx] = FALX
  # Superior sagittal sinus: a triangle in the falx's upper edge under the vertex.
  sss = icv & (depth < 5.0 - np.abs(x)) & (z > zt + 15) & (z > -0.5 * y - 20) & (y > -105)
  label[sss & np.isin(label, (ICV, FALX))] = VENOUS_SINUS

  # Calvarium: inner table, diploe, outer table, by distance outside the ICV.
  thick = _skull_thickness(x, y, z)
  d = outside - 0.5
  bone = (d > 0) & (d <= thick)
  inner, outer = np.clip(0.3 * thick, 1.0, 2.0), np.clip(0.25 * thick, 1.0, 2.0)
  label[bone] = DIPLOE
  label[bone & (d <= inner)] = INNER_TABLE
  label[bone & (d > thick - outer)] = OUTER_TABLE
  label[bone & (thick < 3.5)] = INNER_TABLE  # the thin temporal squama is one compact plate
  planes = _suture_planes(x, y, z)
  crest = (z > -25) & ~((np.abs(x) < 30) & (z < 0) & (y > -40))  # calvarium, not the base
  for name, s in planes.items():
    span = crest.copy()
    if name == "sagittal":
      span &= (planes["coronal"] < 0) & (planes["lambdoid"] > 0)
    elif name == "squamous":
      span &= (np.abs(x) > 30) & (planes["coronal"] < 0) & (planes["lambdoid"] > 0)
    elif name == "lambdoid":
      span &= z > -22
    label[bone & span & (np.abs(s) < 0.6)] = SUTURE

  # Skull base: petrous ridges, mastoid air cells, ear canals, sphenoid and ethmoid sinuses,
  # frontal sinus, orbits with fat and globes, and the face under the anterior fossa: soft
  # tissue (masticator and facial muscles) around air spaces with thin bony walls (maxillary
  # sinuses, nasal cavity and septum, orbital walls, zygomatic arches, hard palate).
  base = ~icv & (z < -10)
  face = (~icv & ((x / 58.0) ** 2 + ((y - 18.0) / 62.0) ** 2 < 1.0) & (z < -22) & (y > -22)
          & (z > -80))
  label[face & (label == AIR)] = MUSCLE
  # Behind the face and under the skull base: pharynx, masticator and parotid spaces, soft
  # tissue around the nasopharyngeal airway.
  deep_face = (~icv & ((x / 60.0) ** 2 + ((y + 10.0) / 80.0) ** 2 < 1.0) & (z < -30)
               & (z > -80) & (label == AIR))
  label[deep_face] = MUSCLE
  label[deep_face & _ellipsoid(x, y, z, (0.0, 4.0, -76.0), (11.0, 9.0, 18.0))] = SINUS_AIR
  petrous = base & (np.abs(x) > 14) & (np.abs(x) < 52) & (y > -48) & (y < -8) & (z > -52) & (
      z < -20) & (np.abs(y + 28.0 - 0.45 * (np.abs(x) - 33.0)) < 9.0) & (d < 12)
  label[petrous] = PETROUS
  label[_ellipsoid(np.abs(x), y, z, (48.0, -38.0, -42.0), (11.0, 13.0, 12.0)) & base
        & (label != AIR)] = MASTOID
  ear_canal = ((np.abs(x) > 50) & (np.hypot(y + 24.0, z + 40.0) < 3.5) & (label != AIR)
               & ~icv)
  label[ear_canal] = SINUS_AIR
  maxillary = _ellipsoid(np.abs(x), y, z, (23.0, 42.0, -62.0), (12.0, 15.0, 16.0))
  nasal = (np.abs(x) < 10) & (y > 22) & (y < 76) & (z > -78) & (z < -44)
  arch = ((np.abs(x) > 50) & (np.abs(x) < 58) & (y > -12) & (y < 38)
          & (np.abs(z + 42.0 + 0.08 * y) < 3.0))
  palate = (np.abs(x) < 26) & (y > 2) & (y < 66) & (np.abs(z + 76.0) < 1.5)
  walls = ndimage.distance_transform_edt(~(maxillary | nasal)) <= 1.5
  label[face & (walls | arch | palate)] = FACE_BONE
  label[face & (maxillary | nasal)] = SINUS_AIR
  label[face & nasal & (np.abs(x) < 0.8)] = FACE_BONE  # the septum
  for side in (-1, 1):
    orbit = _ellipsoid(x, y, z, (side * 31.0, 50.0, -40.0), (17.0, 24.0, 16.0)) & ~icv
    rim = (ndimage.distance_transform_edt(~orbit) <= 1.5) & ~icv
    label[rim & ~orbit & (y < 64) & (label != AIR)] = FACE_BONE
    label[orbit] = ORBIT_FAT
    label[_ellipsoid(x, y, z, (side * 32.0, 62.0, -40.0), (12.0, 12.0, 12.0)) & ~icv] = GLOBE
  ethmoid = (np.abs(x) < 13) & (y > 18) & (y < 62) & (z > -52) & (z < -28) & ~icv
  cells = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(x.shape).astype(
      np.float32), 1.2) > -0.02  # air cells between thin irregular septa (fixed seed)
  label[ethmoid & cells] = SINUS_AIR
  label[ethmoid & ~cells] = FACE_BONE
  label[_ellipsoid(x, y, z, (0.0, 8.0, -42.0), (15.0, 13.0, 10.0)) & ~icv] = SINUS_AIR
  frontal_sinus = (_ellipsoid(x, y, z, (0.0, 68.0, -8.0), (14.0, 9.0, 10.0))
                   & np.isin(label, (DIPLOE, INNER_TABLE, OUTER_TABLE)) & (d > 1.5)
                   & (d < thick - 1.2))
  label[frontal_sinus] = SINUS_AIR

  # Scalp: skin, subcutaneous fat, galea; temporalis muscle over the thin squama.
  head = (label != AIR) | (d <= thick)
  beyond = ndimage.distance_transform_edt(~head)
  temporalis = np.exp(-(((z - 5.0) / 28.0) ** 4) - ((y + 10.0) / 40.0) ** 4)
  scalp_mm = (5.0 + 2.0 * np.exp(-(((y + 95.0) / 25.0) ** 2))
              + 7.0 * np.clip((np.abs(x) - 45.0) / 15.0, 0, 1) * temporalis)
  label[(beyond > 0) & (beyond <= scalp_mm)] = MUSCLE
  label[(beyond > 1.5) & (beyond <= 1.5 + np.minimum(3.0, scalp_mm * 0.45))] = FAT
  label[(beyond > 0) & (beyond <= 1.5)] = SKIN
  label[(beyond > scalp_mm - 1.5) & (beyond <= scalp_mm)] = SKIN

  plate = np.where(np.isin(label, (AIR,)), 0, skull_plates(x, y, z)).astype(np.uint8)
  depth = np.rint(np.clip(depth, 0, 255)).astype(np.uint8)
  return Atlas(label, _quantise(gm), _quantise(wm), plate, depth, origin)


def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The template's T1, GM and WM maps from nilearn's wheel (offline: no fetch)."""
  from nilearn import datasets
  images = (datasets.load_mni152_template(resolution=1),
            datasets.load_mni152_gm_template(resolution=1),
            datasets.load_mni152_wm_template(resolution=1))
  for img in images:
    if img.shape != (197, 233, 189) or not np.allclose(img.affine[:3, 3], _TEMPLATE_ORIGIN):
      raise ValueError(f"unexpected MNI template grid {img.shape}, affine {img.affine.tolist()}")
  return tuple(np.asarray(img.get_fdata(), np.float32) for img in images)


def build_atlas(out: str | os.PathLike = ASSET) -> Path:
  """Rebuild the shipped atlas from nilearn's copy of the template (needs nilearn, ~1 min)."""
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out, **build_volumes(*_template()).arrays())
  (out.parent / "NOTICE").write_text(NOTICE)
  return out


@functools.cache
def load_atlas(path: str | os.PathLike = ASSET) -> Atlas:
  """The shipped atlas (no nilearn), read once per process."""
  with np.load(path) as f:
    return Atlas(**{k: f[k] for k in f.files})
