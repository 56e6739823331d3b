"""Metric registry: name -> (function(Context) -> {column: (S,)}, requirement).

The requirement names what the metric needs so config validation can refuse
a metric that cannot apply: "1d" (1-D continuous truth), "closed-kl" (Gaussian
or categorical family and truth), "truth" (any known truth), "samples"
(individual samples, not a summary, for d > 1).
"""

from .distribution import Context, kl, l2, nll, params, tail, wasserstein

METRICS = {
    "params": (params, None),
    "kl": (kl, "closed-kl"),
    "wasserstein": (wasserstein, "1d"),
    "l2": (l2, "1d-or-2d"),
    "tail": (tail, "tail"),
    "nll": (nll, "truth"),
}

__all__ = ["METRICS", "Context"]
