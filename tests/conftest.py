"""Shared test set-up: CPU only, no network, fixtures made by the project's own code."""

import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")  # the Keras reference must never reach for TensorFlow
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
_TMP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tmp")
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(_TMP, "tfds"))
# One XLA compile cache for the session and every subprocess it starts: ResNet50 programs
# compiled by one test are reused by the next instead of recompiled (tens of seconds each).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_TMP, "xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_collection_modifyitems(config, items):
  """Under mutmut, a mutant's tests run cheapest first (mutmut lists them in set order).

  mutmut runs them with -x, so a killed mutant then costs its cheapest killing test instead of
  a random share of all tests covering its function: the whole run takes a fraction of the time
  (docs/testing.md). Durations are the ones mutmut measured in its stats run.
  """
  if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
    return
  with open(os.path.join(config.rootpath, "mutmut-stats.json")) as f:
    seconds = json.load(f)["duration_by_test"]
  # A test without a duration runs last rather than erroring: an error would count as a kill.
  items.sort(key=lambda item: seconds.get(item.nodeid, float("inf")))
