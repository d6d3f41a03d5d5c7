"""Scope check: is this input an axial head CT slice at all? Runs before the model, per input.

Why: a classifier answers with confidence whatever it is given (an MR slice, a photo, a strip of
black pixels). These checks refuse what the model was never meant to read and say why in one
sentence. They are deliberately loose on real heads: vertex and skull-base slices (little brain,
much bone, sinus air) must pass, so each rule looks for what *no* head CT slice lacks.

DICOM and HU arrays: Modality must be CT; a BodyPartExamined, when given, must name the head;
the HU content must hold air around the head, a bone ring (>= 700 HU) around soft tissue, and
structure (not a constant or noise-like image). 8-bit pictures (PNG/JPG, no HU): grey or tinted
grey, or the model's own three-window RGB (channels that are functions of one HU value), not a
colour photo; an aspect ratio within 2:1; not constant, not noise; a dark background; and the
shape any windowed head slice has whatever its window, size or compression (`picture_shape`):
dark air along the picture's edge, one main part rather than scattered strokes, and the
brightest levels (the skull, white in every window) out at the tissue's outline. A gradient, a
chart, text, a screenshot with its interface or a photo's texture fails one of them. Cheap by
design: every statistic is taken on a copy of at most 128 x 128 pixels (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from ichflax.data import inputs

# Tag values that name the head (DICOM PS3.16 CID 4031 and what scanners write in practice).
HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "CRAN", "CEREB", "NEURO", "ORBIT", "SELLA", "IAC",
              "TEMPORAL", "SINUS", "FACE", "CIRCLE OF WILLIS", "COW", "STROKE")
AIR_THRESHOLD_HU, BONE_HU = -500.0, 700.0
SOFT_TISSUE_HU = (-100.0, 100.0)
MIN_AIR_FRACTION = 0.05  # the corners of any axial head FOV are air
MIN_BONE_FRACTION = 0.003
MIN_SOFT_FRACTION = 0.02
MIN_BONE_COVERAGE = 0.5  # of the angles around the soft tissue's centre that meet bone
ANGLE_BINS = 24
MIN_STD_HU = 5.0  # below this a slice is constant, whatever its level
MIN_STD_LEVELS = 3.0  # the same for 8-bit pictures, in grey levels
MIN_NEIGHBOUR_CORRELATION = 0.5  # anatomy is smooth at the pixel scale; noise is not
MAX_ASPECT = 2.0
MAX_COLOUR_SPREAD = 0.08  # mean within-level spread of the other channels, as a fraction of 255
DARK_LEVEL, MIN_DARK_FRACTION = 24, 0.05
MIN_BORDER_DARK = 0.5  # of the picture's outer frame: air around the head
MIN_LARGEST_PART = 0.25  # of the non-dark pixels, in the largest connected part
BRIGHT_SHARE = 0.75  # of the head's level range (dark level to its 99th percentile): the skull
MIN_RING = 0.5  # of the angles around the tissue where the bright skull reaches its outline
RING_REACH = 0.5  # how far out: the bright pixels' radius over the tissue's, per angle (loose:
# at the skull base the face and neck reach beyond the bone)
_CHECK_SIDE = 128
# Modalities a CT slice is filed under by converters, anonymisers and teaching files (Secondary
# Capture "OT", "SC"): read as CT when the values are CT in HU.
RESEARCH_MODALITIES = ("OT", "SC")


def check(s: inputs.Slice) -> str | None:
  """None when the slice may be an axial head CT slice; otherwise one sentence saying why not.

  A DICOM filed as Secondary Capture or "other" (converters, anonymisers, teaching files) is
  read as CT when its values are CT in HU; MR, X-ray and screenshots filed so are refused.
  """
  g = s.geometry
  if g is not None and g.modality and g.modality.upper() != "CT":
    if g.modality.upper() not in RESEARCH_MODALITIES or s.hu is None:
      return (f"the file's Modality is {g.modality}, not CT: this model reads head CT only "
              "(no MR, X-ray or other images)")
    refusal = check_hu(s.hu)
    if refusal:
      return (f"the file's Modality is {g.modality}, not CT, and its values do not read as CT "
              f"in HU: {refusal}")
  if g is not None and g.body_part and not _is_head(g.body_part):
    return (f"the file's BodyPartExamined is {g.body_part!r}, not the head: this model reads "
            "head CT only")
  aspect = max(s.shape) / max(1, min(s.shape))
  if aspect > MAX_ASPECT:
    return (f"the image is {s.shape[1]}x{s.shape[0]} pixels (aspect {aspect:.1f}:1); an axial "
            "head CT slice is about square")
  return check_hu(s.hu) if s.hu is not None else check_picture(s.picture)


def note(s: inputs.Slice) -> str | None:
  """How an accepted slice was read when its file did not say it plainly, or None."""
  g = s.geometry
  if g is None:
    return None
  notes = []
  if g.modality and g.modality.upper() in RESEARCH_MODALITIES:
    notes.append(f"Modality {g.modality}: read as CT in HU because its values are Hounsfield "
                 f"units (air near -1,000 around a skull ring >= {BONE_HU:.0f})")
  if g.position_z is None:
    notes.append("no ImagePositionPatient: placed in its series by InstanceNumber, then name")
  return "; ".join(notes) or None


def check_hu(hu: np.ndarray) -> str | None:
  """Content of a CT slice in HU: structure, air around, a bone ring around soft tissue."""
  x = _small(hu).astype(np.float32)
  if float(x.std()) < MIN_STD_HU:
    return (f"the slice is constant (about {float(x.mean()):.0f} HU everywhere); it holds no "
            "anatomy to judge")
  if _neighbour_correlation(x) < MIN_NEIGHBOUR_CORRELATION:
    return "the slice looks like noise, not anatomy (neighbouring pixels are unrelated)"
  air = float(np.mean(x < AIR_THRESHOLD_HU))
  if air < MIN_AIR_FRACTION:
    return (f"only {100 * air:.0f}% of the slice is air; an axial head slice has air around "
            "the head, so this looks like a cropped or non-head image")
  soft = (x > SOFT_TISSUE_HU[0]) & (x < SOFT_TISSUE_HU[1])
  bone = x >= BONE_HU
  if soft.mean() < MIN_SOFT_FRACTION or bone.mean() < MIN_BONE_FRACTION:
    return (f"no skull around soft tissue ({100 * bone.mean():.1f}% bone >= {BONE_HU:.0f} HU, "
            f"{100 * soft.mean():.0f}% soft tissue); this does not look like a head CT slice")
  coverage = _ring(soft, bone)
  if coverage < MIN_BONE_COVERAGE:
    return (f"bone (>= {BONE_HU:.0f} HU) surrounds only {100 * coverage:.0f}% of the soft "
            "tissue's outline; a head CT slice has a skull ring around the brain")
  return None


def check_picture(picture: np.ndarray) -> str | None:
  """An 8-bit picture: grey-like, with structure and a dark background (see the module doc)."""
  x = _small(picture).astype(np.float32)
  if x.ndim == 3:
    spread = _colour_spread(x)
    if spread > MAX_COLOUR_SPREAD:
      return ("the picture is in colour (its channels vary independently); a CT slice is grey, "
              "or the three CT windows of one slice as RGB")
    x = x.mean(axis=-1)
  if float(x.std()) < MIN_STD_LEVELS:
    return "the picture is nearly uniform; it holds no anatomy to judge"
  if _neighbour_correlation(x) < MIN_NEIGHBOUR_CORRELATION:
    return "the picture looks like noise, not anatomy (neighbouring pixels are unrelated)"
  dark = float(np.mean(x <= DARK_LEVEL))
  if dark < MIN_DARK_FRACTION:
    return (f"only {100 * dark:.0f}% of the picture is dark; a windowed head CT slice shows black "
            "air around the head")
  shape = picture_shape(x)
  if shape.border_dark < MIN_BORDER_DARK:
    return (f"only {100 * shape.border_dark:.0f}% of the picture's edge is dark air; a head CT "
            "slice has air around the head (a tight crop, an inverted picture or a screenshot "
            "with its interface looks like this): upload the whole slice as exported")
  if shape.largest_part < MIN_LARGEST_PART:
    return (f"the picture's non-dark pixels are scattered (its largest part holds "
            f"{100 * shape.largest_part:.0f}%): it looks like text or a pattern, not one head")
  if shape.tissue >= MIN_SOFT_FRACTION and shape.ring < MIN_RING:
    return (f"its brightest levels reach the tissue's outline at only {100 * shape.ring:.0f}% "
            "of the angles around it; a windowed head CT slice shows the white skull around "
            "the brain")
  return None


@dataclasses.dataclass(frozen=True)
class PictureShape:
  """What a windowed head slice shows whatever its window, size and compression (fractions)."""

  head: float  # of the picture that is not dark: the head, its scalp, the headrest
  border_dark: float  # of the picture's outer frame (4% of its side) that is dark
  tissue: float  # of the picture between dark and bright: brain, scalp, muscle
  largest_part: float  # of the non-dark pixels in the largest connected part
  ring: float  # of the angles around the tissue where bright pixels reach its outline
  fill: float  # non-dark pixels over the ellipse of their extent: about 1 for one round head
  enclosed: float  # of the tissue inside the closed bright ring: the brain within its skull

  STATISTICS = ("head fraction", "air along the edge", "largest part", "skull ring",
                "fill of the outline", "tissue inside the skull")

  def statistics(self) -> tuple[float, ...]:
    """The window-free numbers a checkpoint's picture domain is fitted on (`STATISTICS`)."""
    return self.head, self.border_dark, self.largest_part, self.ring, self.fill, self.enclosed


