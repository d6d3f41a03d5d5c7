"""One input file -> the model image: the single path shared by dataset builds and serving.

bytes -> what kind of file (`filetypes`) -> HU (DICOM) or an 8-bit picture (PNG/JPG) -> the
stored model image. The dataset builders convert each file with `dicom_slice` or
`picture_slice`, and the Predictor's `load_slice` dispatches to the same two functions, so a
file can never be read one way in training and another in serving.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ichflax.data import dicom, filetypes, image
from ichflax.data.items import InputError, SliceGeometry

# PIL modes read as grey or colour 8-bit pictures; others (16-bit, float) carry no window.
_GREY_MODES, _COLOUR_MODES = ("L", "1", "LA"), ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")

Source = str | os.PathLike | bytes | np.ndarray


@dataclasses.dataclass(frozen=True)
class Slice:
  """One input slice, ready for every model sharing the same preprocessing."""

  name: str
  model_image: np.ndarray  # uint8 (stored_size, stored_size, C): what training stored
  picture: np.ndarray | None = None  # uint8 (H, W) or (H, W, 3) as given: PNG/JPG, uint8 arrays
  hu: np.ndarray | None = None  # float32 (H, W), DICOM and HU arrays only
  geometry: SliceGeometry | None = None  # DICOM only: orders a series, no patient tags
  frame: int | None = None  # 1-based slice of a multi-frame DICOM or a NIfTI volume

  @property
  def label(self) -> str:
    """The file, and the slice within it for a volume: how people see this slice named."""
    return self.name if self.frame is None else f"{self.name} [slice {self.frame}]"

  @functools.cached_property
  def display(self) -> np.ndarray:
    """uint8 at input resolution: the picture, or the brain window of HU.

    Made on first use, so dataset builds never pay for a view they do not show.
    """
    return self.picture if self.hu is None else image.window(self.hu, *image.WINDOWS["brain"])

  @property
  def shape(self) -> tuple[int, int]:
    return (self.picture if self.hu is None else self.hu).shape[:2]


def check_picture(data: bytes, name: str) -> None:
  """Refuses a picture from its header alone (kind, size, bit depth), decoding no pixels: a
  folder or zip of pictures is checked when read and decoded once, when its batch comes."""
  _open_picture(data, name).close()


def read_picture(data: bytes, name: str) -> np.ndarray:
  """uint8 (H, W) or (H, W, 3) from PNG/JPEG bytes, refusing oversized, 16-bit or damaged ones."""
  img = _open_picture(data, name)
  try:
    with img:
      return np.asarray(img.convert("L" if img.mode in _GREY_MODES else "RGB"))
  except Image.DecompressionBombError:
    raise InputError(name, "image dimensions are far too large (a decompression bomb?); "
                     "upload a CT slice of at most 4096x4096 pixels") from None
  except Exception as e:  # noqa: BLE001  (PIL raises many types for damaged files)
    raise InputError(name, f"damaged or truncated image ({e}); export the slice again") from None


def _open_picture(data: bytes, name: str) -> Image.Image:
  """The lazily opened picture (its header read), or an InputError saying why not."""
  signature = filetypes.match(data)
  if signature is None or signature.kind not in filetypes.PICTURES:
    what = signature.description if signature else "no known image format"
    raise InputError(name, f"not a PNG or JPG image ({what}); export the slice as an 8-bit "
                     "PNG/JPG")
  try:
    img = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError:
    raise InputError(name, "image dimensions are far too large (a decompression bomb?); "
                     "upload a CT slice of at most 4096x4096 pixels") from None
  except Exception as e:  # noqa: BLE001  (PIL raises many types for damaged files)
    raise InputError(name, f"damaged or truncated image ({e}); export the slice again") from None
  w, h = img.size
  problem = None
  if w * h > image.MAX_PIXELS:
    problem = (f"image is {w}x{h} pixels, over the {image.MAX_PIXELS:,}-pixel limit (4096x4096); "
               "a CT slice is usually 512x512: downscale it or upload the DICOM")
  elif img.mode not in _GREY_MODES and img.mode not in _COLOUR_MODES:
    problem = (f"{img.mode} image (16-bit or float) has no display window; upload an 8-bit "
               "PNG/JPG or the original DICOM")
  if problem:
    img.close()
    raise InputError(name, problem)
  return img


def dicom_slice(source: str | os.PathLike | bytes, name: str | None = None, *,
                windows: Sequence[image.Window] = image.THREE_WINDOWS,
                stored_size: int = 256) -> Slice:
  """A DICOM slice (path or bytes): HU, then `image.slice_to_uint8` with the training windows."""
  if isinstance(source, bytes):
    name = name or "<uploaded file>"
    source = io.BytesIO(source)
    source.name = name  # DicomError messages name the file, not a buffer
  hu, geometry = dicom.read_slice(source)
  return from_hu(hu, name or os.fspath(source), windows=windows, stored_size=stored_size,
                 geometry=geometry)


def picture_slice(source: str | os.PathLike | bytes, name: str | None = None, *,
                  windows: Sequence[image.Window] = image.THREE_WINDOWS,
                  stored_size: int = 256) -> Slice:
  """A PNG/JPG slice (path or bytes), already windowed: see `image.picture_to_model`."""
  name, data = _read_bytes(source, name)
  return _from_picture(read_picture(data, name), name, windows, stored_size)


def load_slice(source: Source, name: str | None = None, *,
               windows: Sequence[image.Window] = image.THREE_WINDOWS,
               stored_size: int = 256) -> Slice:
  """One slice from a path, file bytes, or an array (float: HU; uint8: a picture).

  The content decides the route (`dicom_slice` or `picture_slice`), never the file name.
  Raises an `InputError` naming the input and what to do.
  """
  if isinstance(source, np.ndarray):
    return _from_array(source, name or "array", windows, stored_size)
  name, data = _read_bytes(source, name)
  kind = filetypes.sniff(data)
  if kind in filetypes.PICTURES:
    return picture_slice(data, name, windows=windows, stored_size=stored_size)
  if kind == filetypes.DICOM:
    return dicom_slice(data, name, windows=windows, stored_size=stored_size)
  if kind in (filetypes.NIFTI, filetypes.GZIP, filetypes.ZIP):
    raise InputError(name, "holds a series (a volume or an archive), not one slice: read it with "
                     "`ichflax.data.sources` (the CLI and the app do)")
  raise InputError(name, "not a DICOM, PNG or JPG file (no DICOM header); upload a CT slice as "
                   "exported by the scanner or PACS (.dcm), or as a PNG/JPG image")


def _read_bytes(source: str | os.PathLike | bytes, name: str | None) -> tuple[str, bytes]:
  if isinstance(source, (bytes, bytearray)):
    data, name = bytes(source), name or "<uploaded file>"
  else:
    name = name or os.fspath(source)
    try:
      data = Path(source).read_bytes()
    except OSError as e:
      raise InputError(name, f"cannot read ({e.strerror or e})") from None
  if not data:
    raise InputError(name, "empty file (0 bytes); upload a DICOM, PNG or JPG CT slice")
  return name, data


def _from_array(array: np.ndarray, name: str, windows, stored_size: int) -> Slice:
  if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
    return _from_picture(array, name, windows, stored_size)
  if np.issubdtype(array.dtype, np.floating) and array.ndim == 2:
    return from_hu(array.astype(np.float32), name, windows=windows, stored_size=stored_size)
  raise InputError(name, f"array of {array.dtype} {array.shape}: give float HU (H, W) or "
                   "a uint8 image (H, W) / (H, W, 3)")


def from_hu(hu: np.ndarray, name: str, *, windows: Sequence[image.Window],
            stored_size: int, geometry: SliceGeometry | None = None,
            frame: int | None = None) -> Slice:
  """A slice of HU (a DICOM frame, a NIfTI slice, an array) through `image.slice_to_uint8`."""
  return Slice(name, image.slice_to_uint8(hu, windows, stored_size), hu=hu, geometry=geometry,
               frame=frame)


def _from_picture(picture: np.ndarray, name: str, windows, stored_size: int) -> Slice:
  if min(picture.shape[:2]) < 2:
    raise InputError(name, f"image is {picture.shape[1]}x{picture.shape[0]} pixels; too small: "
                     "give a CT slice")
  return Slice(name, image.picture_to_model(picture, windows, stored_size), picture=picture)
