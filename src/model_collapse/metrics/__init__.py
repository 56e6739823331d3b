"""Metric registry: name -> (implementation, requirement).

An implementation is a function(Context) -> {column: (S,)} or a class whose
instances keep state across generations (with state_dict/load_state_dict so a
resumed run continues exactly). Image metrics are named "module:attribute" and
imported on first use, so distribution runs never load torch.

The requirement lets config validation refuse a metric that cannot apply:
"1d" (1-D continuous truth), "1d-or-2d", "closed-kl" (Gaussian or categorical
family and truth), "tail", "truth" (a known true distribution), "image".
"""

import importlib

from .distribution import Context, kl, l2, nll, params, tail, wasserstein

METRICS = {
    "params": (params, None),
    "kl": (kl, "closed-kl"),
    "wasserstein": (wasserstein, "1d"),
    "l2": (l2, "1d-or-2d"),
    "tail": (tail, "tail"),
    "nll": (nll, "truth"),
    "pixels": ("images:pixels", "image"),
    "classes": ("images:classes", "image"),
    "latent_std": ("images:LatentStd", "image"),
    "classifier_matrix": ("images:ClassifierMatrix", "image"),
    "grid": ("grid:sample_grid", "image"),
}


def metric_impl(name: str):
    """The function or class registered under name (importing image metrics lazily)."""
    impl = METRICS[name][0]
    if isinstance(impl, str):
        module, attr = impl.split(":")
        impl = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    return impl


__all__ = ["METRICS", "Context", "metric_impl"]
