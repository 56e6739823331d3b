"""Metric registry: name -> Metric (implementation, needs, parameters).

An implementation is a function(Context, **params) -> {column: (S,)} or a
class built with the params whose instances keep state across generations
(with state_dict/load_state_dict so a resumed run continues exactly). It is
named "module:attribute" and imported on first use, so distribution runs
never load torch. A metric entry in a config is a name or a mapping with the
name and parameters (`{name: tail, k: 2}`).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..kinds import Needs
from .distribution import Context


class Params(BaseModel):
    """Base class of a metric's parameters: strict, like every config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DispersionParams(Params):
    """`dispersion`: the spread of the model's samples over the truth's (Qiao et al. 2025)."""

    n: Optional[int] = Field(None, ge=2, description=(
        "samples drawn from each chain's model for it (from the metric's own stream); None = the generation's "
        "own samples"))


class ModesParams(Params):
    """`modes`: mode coverage and the share of high-quality samples on a truth with known modes."""

    k: float = Field(3.0, gt=0, description="a sample within k mode sds of a mode is of high quality there")
    min_share: Optional[float] = Field(None, gt=0, le=1, description=(
        "a mode is covered when at least this share of the samples are of high quality at it; None = 1 / (4 K)"))


class SlicedParams(Params):
    """`sliced_wasserstein`: sliced W1 between the samples and the held-out true points."""

    projections: int = Field(64, ge=1, description="random unit directions (fixed across chains and generations)")


class MMDParams(Params):
    """`mmd`: squared MMD, Gaussian kernel, between samples and held-out true points."""

    n: int = Field(1000, ge=2, description="points of each side used (the cost is O(n^2))")
    bandwidth: Optional[float] = Field(None, gt=0, description="kernel sd; None = the median heuristic")


class TailParams(Params):
    """`tail`: mass beyond k true standard deviations."""

    k: float = Field(3.0, gt=0, description=(
        "tail boundary in true standard deviations (1-D: mass beyond mean +- k sd; d-dim: the chi2 radius of "
        "the same mass)"))


class ClassesParams(Params):
    """`classes`: how many samples per chain the reference classifier labels."""

    n: int = Field(10000, gt=0, description=(
        "samples per chain the reference classifier labels for the class histogram"))


class MatrixParams(Params):
    """`classifier_matrix`: labelled items per generation kept to score later classifiers."""

    subset: int = Field(2000, gt=0, description=(
        "labelled items of each generation kept to score every later generation's classifier"))


class TokenTailParams(Params):
    """`token_tail`: the rank in the real frequency table from which a token counts as tail (default V/2)."""

    r: Optional[int] = Field(None, ge=1, description=(
        "rank in the real token-frequency table from which a token counts as tail (default: half the "
        "vocabulary)"))


class PplGen0Params(Params):
    """`ppl_gen0`: histogram bins (log-spaced from 1 to max_ppl, default twice the vocabulary size)."""

    bins: int = Field(100, ge=2, description=(
        "histogram bins of the per-block perplexities under the generation-0 model (Shumailov et al.'s "
        "figure)"))
    max_ppl: Optional[float] = Field(None, gt=1, description=(
        "upper edge of the log-spaced bins (default: twice the vocabulary size)"))


class TextSamplesParams(Params):
    """`text_samples`: decoded sample blocks kept per chain, and for how many chains."""

    n: int = Field(3, ge=1, description="decoded sample blocks kept per chain each generation")
    chains: int = Field(1, ge=1, description="how many chains' samples are kept")


class FidParams(Params):
    """`fid`: samples per chain compared with as many fixed real test images (FID depends on it)."""

    n: int = Field(10000, ge=2, description=(
        "samples per chain compared with as many fixed real test images (FID depends on n)"))


class PrdcParams(Params):
    """`prdc`: samples per chain and real test images (n), nearest neighbours (k; Naeem et al. 2020: 5)."""

    n: int = Field(10000, ge=2, description="samples per chain and real test images compared")
    k: int = Field(5, ge=1, description="nearest neighbours defining each manifold's radii (Naeem et al. 2020: 5)")


class MemorisationParams(Params):
    """`memorisation`: samples per chain and real test images (n); quantile q of test-to-train distances."""

    n: int = Field(10000, ge=2, description="samples per chain and real test images compared")
    q: float = Field(0.05, gt=0, lt=1, description=(
        "quantile of test-to-train distances below which a sample counts as a copy of a training image"))


class SparsityParams(Params):
    """`latent_sparsity`: held-out real images encoded (n); Var_x of a mean code below threshold = collapsed."""

    n: int = Field(2000, ge=2, description="held-out real images encoded")
    threshold: float = Field(0.01, gt=0, description=(
        "a latent coordinate whose mean code varies less than this across images counts as collapsed"))


