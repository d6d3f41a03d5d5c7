"""TFDS datasets: `build` makes them (phantom, RSNA, PNG folders), `read` opens them.

The names below are the dataset API the rest of ichflax uses (`ichflax.data` re-exports the
four of its contract lazily).
"""

from ichflax.data.builders.build import (BuildConfig, build_phantom, build_png, build_rsna,
                                         cache_dir, prepare, CACHE_ENV, PROTOCOLS)
from ichflax.data.builders.read import (DataError, dataset_info, open_split, read_meta,
                                        INFO_FILE, REPORT_FILE)

__all__ = ("BuildConfig", "CACHE_ENV", "DataError", "INFO_FILE", "PROTOCOLS", "REPORT_FILE",
           "build_phantom", "build_png", "build_rsna", "cache_dir", "dataset_info", "open_split",
           "prepare", "read_meta")