def picture_shape(grey: np.ndarray) -> PictureShape:
  """`PictureShape` of a grey 8-bit picture (H, W), on a copy of at most 128 pixels a side."""
  x = _small(grey).astype(np.float32)
  head = x > DARK_LEVEL
  frame = np.ones_like(head)
  f = max(1, round(0.04 * min(x.shape)))
  frame[f:-f, f:-f] = False
  levels = x[head]
  top = float(np.percentile(levels, 99)) if levels.size else 0.0
  bright = head & (x >= DARK_LEVEL + BRIGHT_SHARE * (top - DARK_LEVEL))
  tissue = head & ~bright
  parts, count = ndimage.label(head)
  largest = np.bincount(parts.ravel())[1:].max() / head.sum() if count else 0.0
  fill = 0.0
  if head.any():
    ys, xs = np.nonzero(head)
    extent = [np.percentile(v, 99) - np.percentile(v, 1) + 1 for v in (ys, xs)]
    fill = float(head.sum() / (np.pi / 4 * extent[0] * extent[1]))
  ring = _ring(tissue, bright, RING_REACH) if tissue.any() and bright.any() else 0.0
  inside = ndimage.binary_fill_holes(bright) & tissue
  enclosed = float(inside.sum() / tissue.sum()) if tissue.any() else 0.0
  return PictureShape(float(head.mean()), float(1 - head[frame].mean()), float(tissue.mean()),
                      float(largest), ring, fill, enclosed)


