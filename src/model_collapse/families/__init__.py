"""Family registry: name -> (config class, constructor(cfg, source, chains), data kind)."""

from .categorical import CategoricalConfig, CategoricalFamily
from .gaussian import GaussianConfig, GaussianFamily
from .kde import KDEConfig, KDEFamily


def _gmm(cfg, source, chains):
    from .gmm import GMMFamily  # compiled kernels load lazily
    return GMMFamily(cfg, source.dim, chains)


def _gmm_config():
    from .gmm import GMMConfig
    return GMMConfig


def _vae(cfg, source, chains):
    from .labelled import LabelledVAE  # torch loads only when an image family is used
    return LabelledVAE(cfg, source, chains)


def _vae_config():
    from .labelled import LabelledVAEConfig
    return LabelledVAEConfig


FAMILIES = {
    "gaussian": (GaussianConfig, lambda cfg, src, s: GaussianFamily(cfg, src.dim, s), "vector"),
    "gmm": (_gmm_config, _gmm, "vector"),
    "kde": (KDEConfig, lambda cfg, src, s: KDEFamily(cfg, src.dim, s), "vector"),
    "categorical": (CategoricalConfig, lambda cfg, src, s: CategoricalFamily(cfg, src.k, s), "category"),
    "vae": (_vae_config, _vae, "image"),
}


def family_config(kind: str):
    """The config class of a registered family."""
    cls = FAMILIES[kind][0]
    return cls if isinstance(cls, type) else cls()
