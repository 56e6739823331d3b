"""Data-source registry: name -> config class (which declares the source and builds it)."""

from .distributions import CategoricalSourceConfig, GaussianSourceConfig, GMMSourceConfig
from .hf_dataset import HFDatasetSourceConfig
from .images import ImageSourceConfig
from .random_gmm import RandomGMMSourceConfig
from .regression import LinRegSourceConfig
from .text import KJVSourceConfig, TextFileSourceConfig, ZipfMarkovSourceConfig
from .toys import ToySourceConfig

SOURCES = {
    "gaussian": GaussianSourceConfig,
    "gmm": GMMSourceConfig,
    "random-gmm": RandomGMMSourceConfig,
    "categorical": CategoricalSourceConfig,
    "linreg": LinRegSourceConfig,
    "mnist": ImageSourceConfig,
    "fashion-mnist": ImageSourceConfig,
    "emnist": ImageSourceConfig,
    "digits": ImageSourceConfig,
    "kjv": KJVSourceConfig,
    "text": TextFileSourceConfig,
    "zipf-markov": ZipfMarkovSourceConfig,
    "hf-dataset": HFDatasetSourceConfig,
    "toy": ToySourceConfig,
}