def _is_head(body_part: str) -> bool:
  words = body_part.upper().replace("_", " ")
  return any(w in words for w in HEAD_WORDS)


def _small(image: np.ndarray) -> np.ndarray:
  """A strided copy of at most `_CHECK_SIDE` pixels a side: the statistics need no more."""
  step = max(1, int(np.ceil(max(image.shape[:2]) / _CHECK_SIDE)))
  return image[::step, ::step]


def _neighbour_correlation(x: np.ndarray) -> float:
  """Mean correlation of each pixel with its right and lower neighbours."""
  out = []
  for a, b in ((x[:, :-1], x[:, 1:]), (x[:-1], x[1:])):
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    out.append(float((a * b).sum()) / den if den > 0 else 1.0)
  return float(np.mean(out))


def _ring(inside: np.ndarray, ring: np.ndarray, reach: float = 0.0) -> float:
  """Fraction of angular sectors around `inside`'s centre where `ring` pixels reach at least
  `reach` times as far out as `inside` does (0: any ring pixel in the sector counts)."""
  ys, xs = np.nonzero(inside)
  cy, cx = ys.mean(), xs.mean()

  def farthest(mask):
    y, x = np.nonzero(mask)
    sectors = ((np.arctan2(y - cy, x - cx) + np.pi) / (2 * np.pi) * ANGLE_BINS).astype(int)
    out = np.full(ANGLE_BINS, -1.0)
    np.maximum.at(out, np.clip(sectors, 0, ANGLE_BINS - 1), np.hypot(y - cy, x - cx))
    return out

  out, inner = farthest(ring), farthest(inside)
  return float(np.mean((out >= 0) & (out >= reach * inner)))


def _colour_spread(rgb: np.ndarray) -> float:
  """How far the channels are from being functions of one value (0 for grey and CT windows).

  Pixels are grouped by the level of the channel with the most distinct levels; within a group,
  a grey, tinted or CT-window picture has (almost) one value per other channel, a photo many.
  """
  levels = rgb.reshape(-1, 3)
  key = int(np.argmax([len(np.unique(levels[:, c])) for c in range(3)]))
  groups = levels[:, key].astype(np.int64)
  counts = np.bincount(groups, minlength=256).astype(np.float64)
  spread = 0.0
  for c in range(3):
    if c == key:
      continue
    v = levels[:, c].astype(np.float64)
    mean = np.bincount(groups, v, 256) / np.maximum(counts, 1)
    var = np.bincount(groups, v * v, 256) / np.maximum(counts, 1) - mean ** 2
    spread += float(np.sum(counts * np.sqrt(np.maximum(var, 0)))) / counts.sum()
  return spread / 2 / 255.0
