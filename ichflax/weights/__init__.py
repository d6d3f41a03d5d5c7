"""ImageNet weights for the backbone: fetch the official files, convert them to orbax, load."""

from ichflax.weights.convert import ConversionError, convert, load_backbone, read_metadata
from ichflax.weights.fetch import SOURCES, FetchError, fetch

__all__ = [
           "SOURCES",
           "ConversionError",
           "FetchError",
           "convert",
           "fetch",
           "load_backbone",
           "read_metadata",
]
