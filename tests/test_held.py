"""The memory budget of the page's held slice views: over it, the oldest uploads are released
first, the newest is kept, and a released series tells its visitor to upload again."""

from __future__ import annotations

import gc
import os
import shutil

import numpy as np
import pytest
from test_sources import shipped_predictor  # noqa: F401

from bench.held_burst import make_zip
from bench.serve_concurrency import rss_mb
from demo import callbacks, held
from ichflax.data import synth


def _views(n: int, side: int = 64) -> list[callbacks.SliceView]:
  return [callbacks.SliceView(f"s{i}.dcm", None, np.zeros((side, side), np.int16),
                              np.zeros((side, side), np.uint8), None, {}, "", float(i))
          for i in range(n)]


def test_budget_releases_the_oldest_uploads_and_keeps_the_newest():
  one = _views(4)[0].nbytes  # 64 x 64 x (2 + 1) bytes
  budget = held.Budget(limit=10 * one)
  uploads = [_views(4) for _ in range(3)]
  for views in uploads:
    budget.hold(views)
  assert all(v.released and v.hu is None for v in uploads[0])  # 12 slices > 10: oldest out
  assert not any(v.released for v in uploads[1] + uploads[2])
  assert budget.held_bytes == 8 * one <= budget.limit
  huge = _views(30)
  budget.hold(huge)  # alone over budget: kept, everything older released
  assert not any(v.released for v in huge) and all(v.released for v in uploads[2])


def test_an_expired_session_frees_its_share():
  budget = held.Budget(limit=10**9)
  views = _views(3)
  budget.hold(views)
  assert budget.held_bytes == sum(v.nbytes for v in views)
  del views
  gc.collect()
  assert budget.held_bytes == 0


def test_a_released_series_asks_to_upload_again(tmp_path):
  demo = callbacks.Demo(None, tmp_path, held.Budget(limit=1))
  first = demo.example("series.zip")
  second = demo.example("series.zip")
  assert demo.show(3, first.views)["message"] == callbacks.SERIES_EXPIRED
  assert demo.show(3, second.views)["message"] != callbacks.SERIES_EXPIRED
  assert second.views[3].hu is not None


def test_budget_setting(monkeypatch):
  monkeypatch.setenv(held.BUDGET_ENV, "250")
  assert held.budget_bytes() == 250 * 2**20
  monkeypatch.delenv(held.BUDGET_ENV)
  assert held.budget_bytes() == held.DEFAULT_BUDGET_MB * 2**20
  monkeypatch.setenv(held.BUDGET_ENV, "lots")
  with pytest.raises(ValueError, match="not a number of MiB"):
    held.budget_bytes()


@pytest.mark.skipif(held._TRIM is None, reason="the heap is given back through glibc's malloc_trim")
def test_process_memory_follows_the_budget(tmp_path, shipped_predictor):
  """A burst of uploads through the shipped model grows RSS by about what the budget holds.

  Without giving the heap back after each analysis (`held.return_memory`), glibc kept the
  freed decoding and model buffers: measured 331 MB over 4 uploads holding 90 MB (99 MB with).
  """
  rng = np.random.default_rng(5)
  subject = synth.make_subject(rng, synth.sample_subtypes(rng, positive=1.0))
  scanner = synth.Scanner.sample(rng, subject.head_mm)
  distinct = [synth.render_slice(subject, scanner, z, 512, rng).hu
              for z in np.linspace(*subject.z_range, 8)[2:-2]]
  series = make_zip(tmp_path, 120, distinct)
  demo = callbacks.Demo(shipped_predictor, tmp_path / "uploads", held.Budget(limit=1))

  def upload(k: int) -> list[callbacks.SliceView]:
    copy = shutil.copy(series, tmp_path / f"upload{k}.zip")  # each upload is deleted once read
    views = demo.analyze([str(copy)]).views
    assert len(views) == 120
    return views

  sessions = [upload(0)]  # compiles what the burst needs
  gc.collect()
  held.return_memory()
  before = rss_mb(os.getpid())
  sessions += [upload(k) for k in range(1, 5)]  # kept, as gr.State keeps each visitor's
  gc.collect()
  assert demo.held.held_bytes == sum(v.nbytes for v in sessions[-1])  # the newest only
  grown = rss_mb(os.getpid()) - before
  assert grown < 2 * demo.held.held_bytes / 2**20, f"RSS grew {grown:.0f} MB"
