"""Data-source registry: name -> (config class, constructor(cfg, chains))."""

from .distributions import (CategoricalSourceConfig, DistributionSource,
                            GaussianSourceConfig, GMMSourceConfig)

SOURCES = {
    "gaussian": (GaussianSourceConfig, DistributionSource),
    "gmm": (GMMSourceConfig, DistributionSource),
    "categorical": (CategoricalSourceConfig, DistributionSource),
}
