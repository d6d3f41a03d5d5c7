"""Data: DICOM -> HU -> windows, RSNA labels and their draws into splits, phantom, TFDS, batches.

The dataset API (`prepare`, `open_split`, `read_meta`, `dataset_info`) is imported lazily so
that `ichflax.data.dicom` (used by the Predictor) does not pull in tensorflow_datasets.
"""

_BUILDER_API = ("prepare", "open_split", "read_meta", "dataset_info", "DataError")


def __getattr__(name):
  if name in _BUILDER_API:
    from ichflax.data import builders
    return getattr(builders, name)
  raise AttributeError(f"module 'ichflax.data' has no attribute {name!r}")
