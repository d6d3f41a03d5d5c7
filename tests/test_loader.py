"""Loader: every example once, seeded order per (seed, epoch), exact resume, padded eval."""

import time

import numpy as np
import pytest

from ichflax.data import loader


@pytest.fixture(scope="module")
def source():
  """A random-access split of 23 records shaped like open_split's (a list is a real source)."""
  return [{"image": np.full((4, 4, 3), i, np.uint8), "labels": np.eye(6, dtype=np.int32)[i % 6],
           "group": i % 6, "image_id": f"ID_{i}", "study_id": ""} for i in range(23)]


def _ids(batches):
  return [int(i) for b in batches for i in b["image"][b["mask"], 0, 0, 0]]


def test_eval_pads_last_batch_and_keeps_every_example_once(source):
  indices = np.arange(3, 23)  # 20 examples, batches of 8: 8, 8, 4 (+4 padding)
  out = list(loader.batches(source, indices, 8, shuffle=False))
  assert [b["image"].shape for b in out] == [(8, 4, 4, 3)] * 3
  assert out[0]["image"].dtype == np.uint8 and out[0]["labels"].dtype == np.int32
  assert out[-1]["mask"].tolist() == [True] * 4 + [False] * 4
  assert not out[-1]["labels"][4:].any() and not out[-1]["image"][4:].any()
  assert _ids(out) == list(range(3, 23))
  np.testing.assert_array_equal(out[1]["group"], [i % 6 for i in range(11, 19)])


def test_train_drops_remainder(source):
  out = list(loader.batches(source, range(23), 5, shuffle=True, drop_remainder=True))
  assert len(out) == 4 and all(b["mask"].all() for b in out)
  assert len(set(_ids(out))) == 20


def test_order_is_fixed_by_seed_and_epoch(source):
  run = lambda seed, epoch: _ids(loader.batches(source, range(23), 4, shuffle=True, seed=seed,
                                                epoch=epoch))
  assert run(0, 0) == run(0, 0)
  assert sorted(run(0, 0)) == list(range(23))
  assert run(0, 0) != run(0, 1) and run(0, 0) != run(1, 0)


def test_resume_at_start_batch_sees_the_same_batches(source):
  full = list(loader.batches(source, range(23), 4, shuffle=True, seed=7, epoch=2))
  resumed = list(loader.batches(source, range(23), 4, shuffle=True, seed=7, epoch=2,
                                start_batch=3))
  assert len(resumed) == len(full) - 3
  for a, b in zip(full[3:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
  assert not list(loader.batches(source, range(23), 4, shuffle=True, start_batch=6))


class _SlowSource(list):
  """Records that take a while to read, so decoding threads finish out of order."""

  def __getitem__(self, i):
    time.sleep(0.002 * ((i * 7) % 5))
    return super().__getitem__(i)


@pytest.mark.parametrize("threads,prefetch", [(1, 0), (1, 4), (4, 1), (4, 16)])
def test_threads_and_prefetch_change_speed_not_batches(source, threads, prefetch):
  slow = _SlowSource(source)
  want = _ids(loader.batches(source, range(23), 4, shuffle=True, seed=3))
  got = _ids(loader.batches(slow, range(23), 4, shuffle=True, seed=3, threads=threads,
                            prefetch=prefetch))
  assert got == want


def test_worker_processes_give_the_same_batches(source):
  threads = list(loader.batches(source, range(23), 4, shuffle=True, seed=1))
  workers = list(loader.batches(source, range(23), 4, shuffle=True, seed=1, workers=1))
  assert _ids(threads) == _ids(workers)


def test_bad_arguments(source):
  with pytest.raises(ValueError, match="batch_size must be at least 1"):
    loader.batches(source, range(3), 0, shuffle=False)
  with pytest.raises(ValueError, match="start_batch"):
    loader.batches(source, range(3), 2, shuffle=False, start_batch=-1)
  with pytest.raises(IndexError, match=r"\[0, 23\)"):
    loader.batches(source, [0, 23], 2, shuffle=False)
  assert not list(loader.batches(source, [], 4, shuffle=False))
