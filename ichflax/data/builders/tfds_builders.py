"""TFDS builders that write array_record files without TensorFlow.

Images are stored as raw uint8 bytes (a `Tensor` feature, BYTES encoding), not PNG: reading one
back through `as_data_source()` is a protobuf parse and a memcpy (~0.5 ms for a 256 px 3-window
slice on one core) instead of a PNG decode (~3 ms), so a few cores feed a GPU. The price is disk:
S*S*C bytes per slice (192 KiB at 256 px, 3 windows; ~3.4x the PNG). Datasets built before
(version 1.0.0, PNG feature) still read, through TFDS's PNG decoder, at the old speed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

VERSION = "1.1.0"  # 1.1.0: raw uint8 images; 1.0.0: PNG


@dataclasses.dataclass(frozen=True)
class Record:
  """One stored example: the converted image file and what TFDS keeps beside it."""

  png: str
  labels: tuple[int, ...]
  group: int
  image_id: str
  study_id: str
  # Series order, kept in the labels side file (not the TFDS features): `ichflax.data.context`.
  series_id: str = ""
  position: float = float("nan")
  instance: int = -1


class _IchBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared builder: the split plan (records per split) is given by ichflax.data.builders."""

  VERSION = tfds.core.Version(VERSION)
  DESCRIPTION = ""

  def __init__(self, *, plan: dict[str, list[Record]] | None = None, size: int = 256,
               channels: int = 3, **kwargs):
    self._plan, self._size, self._channels = plan or {}, size, channels
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(self._size, self._size, self._channels),
                                          dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
            "labels": tfds.features.Tensor(shape=(6,), dtype=np.int32),
            "group": tfds.features.Scalar(dtype=np.int32),
            "image_id": tfds.features.Text(),
            "study_id": tfds.features.Text(),
        }),
        # Keep generation order: the labels side file (read_meta) lists examples in that order.
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: records were converted beforehand
    return {split: self._generate_examples(records) for split, records in self._plan.items()}

  def _generate_examples(self, records: list[Record]):
    for r in records:
      yield r.image_id, {"image": _pixels(r.png, self._channels),
                         "labels": np.asarray(r.labels, np.int32),
                         "group": r.group, "image_id": r.image_id, "study_id": r.study_id}


def _pixels(png: str, channels: int) -> np.ndarray:
  """The converted image's pixels, (S, S, C) uint8, exactly as `convert` wrote them."""
  with Image.open(png) as im:
    pixels = np.asarray(im)
  return pixels[..., None] if channels == 1 and pixels.ndim == 2 else pixels


class IchPhantom(_IchBuilder):
  """`ich_phantom`: synthetic head-CT slices (ichflax.data.phantom); no real patients."""

  DESCRIPTION = ("Synthetic head-CT phantom slices in RSNA format, windowed. Accuracy on this "
                 "data says nothing about real scans.")


class RsnaIch(_IchBuilder):
  """`rsna_ich`: the RSNA 2019 Intracranial Hemorrhage Detection data, from a manual folder."""

  DESCRIPTION = ("RSNA Intracranial Hemorrhage Detection (Kaggle 2019) slices, converted from "
                 "the user's own download (manual folder).")


class IchPng(_IchBuilder):
  """`ich_png`: the seed paper's PNG folders, one folder per class, already windowed."""

  DESCRIPTION = "Pre-windowed PNG slices in one folder per class, as the seed paper used."


BUILDERS = {"phantom": IchPhantom, "rsna": RsnaIch, "png": IchPng}
