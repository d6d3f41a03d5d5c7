"""A NIfTI CT volume (.nii, .nii.gz) -> axial slices in HU, shown as a DICOM viewer shows them.

Research sets (CT-ICH, INSTANCE, BHSD) ship head CT as NIfTI. Whatever axis order and signs the
affine uses, the volume is reoriented to the closest canonical axes (RAS+) and each axial slice
is presented as radiologists see DICOM: patient's right on the image's left, anterior up. So a
NIfTI and the DICOM series it was converted from give the model the same pixels. The voxels are
viewed in place (no copy), and one slice at a time is turned into HU.
"""

from __future__ import annotations

import gzip
import io
import zlib

import nibabel as nib
import numpy as np
from nibabel import orientations

from ichflax.data import filetypes, image
from ichflax.data.items import InputError, SliceGeometry

# Decompressed volume at most 2 GiB: 1,000 int16 slices of 1024x1024. Checked against the header
# before the rest is decompressed, so a small .nii.gz cannot expand without limit.
MAX_BYTES = 2 * 2**30
# A voxel edge outside this range (mm) is a broken affine, not a scanner's geometry.
VOXEL_MM = (0.01, 50.0)
# Axial pixels more than this much longer one way than the other come from a non-axial
# acquisition resliced; they would reach the model stretched.
MAX_ASPECT = 2.0
# A head CT in HU always holds air around the head (about -1000 HU); a volume whose lowest value
# is above this was rescaled (0-255, HU + 1024 ...) and cannot be windowed.
AIR_BELOW_HU = -500.0
_HEADER_BYTES = 540  # a NIfTI-2 header; a NIfTI-1 header (348) fits in it
_FIX = ("convert the DICOM series again (e.g. with dcm2niix), or upload the DICOM files")


class Volume:
  """A 3-D CT volume: `frames` axial slices, inferior to superior, each decoded on demand."""

  def __init__(self, data: bytes, name: str, max_bytes: int = MAX_BYTES):
    self.name = name
    data = _decompress(data, name, max_bytes) if filetypes.sniff(data) == filetypes.GZIP else data
    hdr = _header(data, name)
    shape, dtype, offset = hdr.get_data_shape(), hdr.get_data_dtype(), int(hdr.get_data_offset())
    if dtype.fields is not None or dtype.kind not in "iuf":
      raise InputError(name, f"stores {dtype} voxels (colour or complex); a CT volume stores one "
                       "number per voxel")
    shape = _three_d(shape, name)
    size = int(np.prod(shape)) * dtype.itemsize
    if offset + size > len(data):
      raise InputError(name, f"holds {len(data) - offset:,} bytes of voxels where its header "
                       f"declares {size:,}: the file is cut short; copy or export it again")
    voxels = np.frombuffer(data, dtype, int(np.prod(shape)), offset).reshape(shape, order="F")
    affine = hdr.get_best_affine()
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if (not np.all(np.isfinite(affine)) or zooms.min() < VOXEL_MM[0] or zooms.max() > VOXEL_MM[1]
        or abs(np.linalg.det(affine[:3, :3])) < 1e-6):
      raise InputError(name, "has an unusable affine (voxel-to-patient geometry: voxel sizes "
                       f"{_mm(zooms)} mm); the slices cannot be placed in the patient: {_FIX}")
    ornt = orientations.io_orientation(affine)
    self._ras = orientations.apply_orientation(voxels, ornt)  # a view: flips and a transpose
    ras_zooms = zooms[np.argsort(ornt[:, 0])]
    aspect = max(ras_zooms[:2]) / min(ras_zooms[:2])
    if aspect > MAX_ASPECT:
      plane = "sagittal" if ras_zooms[0] > ras_zooms[1] else "coronal"
      raise InputError(name, f"was acquired in the {plane} plane (voxels {_mm(ras_zooms)} mm): "
                       f"axial slices resliced from it would be {aspect:.1f}x stretched; upload "
                       "an axial series")
    if self._ras.shape[0] * self._ras.shape[1] > image.MAX_PIXELS:
      raise InputError(name, f"has axial slices of {self._ras.shape[0]}x{self._ras.shape[1]} "
                       f"voxels, over the {image.MAX_PIXELS:,}-pixel limit for one slice")
    slope, inter = hdr.get_slope_inter()
    self._slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    self._inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    low, high = sorted(float(v) * self._slope + self._inter for v in (voxels.min(), voxels.max()))
    if low > AIR_BELOW_HU or high < 0:
      raise InputError(name, f"holds values from {low:g} to {high:g}, not Hounsfield units (air "
                       "around the head is about -1000 HU; a volume rescaled to 0-255 or stored as "
                       f"HU + 1024 cannot be windowed): {_FIX}")
    ras_affine = affine @ orientations.inv_ornt_aff(ornt, shape)
    self.frames = self._ras.shape[2]
    self.geometries = tuple(
        SliceGeometry("", "", f"nifti:{name}", k + 1, float((ras_affine @ [0, 0, k, 1])[2]))
        for k in range(self.frames))

  def hu(self, index: int) -> np.ndarray:
    """float32 (A->P rows, R->L columns) HU of axial slice `index`, as a DICOM viewer shows it.

    RAS+ voxel (i, j) grows to the patient's right and front; the viewer puts the patient's
    right on the left and the front up, so both axes are reversed and rows become j.
    """
    hu = self._ras[::-1, ::-1, index].T.astype(np.float32) * self._slope + self._inter
    return np.maximum(hu, image.AIR_FILL_HU).astype(np.float32)


