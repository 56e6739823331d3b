"""Image data sources: IDX parsing, checksummed downloads and loaders."""

# The fetch() function is deliberately not re-exported: it would shadow the `fetch` submodule.
from ..paths import cache_dir
from .errors import DataError
from .idx import read_idx, write_idx
from .images import (IMAGE_SETS, ImageSet, load_digits8x8, load_emnist, load_fashion_mnist,
                     load_images, load_mnist)

__all__ = ["DataError", "IMAGE_SETS", "ImageSet", "cache_dir", "load_digits8x8", "load_emnist",
           "load_fashion_mnist", "load_images", "load_mnist", "read_idx", "write_idx"]
