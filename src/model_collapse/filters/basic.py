"""The pass-through filter and the random control (keep each sample with probability p, or a
random subset as large as another filter keeps)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from ..kinds import Needs, mismatches
from ..schema import Component


class NoFilterConfig(Component):
    """Reuse every sample."""

    kind: Literal["none"] = Field("none", description="the filter: none, every sample is kept")

    def build(self, source):
        """None: the loop then skips the filter stage altogether."""
        return None


class RandomFilterConfig(Component):
    """Keep each sample independently with probability p: the control for any selective filter
    (Feng et al. 2024: selection helps only when it is better than chance). With `match: {kind: ...}`
    it keeps instead a uniformly random subset of each chain's batch exactly as large as the named
    filter keeps of that batch: random selection of the same size, in one config (p is then unused)."""

    kind: Literal["random"] = Field("random", description="the filter: random, the random-selection control")
    needs: ClassVar[Needs] = Needs(model=("items",))   # it keeps a subset of items: summaries cannot be filtered
    p: float = Field(0.5, gt=0, le=1, description="probability of keeping each sample (unused with match)")
    match: Optional[dict[str, Any]] = Field(None, description=(
        "a selective filter's config, e.g. {kind: verifier, p: 0.8}"))
    max_rounds: int = Field(10, ge=1, description="draws before giving up with a clear error")

    @field_validator("match")
    @classmethod
    def _resolve_match(cls, value):
        """Validate the matched filter's config and write out its defaults (the resolved config shows them)."""
        if value is None:
            return None
        if isinstance(value, dict) and "max_rounds" in value:
            raise ValueError("set max_rounds on the random filter itself, not on the matched one")
        return _matched_config(value).model_dump(mode="json", exclude={"max_rounds"})

    def check(self, exp) -> list[tuple[str, str]]:
        """The matched filter's own checks and needs, under filter.match."""
        if self.match is None:
            return []
        if self.p != 0.5:
            return [("filter.p", "give either p or match, not both: with match the kept share is the "
                                 "matched filter's; remove p")]
        inner = _matched_config(self.match)
        src = exp.source.declare()
        out = [(path.replace("filter.", "filter.match.", 1), m) for path, m in inner.check(exp)]
        return out + [("filter.match", m) for m in mismatches(f"filter {inner.kind} (matched by random)",
                                                              inner.needs, src, exp.model.kind,
                                                              exp.model.capabilities(src))]

    def build(self, source):
        """The filter object for a run."""
        inner = None if self.match is None else _matched_config(self.match).build(source)
        return RandomFilter(self, inner)


def _matched_config(value: dict):
    """The config object of the filter `match` names; ValueError (a validation message) if it cannot be one."""
    from ..plugins import find   # here, not at import: the registry imports this module
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise ValueError("match names a filter config with its kind, e.g. {kind: verifier, p: 0.8}")
    kind = value["kind"]
    if kind in ("none", "random"):
        raise ValueError(f"match needs a selective filter to match in size, not '{kind}'")
    cls = find("filters", kind)
    if cls is None:
        raise ValueError(f"match: unknown filter '{kind}'")
    return cls(**value)


class RandomFilter:
    """Bernoulli(p) keep mask independent of the samples, or a random subset of the matched filter's size."""

    def __init__(self, cfg: RandomFilterConfig, inner=None):
        self.cfg, self.inner = cfg, inner

    def __call__(self, samples, model, rng: np.random.Generator) -> np.ndarray:
        """Keep mask (S, n)."""
        if self.inner is None:
            return rng.random(np.shape(samples)[:2]) < self.cfg.p
        k = np.asarray(self.inner(samples, model, rng), bool).sum(axis=1)   # (S,) how many it would keep
        # A uniformly random k-subset per chain: the k smallest of n uniform keys.
        rank = np.argsort(np.argsort(rng.random(np.shape(samples)[:2]), axis=1), axis=1)
        return rank < k[:, None]

    def begin(self) -> None:
        """Pass the start of a generation on to the matched filter (dedupe forgets its earlier rounds)."""
        if hasattr(self.inner, "begin"):
            self.inner.begin()

    def state_dict(self) -> dict[str, np.ndarray]:
        """The matched filter's state (e.g. likelihood's generation-0 model); empty otherwise."""
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the matched filter's state."""
        if hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state)
