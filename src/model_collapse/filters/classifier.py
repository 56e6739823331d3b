"""Filters that judge image samples with the source's reference classifier.

`confidence` keeps samples the classifier is sure about; `verifier` is the noisy
oracle of Feng et al. (2024, "Beyond Model Collapse: Scaling Up with Synthesized
Data Requires Verification"): it checks each sample's label against the class
the reference classifier sees in it. The reference classifier is trained once on
the real data (`source.reference_classifier()`, cached on disk) and never changes,
so both filters are stateless and a resumed run filters exactly as before.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field, model_validator

from ..kinds import Needs
from ..schema import Component

DEFAULT_Q = 0.5   # share kept when neither c nor q is given: fills a generation whatever the generator draws


def reference_predictions(source, samples) -> tuple[np.ndarray, np.ndarray]:
    """Reference-classifier labels (S, n) and max-probabilities (S, n) of image samples (S, n, P + 1).

    All chains go through the classifier in one call (its inference is batched anyway).
    """
    x = np.asarray(samples)
    s, n = x.shape[:2]
    labels, probs = source.reference_classifier().predict(x[:, :, :-1].reshape(s * n, -1))
    return labels.reshape(s, n), probs.max(axis=1).reshape(s, n)


def top_share(score: np.ndarray, q: float) -> np.ndarray:
    """Keep mask (S, n) of the ceil(q n) highest scores in each row; ties go to the earlier item."""
    s, n = score.shape
    k = min(n, max(1, math.ceil(q * n - 1e-9)))
    order = np.argsort(-score, axis=1, kind="stable")
    keep = np.zeros((s, n), bool)
    np.put_along_axis(keep, order[:, :k], True, axis=1)
    return keep


class ConfidenceFilterConfig(Component):
    """Keep image samples the reference classifier labels with max-probability >= c,
    or (q) the top q share of each chain's batch by that probability. Give c or q, not both;
    with neither, q = 0.5 (a threshold c can starve a poor generator: see max_rounds)."""

    kind: Literal["confidence"] = Field("confidence", description=(
        "the filter: confidence, keep image samples by the reference classifier's max-probability"))
    needs: ClassVar[Needs] = Needs(kinds=("image",), model=("items",), source=("reference_classifier",))
    c: Optional[float] = Field(None, ge=0, le=1, description=(
        "keep samples whose reference-classifier max-probability is at least c (give c or q)"))
    q: Optional[float] = Field(None, gt=0, le=1, description=(
        "keep the top q share of each chain's batch by max-probability (give c or q; neither: q = 0.5)"))
    max_rounds: int = Field(10, ge=1, description=(
        "draws before giving up with a clear error (a threshold c can starve a poor generator)"))

    @model_validator(mode="before")
    @classmethod
    def _default_q(cls, data):
        """Neither c nor q given: the top half, q = 0.5 (written out in the resolved config)."""
        if isinstance(data, dict) and data.get("c") is None and data.get("q") is None:
            data = {**data, "q": DEFAULT_Q}
        return data

    def check(self, exp) -> list[tuple[str, str]]:
        """Exactly one of c and q."""
        if self.c is not None and self.q is not None:
            return [("filter.q", "give either c (a confidence threshold) or q (a share to keep), not both; "
                                 "remove one of them")]
        return []

    def build(self, source):
        """The filter object for a run."""
        return ConfidenceFilter(self, source)


class ConfidenceFilter:
    """Max-probability of the reference classifier against a threshold, or the top share per chain."""

    def __init__(self, cfg: ConfidenceFilterConfig, source):
        self.cfg, self.source = cfg, source

    def __call__(self, samples, model, rng: np.random.Generator) -> np.ndarray:
        """Keep mask (S, n); deterministic (the rng is not used)."""
        _, conf = reference_predictions(self.source, samples)
        if self.cfg.q is not None:
            return top_share(conf, self.cfg.q)
        return conf >= self.cfg.c


class VerifierFilterConfig(Component):
    """The noisy verifier of Feng et al. (2024): a sample whose label (last column) equals the
    reference classifier's label is kept with probability p, one whose label differs with
    probability 1 - p. p = 1 keeps exactly the agreeing samples, p = 0 exactly the others,
    p = 0.5 is the random control at rate 0.5."""

    kind: Literal["verifier"] = Field("verifier", description=(
        "the filter: verifier, Feng et al. 2024's noisy verifier of sample labels against the reference classifier"))
    # The label must come from the generator side (its own classifier, labels: own): labels
    # written by the reference classifier itself would always agree.
    needs: ClassVar[Needs] = Needs(kinds=("image",), model=("items", "classify"), source=("reference_classifier",))
    p: float = Field(0.8, ge=0, le=1, description=(
        "Default 0.8: a good but imperfect verifier, and one that fills a generation from any generator (at p "
        "= 1 a generator whose labels never agree with the reference starves the stage)."))
    max_rounds: int = Field(10, ge=1, description="draws before giving up with a clear error")

    def build(self, source):
        """The filter object for a run."""
        return VerifierFilter(self, source)


class VerifierFilter:
    """Bernoulli(p) on agreement, Bernoulli(1 - p) on disagreement, one uniform draw per sample."""

    def __init__(self, cfg: VerifierFilterConfig, source):
        self.cfg, self.source = cfg, source

    def __call__(self, samples, model, rng: np.random.Generator) -> np.ndarray:
        """Keep mask (S, n). Unlabelled items (label 255) never match a class: they count as disagreeing."""
        truth, _ = reference_predictions(self.source, samples)
        agree = np.asarray(samples)[:, :, -1].astype(np.int64) == truth
        u = rng.random(agree.shape)
        # u < 1 always holds and u < 0 never does, so p = 1 and p = 0 are exact.
        return np.where(agree, u < self.cfg.p, u < 1 - self.cfg.p)