def _mm(values) -> str:
  return " x ".join(f"{v:.3g}" for v in values)


def _decompress(data: bytes, name: str, max_bytes: int) -> bytes:
  """The gunzipped volume, refused when its header declares more than `max_bytes`."""
  try:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
      head = f.read(_HEADER_BYTES)
      declared = _declared_bytes(head, name)
      if declared > max_bytes:
        raise InputError(name, f"declares {declared / 2**20:,.0f} MB of voxels, over the "
                         f"{max_bytes / 2**20:,.0f} MB limit; upload one head CT series")
      return head + f.read(max(declared - len(head), 0))
  except (OSError, EOFError, zlib.error):
    raise InputError(name, "is a damaged gzip file (not a readable .nii.gz); copy or export it "
                     "again") from None


def _header(data: bytes, name: str) -> nib.Nifti1Header:
  if filetypes.sniff(data) != filetypes.NIFTI:
    raise InputError(name, "is not a NIfTI volume (no NIfTI header); upload a .nii/.nii.gz CT "
                     "volume, DICOM slices, or PNG/JPG images")
  klass = nib.Nifti2Header if data[4:8] == b"n+2\0" else nib.Nifti1Header
  try:
    return klass.from_fileobj(io.BytesIO(data[:_HEADER_BYTES]), check=False)
  except Exception:  # noqa: BLE001  (nibabel raises several types for a damaged header)
    raise InputError(name, f"has a damaged NIfTI header: {_FIX}") from None


def _declared_bytes(head: bytes, name: str) -> int:
  hdr = _header(head, name)
  return int(hdr.get_data_offset()) + int(np.prod(hdr.get_data_shape())) * (
      hdr.get_data_dtype().itemsize)


def _three_d(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
  """(x, y, z): trailing singleton axes dropped, a single 2-D slice given one slice axis."""
  while len(shape) > 3 and shape[-1] == 1:
    shape = shape[:-1]
  if len(shape) > 3:
    raise InputError(name, f"is a {len(shape)}-D volume ({' x '.join(map(str, shape))}), e.g. "
                     "perfusion or several scans in time; upload one 3-D CT volume")
  if len(shape) < 2 or min(shape) < 1 or min(shape[:2]) < 2:
    raise InputError(name, f"has voxel dimensions {shape}; give a 3-D CT volume")
  return tuple(shape) + (1,) * (3 - len(shape))
