"""Data-source registry: name -> (config class, constructor(cfg, chains))."""

from .distributions import (CategoricalSourceConfig, DistributionSource,
                            GaussianSourceConfig, GMMSourceConfig)
from .images import ImageSource, ImageSourceConfig

SOURCES = {
    "gaussian": (GaussianSourceConfig, DistributionSource),
    "gmm": (GMMSourceConfig, DistributionSource),
    "categorical": (CategoricalSourceConfig, DistributionSource),
    "mnist": (ImageSourceConfig, ImageSource),
    "fashion-mnist": (ImageSourceConfig, ImageSource),
    "emnist": (ImageSourceConfig, ImageSource),
    "digits": (ImageSourceConfig, ImageSource),
}
