"""Series order by position (the reader) and the study summary, on a real checkpoint."""

from __future__ import annotations

import numpy as np
from test_predictor import predictor, tiny_checkpoint, write_dicom  # noqa: F401

from ichflax.data import phantom, sources
from ichflax.serving import series


def test_series_ordered_by_position(predictor, tmp_path):
  rng = np.random.default_rng(2)
  zs = [15.0, 0.0, 10.0, 5.0]
  for i, z in enumerate(zs):  # file names deliberately not in z order
    write_dicom(tmp_path / f"{chr(100 - i)}.dcm", phantom.make_slice(rng, 64).hu, i, z)
  group, = sources.read([tmp_path], windows=predictor.windows,
                        stored_size=predictor.stored_size).series
  (ordered, problems), = group.batches(len(zs))
  assert not problems and [s.geometry.position_z for s in ordered] == sorted(zs)
  preds = predictor.predict(ordered)
  # The tiny model (8 training slices) may find these unlike its data: reveal them.
  summary = series.summarise(preds, reveal=True)
  assert summary["slices"] == 4 and summary["status"] == "ok"
  assert summary["hemorrhage_probability"] == max(p.probabilities["any"] for p in preds)
