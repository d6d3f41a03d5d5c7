"""The app's warm-up compiles every batch shape a request can use, so none compiles on demand."""

import dataclasses

import numpy as np
import pytest

import demo
from ichflax import predictor as predictor_lib


@dataclasses.dataclass
class _Recorder:
  """Stands in for a Predictor: records the padded batch shapes that would be compiled."""

  batch_size: int
  compiled: set = dataclasses.field(default_factory=set)

  def predict(self, items):
    items = list(items)
    for start in range(0, len(items), self.batch_size):
      chunk = items[start:start + self.batch_size]
      self.compiled.add(len(predictor_lib._pad_batch(  # the Predictor's own padding
          np.zeros((len(chunk), 1)))))
    return []


@pytest.mark.parametrize("batch_size", [1, 5, 8])
def test_warm_up_covers_every_request_shape(batch_size):
  warmed = _Recorder(batch_size)
  demo.warm_up(warmed)
  for slices in range(1, 3 * batch_size + 2):  # one slice, short series, long series
    request = _Recorder(batch_size)
    request.predict([None] * slices)
    assert request.compiled <= warmed.compiled, (slices, request.compiled, warmed.compiled)
