"""Family registry: name -> config class.

A family's config class declares the data kinds it fits and what a fitted
model can do (`data_kinds`, `capabilities()`), and `build(source, chains)`
imports the implementation only when a run starts (torch for the VAE).
"""

from .categorical import CategoricalConfig
from .diffusion_config import DiffusionConfig
from .gaussian import GaussianConfig
from .gmm import GMMConfig
from .hf_config import HFConfig
from .kde import KDEConfig
from .linreg import LinRegConfig
from .ngram import NgramConfig
from .transformer_config import TransformerConfig
from .vae_config import LabelledVAEConfig

FAMILIES = {
    "gaussian": GaussianConfig,
    "gmm": GMMConfig,
    "kde": KDEConfig,
    "categorical": CategoricalConfig,
    "linreg": LinRegConfig,
    "vae": LabelledVAEConfig,
    "ngram": NgramConfig,
    "transformer": TransformerConfig,
    "hf": HFConfig,
    "diffusion": DiffusionConfig,
}
