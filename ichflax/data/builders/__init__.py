"""TFDS datasets: `build` makes them (phantom, RSNA, PNG folders), `read` opens them.

The names below are the dataset API the rest of ichflax uses (`ichflax.data` re-exports the
four of its contract lazily).
"""

from ichflax.data.builders.build import (
                                         CACHE_ENV,
                                         BuildConfig,
                                         build_phantom,
                                         build_png,
                                         build_rsna,
                                         cache_dir,
                                         prepare,
)
from ichflax.data.builders.read import (
                                         INFO_FILE,
                                         REPORT_FILE,
                                         DataError,
                                         dataset_info,
                                         open_split,
                                         read_meta,
)

__all__ = (
                                         "CACHE_ENV",
                                         "INFO_FILE",
                                         "REPORT_FILE",
                                         "BuildConfig",
                                         "DataError",
                                         "build_phantom",
                                         "build_png",
                                         "build_rsna",
                                         "cache_dir",
                                         "dataset_info",
                                         "open_split",
                                         "prepare",
                                         "read_meta",
)