@dataclass(frozen=True)
class Metric:
    """A registered metric: where its code is, what it needs, what parameters it takes."""

    impl: Any                       # "module:attribute" under this package, or the object itself
    needs: Needs = Needs()
    params: type = Params
    # the held-out set it scores (ctx.reference): "" none, "shared" one (M, ...) set, "any" also per-chain
    # (S, M, ...) sets (the experiment's `reference: per-chain`)
    reference: str = ""

    def load(self):
        """The function or class (importing lazily)."""
        if not isinstance(self.impl, str):
            return self.impl
        module, attr = self.impl.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    def instantiate(self, params: dict):
        """A callable ctx -> columns with these parameters bound (a new instance for classes)."""
        impl, kw = self.load(), self.params(**params).model_dump()
        return impl(**kw) if isinstance(impl, type) else (functools.partial(impl, **kw) if kw else impl)


TRUTH_1D = Needs(kinds=("vector",), source=("truth",), dims=(1,))
METRICS = {
    "params": Metric("distribution:params"),
    "kl": Metric("distribution:kl", Needs(truth=("gaussian", "categorical"), truth_is_model=True)),
    "wasserstein": Metric("distribution:wasserstein", Needs(kinds=("vector",), truth=("gaussian", "gmm"),
                                                            dims=(1,), model=("cdf",))),
    "l2": Metric("distribution:l2", Needs(kinds=("vector",), source=("truth",), dims=(1, 2), model=("log_prob",))),
    "tail": Metric("distribution:tail", Needs(kinds=("vector",), truth=("gaussian", "gmm"),
                                              model_any=("cdf", "items")), TailParams),
    "nll": Metric("distribution:nll", Needs(model=("log_prob",), source=("truth",)), reference="any"),
    "dispersion": Metric("distribution:dispersion", Needs(kinds=("vector",), truth=("gaussian", "gmm"),
                                                          model=("items",)), DispersionParams),
    "modes": Metric("modes:modes", Needs(kinds=("vector",), source=("modes",), model=("items",)), ModesParams),
    "sliced_wasserstein": Metric("modes:sliced_wasserstein", Needs(kinds=("vector",), model=("items",)),
                                 SlicedParams, reference="any"),
    "truth_nll": Metric("modes:truth_nll", Needs(kinds=("vector",), source=("truth",), model=("items",))),
    "mmd": Metric("modes:mmd", Needs(kinds=("vector",), model=("items",)), MMDParams, reference="any"),
    "test_error": Metric("regression:test_error", Needs(kinds=("pairs",), truth=("linreg",))),
    "pixels": Metric("images:pixels", Needs(kinds=("image",))),
    "classes": Metric("images:classes", Needs(kinds=("image",), source=("reference_classifier",)), ClassesParams),
    "latent_std": Metric("images:LatentStd", Needs(kinds=("image",), model=("encode",))),
    "classifier_matrix": Metric("images:ClassifierMatrix", Needs(kinds=("image",), model=("classify",)),
                                MatrixParams),
    "grid": Metric("grid:sample_grid", Needs(kinds=("image",), model=("decode",))),
    "fid": Metric("quality:fid", Needs(kinds=("image",), source=("reference_classifier",)), FidParams),
    "prdc": Metric("quality:prdc", Needs(kinds=("image",), source=("reference_classifier",)), PrdcParams),
    "memorisation": Metric("quality:memorisation", Needs(kinds=("image",), source=("reference_classifier",)),
                           MemorisationParams),
    "latent_sparsity": Metric("quality:latent_sparsity", Needs(kinds=("image",), model=("encode",)), SparsityParams,
                              reference="shared"),
    "perplexity": Metric("text:perplexity", Needs(kinds=("text",), model=("score_text",)), reference="any"),
    "ppl_gen0": Metric("text:PplGen0", Needs(kinds=("text",), model=("score_text", "items")), PplGen0Params),
    "truth_ppl": Metric("text:truth_ppl", Needs(kinds=("text",), truth=("markov",), model=("items",))),
    "diversity": Metric("text:diversity", Needs(kinds=("text",), model=("items",))),
    "token_tail": Metric("text:token_tail", Needs(kinds=("text",), model=("items",)), TokenTailParams),
    "vocab_survival": Metric("text:vocab_survival", Needs(kinds=("text",), model=("items",))),
    "text_samples": Metric("text:text_samples", Needs(kinds=("text",), model=("items",)), TextSamplesParams),
}


def metric_entry(entry) -> tuple[str, dict]:
    """(name, params) of a config's metric entry: a name, or a mapping with `name` and parameters."""
    if isinstance(entry, str):
        return entry, {}
    params = dict(entry)
    return str(params.pop("name", "")), params


__all__ = ["METRICS", "Context", "Metric", "Needs", "Params", "metric_entry"]
