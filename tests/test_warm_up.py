"""The app starts ready: every batch shape compiled before serving, caches kept on a Space."""

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import demo
from demo import server as app
from ichflax.serving import predictor as predictor_lib


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


def test_a_space_keeps_its_caches_on_persistent_storage(tmp_path, monkeypatch):
  """With /data mounted, downloaded weights and compiled programs survive a restart."""
  for name in ("SPACE_ID", "HF_HOME", "ICHFLAX_JAX_CACHE"):
    monkeypatch.delenv(name, raising=False)
  app.space_storage(str(tmp_path))
  assert "HF_HOME" not in os.environ, "only on a Space"
  monkeypatch.setenv("SPACE_ID", "someone/ichflax")
  app.space_storage(str(tmp_path / "not-mounted"))
  assert "HF_HOME" not in os.environ, "only with persistent storage"
  monkeypatch.setenv("ICHFLAX_JAX_CACHE", "/elsewhere")
  app.space_storage(str(tmp_path))
  assert os.environ["HF_HOME"] == str(tmp_path / ".huggingface")
  assert os.environ["ICHFLAX_JAX_CACHE"] == "/elsewhere", "an explicit setting wins"


def test_the_page_is_the_checkouts_demo_package(tmp_path, monkeypatch):
  """`ichflax-demo` from any folder serves demo/ beside ichflax/ (an editable install keeps the
  checkout); without one it says how to install, instead of an ImportError."""
  from ichflax.checkpoint import discover
  discover.checkout_package("demo")
  assert str(discover.CHECKOUT) in sys.path and Path(demo.__file__).parent == (
      discover.CHECKOUT / "demo")
  monkeypatch.setattr(discover, "CHECKOUT", tmp_path)
  with pytest.raises(SystemExit, match="no demo/ beside .* `pip install -e CHECKOUT`"):
    discover.checkout_package("demo")
